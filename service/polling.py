"""Pure: the polling rules of one watch, applied to each observation with an explicit `now`.

Poll at once, then every interval ±jitter. Progress keeps polling, with a progress event at
each change of the job's status (whoever asked for it: the events are kept, and subscriptions
and API clients may want them); a terminal answer, a refusal (400, 401, or 404 past the grace)
or the deadline ends it with a final event. Transient failures (5xx, 429, timeouts, unreadable
bodies) back off exponentially, or as `Retry-After` says, and never past the deadline.

With an `outlook` (adaptive pacing, `service.pacing`), a progress answer's next poll is the one
the pacing planner places from what the upstream taught it; the fixed interval stays the
fallback when the planner has nothing to say.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from service import events, pacing, schedule
from service.observation import Observation


@dataclass(frozen=True, slots=True)
class Rules:
    interval_s: float
    min_interval_s: float  # the upstream's: no poll comes sooner after another
    timeout_s: float
    jitter: float
    max_backoff_s: float
    not_found_grace_s: float


@dataclass(slots=True)
class State:
    """What polling knows of one watch between polls (kept in memory, written on change)."""

    created_at: float
    job_status: str | None = None
    queue_position: int | None = None
    last_error: str | None = None
    failures: int = 0


@dataclass(frozen=True, slots=True)
class Step:
    """What to do after an observation."""

    next_poll_at: float | None
    changed: bool = False  # write job_status/queue_position/last_error back
    progress: tuple[events.Event, ...] = field(default_factory=tuple)
    final: events.Event | None = None


def deadline_passed(state: State, rules: Rules, now: float) -> events.Event | None:
    """The timeout event when the watch's time is up, else None."""
    if now < state.created_at + rules.timeout_s:
        return None
    seen = f"last seen status: {state.job_status}" if state.job_status else "no status seen"
    error = f"no terminal status within {rules.timeout_s:g} s ({seen})"
    if state.last_error:
        error += f"; last error: {state.last_error}"
    return events.bridge_failure(events.TIMEOUT, error, state.job_status)


def _next(state: State, rules: Rules, now: float, delay: float) -> float:
    return min(now + delay, state.created_at + rules.timeout_s)


def _jittered(rules: Rules, base: float, rand: float) -> float:
    """`base` jittered, never below the upstream's minimum interval (jitter's low end would
    poll an upstream whose interval is its minimum too soon)."""
    return max(schedule.jittered(base, rules.jitter, rand), rules.min_interval_s)


def step(
    state: State,
    seen: Observation,
    rules: Rules,
    now: float,
    rand: float,
    outlook: pacing.Outlook | None = None,
) -> Step:
    """Apply one observation to `state` (mutated in place) and say what follows; `outlook` is
    the job's adaptive pacing, None for the fixed interval."""
    if seen.kind == "terminal":
        assert seen.job_status is not None
        assert seen.document is not None
        state.job_status = seen.job_status
        final = events.terminal_event(seen)
        return Step(None, changed=True, final=final)

    if seen.kind == "refused" and not (
        seen.error_code == "not_found" and now < state.created_at + rules.not_found_grace_s
    ):
        assert seen.error_code is not None
        assert seen.error is not None
        state.last_error = seen.error
        final = events.bridge_failure(seen.error_code, seen.error, state.job_status, seen.document)
        return Step(None, changed=True, final=final)

    if seen.kind == "progress":
        changed_status = seen.job_status != state.job_status
        changed = changed_status or seen.queue_position != state.queue_position
        state.job_status, state.queue_position = seen.job_status, seen.queue_position
        state.failures = 0
        progress: tuple[events.Event, ...] = ()
        event_type = f"job.{seen.job_status}"
        if changed_status and event_type in events.PROGRESS_EVENTS:
            progress = (events.Event(event_type, seen.job_status, seen.body, seen.document),)
        planned = None
        if outlook is not None:
            deadline = state.created_at + rules.timeout_s
            floor_s = outlook.floor_for(rules.interval_s)
            planned = pacing.next_poll_at(outlook, now, floor_s, deadline)
        if planned is None:
            planned = _next(state, rules, now, _jittered(rules, rules.interval_s, rand))
        return Step(planned, changed=changed, progress=progress)

    if seen.kind == "refused":  # a 404 within the grace after registration: not there yet
        return Step(_next(state, rules, now, _jittered(rules, rules.interval_s, rand)))

    state.failures += 1
    changed = seen.error != state.last_error
    state.last_error = seen.error
    waited = schedule.retry_after(seen.retry_after, now, rules.max_backoff_s)
    if waited is None:
        base = schedule.backoff(state.failures, rules.interval_s, rules.max_backoff_s)
        waited = _jittered(rules, base, rand)
    # A `Retry-After: 0` must not turn into a tight loop of requests.
    waited = max(waited, min(1.0, rules.interval_s))
    return Step(_next(state, rules, now, waited), changed=changed)
