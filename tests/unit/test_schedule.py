"""The pure timing rules, as tables."""

from __future__ import annotations

import pytest

from service import schedule

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z


@pytest.mark.parametrize(
    ("base", "fraction", "rand", "expected"),
    [
        (2.5, 0.1, 0.5, 2.5),  # the middle of the range is the base
        (2.5, 0.1, 0.0, 2.25),  # rand 0 is the low end: -10 %
        (2.5, 0.1, 1.0, 2.75),  # rand 1 (exclusive in practice) is the high end: +10 %
        (300.0, 0.2, 0.25, 270.0),  # a quarter of the way: -10 % of ±20 %
        (5.0, 0.0, 0.9, 5.0),  # no jitter configured: exactly the base
    ],
)
def test_jittered(base: float, fraction: float, rand: float, expected: float) -> None:
    """Jitter moves the base by at most ±fraction, chosen by the random number given."""
    assert schedule.jittered(base, fraction, rand) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("failures", "expected"),
    [
        (0, 0.0),  # no failure, no wait
        (1, 2.5),  # the first failure waits one interval
        (2, 5.0),  # then doubles
        (3, 10.0),
        (5, 40.0),
        (6, 60.0),  # 80 is capped at 60
        (10_000, 60.0),  # huge counts neither overflow nor exceed the cap
    ],
)
def test_backoff(failures: int, expected: float) -> None:
    """Exponential backoff doubles from the base and stays under the cap."""
    assert schedule.backoff(failures, base=2.5, cap=60.0) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),  # no header: the caller uses its own backoff
        ("7", 7.0),  # delta-seconds
        (" 7 ", 7.0),  # surrounding whitespace is tolerated
        ("120", 60.0),  # capped
        ("0", 0.0),  # zero is a valid answer
        ("Thu, 01 Jan 2026 00:00:30 GMT", 30.0),  # an HTTP date 30 s ahead
        ("Wed, 31 Dec 2025 23:59:00 GMT", 0.0),  # a date in the past: no wait
        # The obsolete forms a recipient must still read (RFC 9110, 5.6.7), UTC without a zone.
        ("Thursday, 01-Jan-26 00:00:30 GMT", 30.0),  # RFC 850
        ("Thu Jan  1 00:00:30 2026", 30.0),  # asctime
        ("Thu, 01 Jan 2026 00:00:30 -0000", 30.0),  # a zone of -0000: UTC
        ("soon", None),  # unreadable: ignored
        ("-5", None),  # negative numbers are not delta-seconds
        ("²", None),  # a digit to str.isdigit, not a number of seconds
        ("Sun, 06 Nov 99999999999999999999 08:49:37 GMT", None),  # no year a date can have
        ("Sun, 06 Nov 1994 08:49:37 +99999999999999999999", None),  # nor such an offset
    ],
)
def test_retry_after(header: str | None, expected: float | None) -> None:
    """Retry-After is read as seconds or as a date, and capped."""
    assert schedule.retry_after(header, NOW, cap=60.0) == expected


SCHEDULE = (5.0, 300.0, 1800.0)


@pytest.mark.parametrize(
    ("attempts_made", "rand", "expected"),
    [
        (1, 0.5, 5.0),  # after the first (immediate) attempt: the first wait
        (2, 0.5, 300.0),
        (3, 0.5, 1800.0),  # the last wait of the schedule
        (4, 0.5, None),  # the schedule is exhausted: no more attempts
        (1, 0.0, 4.0),  # jittered down by 20 %
        (3, 1.0, 2160.0),  # jittered up by 20 %
        (0, 0.5, None),  # nonsense input yields no retry rather than a crash
    ],
)
def test_next_delivery_delay(attempts_made: int, rand: float, expected: float | None) -> None:
    """Retries follow the configured schedule, jittered, and end when it runs out."""
    got = schedule.next_delivery_delay(attempts_made, SCHEDULE, jitter=0.2, rand=rand)
    assert got == (None if expected is None else pytest.approx(expected))
