"""The dashboard's delivery failure rate: attempts and failures over the last hour, in slices."""

from __future__ import annotations

import pytest

from service.breaker import Outcomes

T0 = 1_767_225_600.0  # a slice boundary


@pytest.mark.parametrize(
    ("recorded", "at", "expected"),
    [
        ([], T0, (0, 0)),  # nothing yet
        ([(T0, False), (T0, True), (T0 + 59, True)], T0 + 60, (3, 2)),  # all within the hour
        ([(T0, True), (T0 + 60, False)], T0 + 3600, (1, 0)),  # the first slice has left
        ([(T0, True), (T0 + 60, False)], T0 + 3599, (2, 1)),  # still within the hour
        ([(T0, True)], T0 + 7 * 86400, (0, 0)),  # long after: nothing left
        ([(T0 + 60, True), (T0, False)], T0 + 60, (2, 1)),  # a clock that stepped back
    ],
)
def test_counts_cover_the_last_hour(
    recorded: list[tuple[float, bool]], at: float, expected: tuple[int, int]
) -> None:
    """(attempts, failures) counts what was recorded in the hour's 60 one-minute slices up to
    `at`, the slice of `at` included."""
    window = Outcomes(3600.0, 60)
    for now, failed in recorded:
        window.record(now, failed)
    assert window.counts(at) == expected


def test_memory_stays_within_the_slices() -> None:
    """Recording for days keeps at most one bucket per slice of the window."""
    window = Outcomes(3600.0, 60)
    for minute in range(3 * 24 * 60):
        window.record(T0 + minute * 60.0, minute % 2 == 0)
    assert len(window._buckets) <= 60
    assert window.counts(T0 + (3 * 24 * 60 - 1) * 60.0) == (60, 30)
