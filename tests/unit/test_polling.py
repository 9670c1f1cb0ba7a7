"""The polling rules of one watch, driven by a fake clock."""

from __future__ import annotations

import dataclasses
import math

import orjson
import pytest

from service import events, pacing, polling
from service.answers import read_answer
from service.clock import FakeClock
from service.observation import Observation

RULES = polling.Rules(
    interval_s=2.5, min_interval_s=2.0, timeout_s=300.0, jitter=0.1, max_backoff_s=60.0,
    not_found_grace_s=30.0,
)  # fmt: skip
MID = 0.5  # the random draw that leaves jitter out


def answer(status: int, body: object, headers: dict[str, str] | None = None) -> Observation:
    return read_answer(status, headers or {}, orjson.dumps(body))


def fresh(clock: FakeClock) -> polling.State:
    return polling.State(created_at=clock.now())


def test_progress_polls_again_after_one_interval() -> None:
    """A queued answer schedules the next poll one (jittered) interval later and is recorded."""
    clock = FakeClock()
    state = fresh(clock)
    step = polling.step(state, answer(200, {"status": "queued", "queue_position": 3}), RULES,
                        clock.now(), MID)  # fmt: skip
    assert step.next_poll_at == clock.now() + 2.5
    assert step.changed
    assert step.final is None
    assert (state.job_status, state.queue_position) == ("queued", 3)


def test_unchanged_progress_writes_nothing() -> None:
    """Seeing the same status and position again is not a change (no database write)."""
    clock = FakeClock()
    state = fresh(clock)
    seen = answer(200, {"status": "queued", "queue_position": 3})
    polling.step(state, seen, RULES, clock.now(), MID)
    clock.advance(2.5)
    step = polling.step(state, seen, RULES, clock.now(), MID)
    assert not step.changed
    assert step.progress == ()


def test_a_progress_event_at_each_status_change_once() -> None:
    """job.queued, then job.processing, each once on the change to it, whoever asked for them
    (the watch's callback filter is applied when the event is recorded)."""
    clock = FakeClock()
    state = fresh(clock)
    queued = answer(200, {"status": "queued", "queue_position": 2})
    processing = answer(200, {"status": "processing"})
    steps = [
        polling.step(state, seen, RULES, clock.now() + 2.5 * n, MID)
        for n, seen in enumerate((queued, queued, processing, processing))
    ]
    assert [[e.type for e in step.progress] for step in steps] == [
        [events.QUEUED], [], [events.PROCESSING], [],
    ]  # fmt: skip
    assert steps[2].progress[0].document == {"status": "processing"}


@pytest.mark.parametrize(
    ("status", "body", "event_type", "error_code"),
    [
        (200, {"id": "j", "status": "succeeded", "output": {"images": []}}, events.SUCCEEDED, None),
        (200, {"id": "j", "status": "failed", "error": "boom"}, events.FAILED, "generation_failed"),
        (400, {"error": "Generation ID is required"}, events.FAILED, "bad_request"),
        (401, {"error": "Invalid or missing API key"}, events.FAILED, "unauthorized"),
    ],
)
def test_endings(status: int, body: object, event_type: str, error_code: str | None) -> None:
    """Terminal answers and refusals end polling with the right final event."""
    clock = FakeClock()
    step = polling.step(fresh(clock), answer(status, body), RULES, clock.now(), MID)
    assert step.next_poll_at is None
    assert step.final is not None
    assert (step.final.type, step.final.error_code) == (event_type, error_code)


def test_not_found_is_tolerated_during_the_grace_then_ends() -> None:
    """A 404 right after registration keeps polling; after the grace it ends as not_found."""
    clock = FakeClock()
    state = fresh(clock)
    missing = answer(404, {"error": "Generation not found"})
    early = polling.step(state, missing, RULES, clock.now(), MID)
    assert early.final is None
    assert early.next_poll_at == clock.now() + 2.5
    clock.advance(30.0)
    late = polling.step(state, missing, RULES, clock.now(), MID)
    assert late.final is not None
    assert late.final.error_code == "not_found"
    assert "Generation not found" in (late.final.error or "")


@pytest.mark.parametrize(
    ("failures", "expected_delay"),
    [
        (1, 2.5),  # first failure: one interval
        (2, 5.0),  # doubling
        (3, 10.0),
        (6, 60.0),  # capped at max_backoff_s
    ],
)
def test_transient_failures_back_off(failures: int, expected_delay: float) -> None:
    """5xx answers back off exponentially, capped, and keep the last error."""
    clock = FakeClock()
    state = fresh(clock)
    step = None
    for _ in range(failures):
        step = polling.step(state, answer(503, {"error": "busy"}), RULES, clock.now(), MID)
    assert step is not None
    assert step.next_poll_at == pytest.approx(clock.now() + expected_delay)
    assert state.last_error == "upstream answered HTTP 503"
    assert state.failures == failures


@pytest.mark.parametrize(
    "seen",
    [
        answer(200, {"status": "queued"}),
        answer(404, {"error": "Generation not found"}),  # within the grace
        answer(503, {"error": "busy"}),
    ],
)
def test_jitter_never_polls_sooner_than_the_minimum_interval(seen: Observation) -> None:
    """An upstream whose minimum is its interval (Runway: a poll per task every 5 s at most)
    is not polled sooner at jitter's low end."""
    clock = FakeClock()
    rules = dataclasses.replace(RULES, interval_s=5.0, min_interval_s=5.0)
    step = polling.step(fresh(clock), seen, rules, clock.now(), 0.0)
    assert step.next_poll_at == clock.now() + 5.0


