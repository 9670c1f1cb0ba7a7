"""The token bucket and the fair, capped admission of due work, on a fake clock."""

from __future__ import annotations

import pytest

from service.clock import FakeClock
from service.throttle import Throttle, TokenBucket, spread


@pytest.mark.parametrize(
    ("rate", "burst", "takes_at", "expected"),
    [
        # A full bucket gives its burst at once, then nothing until a token accrues.
        (10.0, 3, [0, 0, 0, 0], [True, True, True, False]),
        # One token every 0.1 s at 10/s.
        (10.0, 1, [0, 0.05, 0.1, 0.15, 0.2], [True, False, True, False, True]),
        # A long quiet spell refills only up to the burst.
        (10.0, 2, [0, 0, 100, 100, 100], [True, True, True, True, False]),
        # Rate 0 is no cap.
        (0.0, 1, [0, 0, 0, 0], [True, True, True, True]),
        # A clock that steps back neither adds nor takes tokens.
        (1.0, 1, [10, 5, 11], [True, False, True]),
    ],
)
def test_bucket_takes(rate: float, burst: int, takes_at: list[float], expected: list[bool]) -> None:
    """Each take succeeds exactly when a whole token is there."""
    bucket = TokenBucket(rate, burst, now=0.0)
    assert [bucket.take(at) for at in takes_at] == expected


@pytest.mark.parametrize(
    ("rate", "burst", "taken", "now", "ready_at"),
    [
        (10.0, 1, 1, 0.0, 0.1),  # empty: the next token in 1/rate
        (10.0, 1, 1, 0.04, 0.1),  # part accrued: the rest of it
        (4.0, 2, 1, 0.0, 0.0),  # one left: now
        (0.0, 1, 5, 0.0, 0.0),  # no cap: always now
    ],
)
def test_bucket_ready_at(rate: float, burst: int, taken: int, now: float, ready_at: float) -> None:
    """ready_at is when the next whole token is there, never before now."""
    bucket = TokenBucket(rate, burst, now=0.0)
    for _ in range(taken):
        bucket.take(0.0)
    assert bucket.ready_at(now) == pytest.approx(ready_at)


def test_bucket_refuses_nonsense() -> None:
    """A negative rate or a burst below one is an error, not a bucket that never gives."""
    with pytest.raises(ValueError, match="rate >= 0"):
        TokenBucket(-1.0, 1, 0.0)
    with pytest.raises(ValueError, match="burst >= 1"):
        TokenBucket(1.0, 0, 0.0)


def drain(throttle: Throttle[str, str], clock: FakeClock, seconds: float) -> list[str]:
    """Pop as a loop would, sleeping to each ready_at, for `seconds` of fake time."""
    end = clock.now() + seconds
    popped: list[str] = []
    while True:
        item = throttle.pop(clock.now())
        if item is not None:
            popped.append(item)
            continue
        at = throttle.ready_at(clock.now())
        if at is None or at > end:
            return popped
        assert at > clock.now(), "ready_at said now but pop gave nothing: a busy loop"
        clock.advance(at - clock.now())


def fill(throttle: Throttle[str, str], jobs: dict[str, int]) -> None:
    for key, count in jobs.items():
        for n in range(count):
            throttle.push(key, f"{key}{n}")


def test_global_cap_measured_rate() -> None:
    """Saturated, the admitted rate is the cap (plus the initial burst)."""
    clock = FakeClock(0.0)
    throttle: Throttle[str, str] = Throttle(300.0, 10, 0.0, 1, clock.now())
    fill(throttle, {"a": 10_000})
    popped = drain(throttle, clock, 10.0)
    assert len(popped) == pytest.approx(300 * 10 + 10, abs=1)


