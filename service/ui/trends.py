"""The list page's charts of the last day, drawn by the bridge as inline SVG with
`templates/_trends.html` (no script, nothing loaded): what this module computes is where each
bar goes and what each chart says in words, for screen readers as much as for the eye.

Three small charts, one column per hour: jobs that ended (succeeded, failed, timed out), webhooks
that ended (delivered, failed) and the time to deliver (p50 and p90, on a logarithmic scale:
a few retried hours would flatten a linear one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from service.store.base import OutcomeBucket

# The SVG's own units; the page scales it to the width it has.
WIDTH, HEIGHT = 360.0, 150.0
LEFT, RIGHT, TOP, BOTTOM = 56.0, 338.0, 10.0, 124.0
LABEL_Y = 144.0  # the baseline of the hours' labels
BAR = 0.72  # of a column's width
# Where the time-to-deliver scale may put its marks: about a decade apart, in units people read.
LATENCY_MARKS = {
    0.001: "1 ms", 0.01: "10 ms", 0.1: "100 ms", 1.0: "1 s", 10.0: "10 s", 60.0: "1 min",
    600.0: "10 min", 3600.0: "1 h", 36000.0: "10 h", 86400.0: "1 day",
}  # fmt: skip
LATENCY_TICKS = tuple(LATENCY_MARKS)


# Where the template draws a chart's frame and labels.
GEOMETRY = {"width": WIDTH, "height": HEIGHT, "left": LEFT, "right": RIGHT, "label_y": LABEL_Y}


@dataclass(frozen=True, slots=True)
class Series:
    key: str  # the CSS class of its colour: `s-{key}`
    label: str  # what its bars count, in words
    values: tuple[float | None, ...]  # one per column


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    key: str
    tip: str  # the bar's own words (a tooltip)


@dataclass(frozen=True, slots=True)
class Mark:
    at: float  # x for a column's label, y for a scale's
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    id: str
    title: str
    summary: str  # what the chart shows, in a sentence (its SVG's description)
    series: tuple[Series, ...]
    bars: tuple[Bar, ...]
    scale: tuple[Mark, ...]
    hours: tuple[Mark, ...]
    empty: str | None  # said instead of the chart when there is nothing to draw


@dataclass(frozen=True, slots=True)
class Row:
    """One hour's figures, for the table that repeats the charts in numbers."""

    label: str
    start: float
    bucket: OutcomeBucket


@dataclass(frozen=True, slots=True)
class Trends:
    charts: tuple[Chart, Chart, Chart]
    rows: tuple[Row, ...]
    totals: OutcomeBucket  # every count summed; no percentiles (those of hours do not add up)


def number(value: float) -> str:
    """A count with its thousands apart: `12,345`."""
    return f"{value:,.0f}"


def hour_label(start: float) -> str:
    return datetime.fromtimestamp(start, UTC).strftime("%H:00")


def duration(seconds: float) -> str:
    """A duration as people read it: `850 ms`, `12.3 s`, `4 min 5 s`, `2 h 10 min`."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


# The counts of a bucket: each is charted, and they add up over the day.
COUNTS = ("succeeded", "failed", "timed_out", "delivered", "undelivered")


def trends(buckets: Sequence[OutcomeBucket]) -> Trends:
    labels = [hour_label(b.start) for b in buckets]
    hourly = {name: tuple(float(getattr(b, name)) for b in buckets) for name in COUNTS}
    totals = OutcomeBucket(
        start=buckets[0].start if buckets else 0.0,
        **{name: sum(getattr(b, name) for b in buckets) for name in COUNTS},
        latency_p50_s=None,
        latency_p90_s=None,
    )
    jobs = stacked(
        "trend-jobs", "Jobs that ended, per hour", labels,
        (Series("succeeded", "succeeded", hourly["succeeded"]),
         Series("failed", "failed", hourly["failed"]),
         Series("timed-out", "timed out", hourly["timed_out"])),
        "No job ended in the last 24 hours.",
    )  # fmt: skip
    webhooks = stacked(
        "trend-webhooks", "Webhooks that ended, per hour", labels,
        (Series("delivered", "delivered", hourly["delivered"]),
         Series("undelivered", "failed", hourly["undelivered"])),
        "No webhook ended in the last 24 hours.",
    )  # fmt: skip
    latency = latencies(
        "trend-latency", "Time to deliver, per hour", labels,
        tuple(b.latency_p50_s for b in buckets), tuple(b.latency_p90_s for b in buckets),
    )  # fmt: skip
    rows = tuple(Row(label, b.start, b) for label, b in zip(labels, buckets, strict=True))
    return Trends((jobs, webhooks, latency), rows, totals)


def _column(index: int, count: int) -> tuple[float, float]:
    """The x and width of the bar of column `index`."""
    step = (RIGHT - LEFT) / count
    return LEFT + index * step + step * (1 - BAR) / 2, step * BAR


def _hours(labels: Sequence[str]) -> tuple[Mark, ...]:
    """Every sixth hour's label, under the middle of its column."""
    step = (RIGHT - LEFT) / max(1, len(labels))
    return tuple(
        Mark(round(LEFT + (i + 0.5) * step, 2), label)
        for i, label in enumerate(labels)
        if label[:2] in ("00", "06", "12", "18")
    )


