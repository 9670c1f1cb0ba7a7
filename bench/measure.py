"""Pure arithmetic of the benchmark: percentiles, lateness estimates, the printed table."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


def percentile(values: Sequence[float], q: float) -> float | None:
    """The `q`-th percentile (0-100) by linear interpolation between ranks; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float]) -> dict[str, Any]:
    """n, mean, p50, p90, p99 and max of `values` (None when there are none)."""
    return {
        "n": len(values),
        "mean": sum(values) / len(values) if values else None,
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
    }


@dataclass(frozen=True)
class Reading:
    """One job's poll counter, read by a GET that was sent at `sent` and answered at `received`.

    The simulator read the counter somewhere in between; `at` is the midpoint."""

    polls: int
    sent: float
    received: float

    @property
    def at(self) -> float:
        return (self.sent + self.received) / 2


def count_lateness(
    start: dict[str, Reading], end: dict[str, Reading], interval_s: float
) -> dict[str, Any]:
    """Lateness from poll counts: each job's mean gap over the window, less the interval.

    Per job, `(end.at - start.at) / polls` is its mean gap between polls. The estimate is
    quantised: a job polled k or k+1 times in the window reads as window/k or window/(k+1), so
    one job's figure is only good to about `interval / polls in the window` (given as
    `resolution_s`). The mean over all jobs (total time over total polls) is not quantised.
    """
    per_job: list[float] = []
    span_total = 0.0
    polls_total = 0
    for job_id, first in start.items():
        last = end.get(job_id)
        if last is None:
            continue
        polls = last.polls - first.polls
        span = last.at - first.at
        if polls <= 0 or span <= 0:
            continue
        per_job.append(span / polls - interval_s)
        span_total += span
        polls_total += polls
    mean_polls = polls_total / len(per_job) if per_job else 0.0
    return {
        "jobs": len(per_job),
        "mean_s": span_total / polls_total - interval_s if polls_total else None,
        "per_job_s": summary(per_job),
        "resolution_s": interval_s / mean_polls if mean_polls else None,
    }


def window_rate(count_delta: float, seconds: float) -> float:
    return count_delta / seconds if seconds > 0 else 0.0


# The printed table.


def fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f} ms"


def fmt_s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:,.2f} s"


def fmt_num(value: float | None, digits: int = 0, unit: str = "") -> str:
    if value is None:
        return "-"
    text = f"{value:,.{digits}f}"
    return f"{text} {unit}" if unit else text


def fmt_mib(size: float | None) -> str:
    return "-" if size is None else f"{size / 2**20:,.1f} MiB"


def fmt_kib(size: float | None) -> str:
    return "-" if size is None else f"{size / 1024:,.1f} KiB"


Row = tuple[str, str, str]


def table(title: str, rows: Iterable[Row]) -> str:
    """A plain-text table: metric, value, and the target with its verdict (may be empty)."""
    rows = list(rows)
    head: Row = ("metric", "value", "target")
    width = [max(len(row[i]) for row in [head, *rows]) for i in range(3)]
    line = "  ".join("-" * w for w in width)
    out = [title, line]
    out.append(f"{head[0]:<{width[0]}}  {head[1]:>{width[1]}}  {head[2]}")
    out.append(line)
    out.extend(f"{a:<{width[0]}}  {b:>{width[1]}}  {c}".rstrip() for a, b, c in rows)
    out.append(line)
    return "\n".join(out)


def verdict(ok: bool | None, target: str) -> str:
    if ok is None:
        return f"{target} (not measured)"
    return f"{target}  {'PASS' if ok else 'FAIL'}"


def grid(title: str, head: Sequence[str], rows: Iterable[tuple[str, Sequence[str]]]) -> str:
    """A plain-text table of several columns: a label, then a value per column. A row without
    values is a section heading."""
    rows = list(rows)
    columns = len(head)
    cells = [[label, *values] if values else [label] for label, values in rows]
    width = [
        max(len(row[i]) for row in [list(head), *cells] if i < len(row)) for i in range(columns)
    ]
    # A heading may be wider than the first column: it is not counted.
    width[0] = max(len(row[0]) for row in [list(head), *cells] if len(row) > 1)
    line = "  ".join("-" * w for w in width)

    def render(row: Sequence[str]) -> str:
        if len(row) == 1:
            return row[0]
        parts = [f"{row[0]:<{width[0]}}", *(f"{v:>{width[i + 1]}}" for i, v in enumerate(row[1:]))]
        return "  ".join(parts).rstrip()

    return "\n".join([title, line, render(head), line, *map(render, cells), line])
