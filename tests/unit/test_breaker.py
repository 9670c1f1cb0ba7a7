"""The circuit breaker's state machine, driven by a fake clock."""

from __future__ import annotations

import dataclasses

import pytest

from service.breaker import Breaker, Rules, is_failure
from service.clock import FakeClock
from service.observation import Observation

RULES = Rules(
    window_s=10.0,
    min_requests=4,
    failure_ratio=0.5,
    consecutive_failures=1000,  # the ratio alone, unless a test says otherwise
    cooldown_s=5.0,
    max_cooldown_s=20.0,
    probe_timeout_s=3.0,
)


@pytest.mark.parametrize(
    ("seen", "failed"),
    [
        (Observation("transient", error="timed out"), True),  # no answer
        (Observation("transient", error="503", http_status=503), True),
        (Observation("transient", error="500", http_status=500), True),
        (Observation("transient", error="429", http_status=429), False),  # rate limiting
        (Observation("refused", error_code="not_found", error="404", http_status=404), False),
        (Observation("refused", error_code="unauthorized", error="401", http_status=401), False),
        (Observation("transient", error="not JSON", http_status=200), False),  # it answered
        (Observation("progress", job_status="queued", http_status=200), False),
    ],
)
def test_what_counts_as_failure(seen: Observation, failed: bool) -> None:
    """Only 5xx and unanswered requests count against the upstream."""
    assert is_failure(seen) is failed


def feed(breaker: Breaker, clock: FakeClock, outcomes: str, gap: float = 0.1) -> list[str]:
    """Record outcomes ('F' failed, 'o' ok), each started and ended `gap` apart; the states
    entered."""
    entered: list[str] = []
    for outcome in outcomes:
        started = clock.now()
        clock.advance(gap)
        change = breaker.record(clock.now(), started, outcome == "F")
        if change is not None:
            entered.append(change.after)
    return entered


@pytest.mark.parametrize(
    ("outcomes", "entered"),
    [
        ("FFFF", ["open"]),  # 4 of 4 failed
        ("FFF", []),  # too few requests to judge
        ("oFoF", ["open"]),  # half failed: at the threshold
        ("oooFoooF", []),  # a quarter failed
        ("ooooooooooooFFFF", []),  # 4 of 16: below the ratio
        ("ooooooooFFFFFFFF", ["open"]),  # 8 of 16
    ],
)
def test_trips_on_failure_ratio(outcomes: str, entered: list[str]) -> None:
    """The circuit opens once the window holds enough requests and enough failures."""
    clock = FakeClock(0.0)
    breaker = Breaker(RULES, clock.now())
    assert feed(breaker, clock, outcomes) == entered


@pytest.mark.parametrize(
    ("outcomes", "entered"),
    [
        ("o" * 30 + "FFFFF", ["open"]),  # five in a row, whatever the window held before
        ("o" * 30 + "FFFFoFFFF", []),  # a success resets the count
        ("o" * 30 + "FFFFoFFFFF", ["open"]),
    ],
)
def test_trips_on_failures_in_a_row(outcomes: str, entered: list[str]) -> None:
    """A sudden outage opens the circuit at once, not once failures outweigh past successes."""
    clock = FakeClock(0.0)
    rules = dataclasses.replace(RULES, consecutive_failures=5)
    breaker = Breaker(rules, clock.now())
    assert feed(breaker, clock, outcomes, gap=0.01) == entered


def test_old_outcomes_leave_the_window() -> None:
    """Failures older than the window do not add up with new ones."""
    clock = FakeClock(0.0)
    breaker = Breaker(RULES, clock.now())
    assert feed(breaker, clock, "FFF") == []
    clock.advance(RULES.window_s + 1)
    assert feed(breaker, clock, "FoF") == []  # 2 of 3: too few again
    assert breaker.state == "closed"


def test_open_probe_close_cycle() -> None:
    """Open: nothing goes until the cool-down is over; then one probe; its success closes."""
    clock = FakeClock(0.0)
    breaker = Breaker(RULES, clock.now())
    feed(breaker, clock, "FFFF")
    opened_at = clock.now()
    assert breaker.state == "open"
    assert breaker.retry_at == pytest.approx(opened_at + 5.0)
    assert breaker.allow(clock.now()) == (False, None)
    clock.advance(4.9)
    assert breaker.allow(clock.now())[0] is False

    clock.advance(0.1)
    allowed, change = breaker.allow(clock.now())
    assert allowed
    assert change is not None
    assert (change.before, change.after) == ("open", "half_open")
    assert breaker.allow(clock.now())[0] is False  # one probe at a time
    started = clock.now()
    clock.advance(0.2)
    closed = breaker.record(clock.now(), started, failed=False)
    assert closed is not None
    assert (closed.before, closed.after) == ("half_open", "closed")
    assert breaker.allow(clock.now()) == (True, None)


def test_failed_probes_grow_the_cooldown_up_to_its_cap() -> None:
    """Each failed probe re-opens for twice as long, never longer than the cap; a success
    resets it."""
    clock = FakeClock(0.0)
    breaker = Breaker(RULES, clock.now())
    feed(breaker, clock, "FFFF")
    cooldowns = []
    for _ in range(4):
        retry_at = breaker.retry_at
        assert retry_at is not None
        cooldowns.append(round(retry_at - clock.now(), 6))
        clock.advance(retry_at - clock.now())
        assert breaker.allow(clock.now())[0]
        change = breaker.record(clock.now(), clock.now(), failed=True)
        assert change is not None
        assert change.after == "open"
    assert cooldowns == [5.0, 10.0, 20.0, 20.0]

    retry_at = breaker.retry_at
    assert retry_at is not None
    clock.advance(retry_at - clock.now())
    breaker.allow(clock.now())
    breaker.record(clock.now(), clock.now(), failed=False)
    feed(breaker, clock, "FFFF")
    assert breaker.retry_at == pytest.approx(clock.now() + 5.0)


def test_requests_from_before_a_change_are_ignored() -> None:
    """A request sent before the circuit opened neither closes it nor counts after."""
    clock = FakeClock(0.0)
    breaker = Breaker(RULES, clock.now())
    stale_started = clock.now()
    feed(breaker, clock, "FFFF")
    clock.advance(5.0)
    breaker.allow(clock.now())  # half open, the probe is out
    assert breaker.record(clock.now(), stale_started, failed=False) is None
    assert breaker.state == "half_open"
    assert breaker.record(clock.now(), stale_started, failed=True) is None
    assert breaker.state == "half_open"


def test_lost_probe_is_replaced() -> None:
    """A probe that never reports does not keep the circuit half open for ever."""
    clock = FakeClock(0.0)
    breaker = Breaker(RULES, clock.now())
    feed(breaker, clock, "FFFF")
    clock.advance(5.0)
    assert breaker.allow(clock.now())[0]
    assert breaker.probe_until == pytest.approx(clock.now() + 3.0)
    clock.advance(2.9)
    assert breaker.allow(clock.now())[0] is False
    clock.advance(0.1)
    assert breaker.allow(clock.now())[0]


def test_unprobe_lets_another_probe_go() -> None:
    """A probe admitted but never sent (nothing was left to poll) frees the turn at once."""
    clock = FakeClock(0.0)
    breaker = Breaker(RULES, clock.now())
    feed(breaker, clock, "FFFF")
    clock.advance(5.0)
    assert breaker.allow(clock.now())[0]
    breaker.unprobe()
    assert breaker.probe_until is None
    assert breaker.allow(clock.now())[0]
