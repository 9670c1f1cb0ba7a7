"""The list page's charts (`service/ui/trends.py`): where each bar goes and what each chart says,
from a day of buckets."""

from __future__ import annotations

import pytest

from service.store.base import OutcomeBucket
from service.ui import trends
from service.ui.trends import BOTTOM, TOP

MIDNIGHT = 1_767_225_600.0  # 2026-01-01T00:00:00Z
HOUR = 3600.0
PLOT = BOTTOM - TOP


def day(**hours: OutcomeBucket) -> list[OutcomeBucket]:
    """24 empty hours from midnight, but those given (`h3=...`: the bucket of 03:00)."""
    return [
        hours.get(f"h{i}", OutcomeBucket(MIDNIGHT + i * HOUR, 0, 0, 0, 0, 0, None, None))
        for i in range(24)
    ]


def bucket(
    hour: int,
    succeeded: int,
    failed: int,
    timed_out: int,
    delivered: int,
    undelivered: int,
    *,
    p50: float | None = None,
    p90: float | None = None,
) -> OutcomeBucket:
    start = MIDNIGHT + hour * HOUR
    return OutcomeBucket(start, succeeded, failed, timed_out, delivered, undelivered, p50, p90)


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (0.0123, "12 ms"),
        (0.9994, "999 ms"),
        (1.0, "1.0 s"),
        (59.94, "59.9 s"),
        (90.0, "1 min 30 s"),
        (3599.4, "59 min 59 s"),
        (7800.0, "2 h 10 min"),
    ],
)
def test_durations_in_words(seconds: float, words: str) -> None:
    """Milliseconds under a second, tenths of seconds under a minute, then minutes and hours."""
    assert trends.duration(seconds) == words


def test_stacked_bars_fill_the_plot_at_the_top_of_the_scale() -> None:
    """A column whose total is the scale's top (10: the nice ceiling of 10) fills the plot,
    each outcome's bar as tall as its share, in the order succeeded, failed, timed out, from
    the axis up; an empty column has no bar."""
    found = trends.trends(day(h3=bucket(3, 5, 3, 2, 0, 0)))
    jobs = found.charts[0]

    assert [(bar.key, bar.height) for bar in jobs.bars] == [
        ("succeeded", pytest.approx(PLOT * 0.5)),
        ("failed", pytest.approx(PLOT * 0.3)),
        ("timed-out", pytest.approx(PLOT * 0.2)),
    ]
    assert jobs.bars[0].y + jobs.bars[0].height == pytest.approx(BOTTOM)
    assert jobs.bars[-1].y == pytest.approx(TOP)
    assert len({bar.x for bar in jobs.bars}) == 1
    assert [bar.tip for bar in jobs.bars] == [
        "03:00: 5 succeeded",
        "03:00: 3 failed",
        "03:00: 2 timed out",
    ]
    assert [mark.label for mark in jobs.scale] == ["0", "5", "10"]
    assert jobs.summary == (
        "In the last 24 hours: 5 succeeded, 3 failed, 2 timed out. The busiest hour, 03:00, had 10."
    )
    assert jobs.empty is None


@pytest.mark.parametrize(("most", "top"), [(1, 1), (3, 5), (7, 10), (11, 20), (2_345, 5_000)])
def test_the_scale_ends_at_a_round_number(most: int, top: int) -> None:
    """The count scale's top is the least of 1, 2, 5, 10, 20, 50, ... that holds the busiest
    hour."""
    jobs = trends.trends(day(h0=bucket(0, most, 0, 0, 0, 0))).charts[0]
    assert jobs.scale[-1].label == f"{top:,}"


def test_columns_are_hours_in_order_with_every_sixth_labelled() -> None:
    """Column i is the i-th hour, left to right; 00:00, 06:00, 12:00 and 18:00 are labelled."""
    found = trends.trends(day(h0=bucket(0, 1, 0, 0, 1, 0), h23=bucket(23, 1, 0, 0, 0, 1)))
    jobs, webhooks = found.charts[0], found.charts[1]

    assert jobs.bars[0].x < jobs.bars[1].x
    assert [mark.label for mark in jobs.hours] == ["00:00", "06:00", "12:00", "18:00"]
    assert [(bar.key, bar.tip) for bar in webhooks.bars] == [
        ("delivered", "00:00: 1 delivered"),
        ("undelivered", "23:00: 1 failed"),
    ]
    assert [row.label for row in found.rows][:2] == ["00:00", "01:00"]
    assert (found.totals.succeeded, found.totals.delivered, found.totals.undelivered) == (2, 1, 1)


def test_latency_on_a_log_scale_between_round_marks() -> None:
    """p90 as a wide bar, p50 as a narrow one in front; the scale runs from the mark below the
    least time to the mark above the greatest, so that 10 ms and 20 min both show."""
    found = trends.trends(
        day(h1=bucket(1, 1, 0, 0, 1, 0, p50=0.05, p90=0.2),
            h2=bucket(2, 1, 0, 0, 1, 0, p50=30.0, p90=1200.0))
    )  # fmt: skip
    latency = found.charts[2]

    assert [mark.label for mark in latency.scale] == ["10 ms", "1 s", "1 min", "1 h"]
    p90_early, p50_early, p90_late, _ = latency.bars
    assert (p90_early.key, p50_early.key) == ("p90", "p50")
    assert p50_early.width < p90_early.width
    assert p50_early.height < p90_early.height
    assert p90_late.height > p90_early.height
    assert p90_late.tip == "02:00: p90 20 min 0 s"
    assert latency.summary.endswith("The slowest hour, 02:00: p90 20 min 0 s.")


def test_a_latency_on_a_mark_still_shows() -> None:
    """Times exactly on one mark get the mark below as the bottom, and a visible bar."""
    latency = trends.trends(day(h5=bucket(5, 1, 0, 0, 1, 0, p50=1.0, p90=1.0))).charts[2]

    assert [mark.label for mark in latency.scale] == ["100 ms", "1 s"]
    assert all(bar.height > 0 for bar in latency.bars)


def test_an_empty_day_says_so_for_each_chart() -> None:
    """No ending: every chart says so, with no bar."""
    found = trends.trends(day())

    assert [chart.empty for chart in found.charts] == [
        "No job ended in the last 24 hours.",
        "No webhook ended in the last 24 hours.",
        "No webhook was delivered in the last 24 hours.",
    ]
    assert all(chart.bars == () for chart in found.charts)


def test_failed_webhooks_alone_leave_no_latency() -> None:
    """Webhooks that all failed: counted in their chart, and no time to deliver."""
    found = trends.trends(day(h4=bucket(4, 1, 0, 0, 0, 1)))
    assert found.charts[1].empty is None
    assert found.charts[2].empty == "No webhook was delivered in the last 24 hours."
