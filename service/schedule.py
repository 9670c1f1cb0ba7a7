"""Pure timing rules: when to poll next, how to back off, when to retry a delivery.

Randomness comes in as an argument (`rand`, uniform in [0, 1)) so every path is deterministic
under test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC
from email.utils import parsedate_to_datetime


def jittered(base: float, fraction: float, rand: float) -> float:
    """`base` moved by up to ±`fraction` of itself: `rand` 0 is the low end, 0.5 the middle."""
    return base * (1.0 + fraction * (2.0 * rand - 1.0))


def backoff(failures: int, base: float, cap: float) -> float:
    """Exponential wait after `failures` consecutive failures (1 → `base`), at most `cap`."""
    if failures <= 0:
        return 0.0
    # 2**1024 overflows a float; any exponent past 64 is far beyond every cap anyway.
    exponent = min(failures - 1, 64)
    return min(cap, base * math.ldexp(1.0, exponent))


def retry_after(header: str | None, now: float, cap: float) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP date), within [0, cap].

    None when the header is absent or unreadable, so the caller falls back to its own backoff.
    """
    if header is None:
        return None
    value = header.strip()
    # ASCII only: `str.isdigit` also takes digits `float` refuses, such as "²".
    if value.isascii() and value.isdigit():
        return min(float(value), cap)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: a number no date can hold
        return None
    if when.tzinfo is None:  # asctime's form, or -0000: an HTTP date is in UTC whatever it says
        when = when.replace(tzinfo=UTC)
    return max(0.0, min(when.timestamp() - now, cap))


def next_delivery_delay(
    attempts_made: int, schedule: Sequence[float], jitter: float, rand: float
) -> float | None:
    """The wait before the next attempt once `attempts_made` attempts failed, or None when the
    schedule is exhausted. The first attempt is immediate and not part of the schedule."""
    if attempts_made < 1 or attempts_made > len(schedule):
        return None
    return jittered(schedule[attempts_made - 1], jitter, rand)