def test_last_error_is_written_only_when_it_changes() -> None:
    """Repeating the same error is not a state change; a different one is."""
    clock = FakeClock()
    state = fresh(clock)
    first = polling.step(state, answer(503, {}), RULES, clock.now(), MID)
    same = polling.step(state, answer(503, {}), RULES, clock.now(), MID)
    other = polling.step(state, answer(502, {}), RULES, clock.now(), MID)
    assert (first.changed, same.changed, other.changed) == (True, False, True)


def test_rate_limit_honours_retry_after() -> None:
    """A 429 waits what Retry-After says instead of the backoff."""
    clock = FakeClock()
    step = polling.step(
        fresh(clock), answer(429, {}, {"retry-after": "17"}), RULES, clock.now(), MID
    )
    assert step.next_poll_at == clock.now() + 17


def test_retry_after_zero_does_not_spin() -> None:
    """`Retry-After: 0` still waits a moment, never zero."""
    clock = FakeClock()
    step = polling.step(
        fresh(clock), answer(429, {}, {"retry-after": "0"}), RULES, clock.now(), MID
    )
    assert step.next_poll_at is not None
    assert step.next_poll_at >= clock.now() + 1.0


def test_success_after_failures_resets_backoff() -> None:
    """A good answer after failures returns to the normal interval."""
    clock = FakeClock()
    state = fresh(clock)
    for _ in range(4):
        polling.step(state, answer(500, {}), RULES, clock.now(), MID)
    step = polling.step(state, answer(200, {"status": "processing"}), RULES, clock.now(), MID)
    assert state.failures == 0
    assert step.next_poll_at == clock.now() + 2.5


@pytest.mark.parametrize(
    "body",
    [
        b'{"id": "j", "status": ',  # truncated JSON
        b"[1, 2]",  # JSON, but not an object
        b'{"id": "j", "status": "exploded"}',  # an unknown status
        b"",  # empty
    ],
)
def test_unreadable_answers_are_transient(body: bytes) -> None:
    """Bodies the bridge cannot read are retried with backoff, not treated as final."""
    clock = FakeClock()
    state = fresh(clock)
    step = polling.step(state, read_answer(200, {}, body), RULES, clock.now(), MID)
    assert step.final is None
    assert state.failures == 1
    assert state.last_error is not None


def test_polls_never_scheduled_past_the_deadline() -> None:
    """Near the timeout, the next poll is moved to the deadline itself."""
    clock = FakeClock()
    state = fresh(clock)
    clock.advance(299.0)
    step = polling.step(state, answer(200, {"status": "queued"}), RULES, clock.now(), MID)
    assert step.next_poll_at == state.created_at + 300.0


def test_deadline_produces_a_timeout_event() -> None:
    """At the deadline, the watch fails with error_code timeout and says what it last saw."""
    clock = FakeClock()
    state = fresh(clock)
    polling.step(state, answer(200, {"status": "queued", "queue_position": 9}), RULES,
                 clock.now(), MID)  # fmt: skip
    assert polling.deadline_passed(state, RULES, clock.now() + 299.9) is None
    clock.advance(300.0)
    event = polling.deadline_passed(state, RULES, clock.now())
    assert event is not None
    assert (event.type, event.error_code) == (events.FAILED, "timeout")
    assert "queued" in (event.error or "")


def planned_outlook(now: float) -> pacing.Outlook:
    """A planned job seen at position 8, its start expected in (now + 27, now + 33]."""
    track = pacing.Track("queued", 8, now, now, math.inf, now + 27, now + 33, explores=False)
    steps = pacing.Window(samples=(3.0,) * pacing.MIN_SAMPLES)
    processing = pacing.Window(samples=(12.0,) * pacing.MIN_SAMPLES)
    return pacing.Outlook(track, steps, processing, floor_s=2.0, interval_s=2.5)


def test_adaptive_pacing_places_the_next_progress_poll() -> None:
    """With an outlook the planner can use, a progress answer's next poll is the planned one
    (three steps before the middle of the expected start: 21 s on), not one interval later."""
    clock = FakeClock()
    state = fresh(clock)
    now = clock.now()
    outlook = planned_outlook(now)
    seen = answer(200, {"status": "queued", "queue_position": 8})
    step = polling.step(state, seen, RULES, now, MID, outlook)
    assert step.next_poll_at == pytest.approx(now + 21)
    # An explorer (or any job the planner has nothing for) keeps the fixed interval.
    outlook.track.explores = True
    assert polling.step(state, seen, RULES, now, MID, outlook).next_poll_at == now + 2.5


def test_adaptive_pacing_never_passes_the_deadline() -> None:
    """A planned poll past the watch's timeout is pulled back to the deadline."""
    clock = FakeClock()
    state = fresh(clock)
    clock.advance(RULES.timeout_s - 5)
    now = clock.now()
    step = polling.step(state, answer(200, {"status": "queued", "queue_position": 8}), RULES,
                        now, MID, planned_outlook(now))  # fmt: skip
    assert step.next_poll_at == state.created_at + RULES.timeout_s