def _nice_ceiling(value: float) -> float:
    """The least of 1, 2, 5, 10, 20, 50, ... that is at least `value`."""
    if value <= 1:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= value)


def stacked(
    chart_id: str, title: str, labels: Sequence[str], series: Sequence[Series], empty: str
) -> Chart:
    """Each column's values stacked from the axis up, in the order of `series`."""
    totals = [sum(s.values[i] or 0.0 for s in series) for i in range(len(labels))]
    top = _nice_ceiling(max(totals, default=0.0))
    height = BOTTOM - TOP
    bars = []
    for i, label in enumerate(labels):
        x, width = _column(i, len(labels))
        base = BOTTOM
        for s in series:
            value = s.values[i] or 0.0
            if value <= 0:
                continue
            tall = value / top * height
            base -= tall
            tip = f"{label}: {number(value)} {s.label}"
            box = (round(x, 2), round(base, 2), round(width, 2), round(tall, 2))
            bars.append(Bar(*box, s.key, tip))
    scale = [Mark(BOTTOM, "0"), Mark(TOP, number(top))]
    if top >= 2 and top % 2 == 0:
        scale.insert(1, Mark(round(TOP + height / 2, 2), number(top / 2)))
    sums = ", ".join(f"{number(sum(v or 0.0 for v in s.values))} {s.label}" for s in series)
    busiest = max(range(len(totals)), key=lambda i: totals[i], default=None)
    summary = f"In the last 24 hours: {sums}."
    if busiest is not None and totals[busiest] > 0:
        summary += f" The busiest hour, {labels[busiest]}, had {number(totals[busiest])}."
    return Chart(
        chart_id, title, summary, tuple(series), tuple(bars), tuple(scale), _hours(labels),
        None if any(totals) else empty,
    )  # fmt: skip


def _latency_range(low: float, high: float) -> tuple[float, float]:
    """The marks of `LATENCY_TICKS` around `low` and `high`: never the same one twice."""
    ticks = LATENCY_TICKS
    bottom = max((t for t in ticks if t <= low), default=ticks[0])
    top = min((t for t in ticks if t >= high), default=ticks[-1])
    if top <= bottom:
        index = ticks.index(bottom)
        bottom, top = (ticks[index - 1], bottom) if index > 0 else (bottom, ticks[index + 1])
    return bottom, top


def latencies(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    p50: Sequence[float | None],
    p90: Sequence[float | None],
) -> Chart:
    """Per column, the p90 as a wide bar and the p50 as a narrow one in front of it, on a
    logarithmic scale from the mark below the least p50 to the mark above the greatest p90."""
    series = (Series("p90", "p90", tuple(p90)), Series("p50", "p50 (median)", tuple(p50)))
    known = [v for v in (*p50, *p90) if v is not None]
    if not known:
        return Chart(
            chart_id, title, "No webhook was delivered in the last 24 hours.", series, (), (),
            _hours(labels), "No webhook was delivered in the last 24 hours.",
        )  # fmt: skip
    bottom, top = _latency_range(min(known), max(known))
    span = math.log10(top) - math.log10(bottom)

    def y(value: float) -> float:
        clamped = min(max(value, bottom), top)
        return BOTTOM - (math.log10(clamped) - math.log10(bottom)) / span * (BOTTOM - TOP)

    bars = []
    for i, label in enumerate(labels):
        x, width = _column(i, len(labels))
        for s, narrow in ((series[0], 0.0), (series[1], width * 0.25)):
            value = s.values[i]
            if value is None:
                continue
            # At least a sliver, so that an hour at the bottom mark still shows.
            top_y = min(y(value), BOTTOM - 1.5)
            tip = f"{label}: {s.label} {duration(value)}"
            bars.append(
                Bar(round(x + narrow, 2), round(top_y, 2), round(width - 2 * narrow, 2),
                    round(BOTTOM - top_y, 2), s.key, tip)
            )  # fmt: skip
    marks = [t for t in LATENCY_TICKS if bottom <= t <= top]
    if len(marks) > 4:  # every other one, the top one always
        marks = marks[::-1][::2][::-1]
    scale = tuple(Mark(round(y(t), 2), LATENCY_MARKS[t]) for t in marks)
    worst = max((i for i, v in enumerate(p90) if v is not None), key=lambda i: p90[i] or 0.0)
    summary = (
        f"Time from a job's end to its webhook's acceptance, per hour. The slowest hour, "
        f"{labels[worst]}: p90 {duration(p90[worst] or 0.0)}."
    )
    return Chart(chart_id, title, summary, series, tuple(bars), scale, _hours(labels), None)