@pytest.mark.parametrize(
    ("jobs", "rate", "per_key", "expected"),
    [
        # Under a global cap, busy keys share it equally whatever their number of jobs.
        ({"big": 1000, "mid": 100, "small": 10}, 10.0, 0.0, {"big": 45, "mid": 45, "small": 10}),
        # A key at its own cap leaves the rest of the global rate to the others.
        ({"big": 1000, "mid": 1000}, 10.0, 2.0, {"big": 20, "mid": 20}),
        ({"big": 1000, "mid": 1000, "c": 1000}, 10.0, 5.0, {"big": 33, "mid": 33, "c": 33}),
        # Per-key caps alone: each key gets its cap.
        ({"big": 1000, "small": 1000}, 0.0, 3.0, {"big": 30, "small": 30}),
    ],
)
def test_fair_shares(
    jobs: dict[str, int], rate: float, per_key: float, expected: dict[str, int]
) -> None:
    """Over 10 s, each key's share matches max-min fairness (within the bursts)."""
    clock = FakeClock(0.0)
    throttle: Throttle[str, str] = Throttle(rate, 1, per_key, 1, clock.now())
    fill(throttle, jobs)
    popped = drain(throttle, clock, 10.0)
    shares = {key: sum(1 for item in popped if item.rstrip("0123456789") == key) for key in jobs}
    for key, share in expected.items():
        assert shares[key] == pytest.approx(share, abs=2), (key, shares)


def test_capped_key_does_not_block_others() -> None:
    """A key out of tokens waits aside; another key's item goes at once."""
    clock = FakeClock(0.0)
    throttle: Throttle[str, str] = Throttle(0.0, 1, 1.0, 1, clock.now())
    throttle.push("busy", "b1")
    throttle.push("busy", "b2")
    assert throttle.pop(clock.now()) == "b1"
    assert throttle.pop(clock.now()) is None  # busy's next token is 1 s away
    throttle.push("quiet", "q1")
    assert throttle.pop(clock.now()) == "q1"
    assert throttle.ready_at(clock.now()) == pytest.approx(1.0)
    clock.advance(1.0)
    assert throttle.pop(clock.now()) == "b2"
    assert throttle.ready_at(clock.now()) is None


def test_held_key_waits_and_others_go() -> None:
    """A key held (the upstream answered 429) admits nothing until then; others go meanwhile."""
    throttle: Throttle[str, str] = Throttle(0.0, 1, 0.0, 1, 0.0)
    fill(throttle, {"limited": 2, "other": 1})
    throttle.hold("limited", 5.0)
    assert throttle.holding
    assert throttle.pop(0.0) == "other0"
    assert throttle.pop(0.0) is None
    assert throttle.ready_at(0.0) == pytest.approx(5.0)
    throttle.hold("limited", 3.0)  # an earlier end does not shorten the hold
    assert throttle.pop(4.9) is None
    assert [throttle.pop(5.0), throttle.pop(5.0)] == ["limited0", "limited1"]
    assert not throttle.holding


def test_items_keep_their_order_within_a_key() -> None:
    """Within one key, items go first in, first out."""
    throttle: Throttle[str, str] = Throttle(0.0, 1, 0.0, 1, 0.0)
    fill(throttle, {"a": 5})
    assert [throttle.pop(0.0) for _ in range(5)] == ["a0", "a1", "a2", "a3", "a4"]


def test_dead_items_cost_no_token() -> None:
    """Items no longer wanted are dropped without spending the cap."""
    throttle: Throttle[str, str] = Throttle(1.0, 1, 0.0, 1, 0.0)
    fill(throttle, {"a": 3})
    assert throttle.pop(0.0, alive=lambda item: item == "a2") == "a2"
    assert len(throttle) == 0
    assert throttle.ready_at(0.0) is None


@pytest.mark.parametrize(
    ("rank", "count", "interval_s", "rate", "delay"),
    [
        (0, 1000, 2.5, 0.0, 0.0),  # the first goes at once
        (500, 1000, 2.5, 0.0, 1.25),  # evenly over one interval
        (999, 1000, 2.5, 0.0, 2.4975),  # the last just before the interval ends
        (500, 1000, 2.5, 100.0, 5.0),  # a cap of 100/s needs 10 s for 1,000
        (500, 1000, 2.5, 1000.0, 1.25),  # a cap the interval already respects
        (0, 1, 2.5, 0.0, 0.0),  # a single watch is not delayed
        (0, 0, 2.5, 0.0, 0.0),  # nothing to spread
    ],
)
def test_spread(rank: int, count: int, interval_s: float, rate: float, delay: float) -> None:
    """Polls due at once are spread evenly over an interval, or as long as the cap needs."""
    assert spread(rank, count, interval_s, rate) == pytest.approx(delay)
