"""Pure: how long each step of a watch took, from what the store recorded of it.

A watch goes through three steps, each measured between two recorded moments:

- *queue*: from its registration to the first event saying the job is processing;
- *processing*: from then to the final event (the job's end as the bridge saw it);
- *delivery*: from the final event to the end of the first attempt of its callback's final
  delivery that the receiver accepted (2xx).

The bridge sees a job only when it polls it, so a moment is when a poll saw it, not when the
upstream reached it. A step whose two moments were not both recorded has no duration, and says
why (`Gap`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from service import events as event_types
from service.store.base import Attempt, EventRecord, Watch

# Why a step has no duration:
# `waiting`: it has not ended yet and still may (the job runs, the delivery is being retried);
# `unseen`: no poll saw the job in the state that starts it (seen only once further along, e.g.
#   already finished at its first poll);
# `none`: it never happened and never will (cancelled, no callback, never delivered);
# `purged`: its events were deleted with the watch's bodies (`delivery.payload_retention_days`).
Gap = Literal["waiting", "unseen", "none", "purged"]


@dataclass(frozen=True, slots=True)
class Span:
    """One step: its length in seconds, or why there is none."""

    seconds: float | None
    gap: Gap | None = None


@dataclass(frozen=True, slots=True)
class Durations:
    queue: Span
    processing: Span
    delivery: Span


_ENDED = frozenset({"delivered", "failed", "gone", "completed", "cancelled"})


def measure(
    watch: Watch, recorded: Sequence[EventRecord], attempts: Sequence[Attempt]
) -> Durations:
    """The steps of `watch`, from its events and its attempts (in any order)."""
    processing_at = _first(e.created_at for e in recorded if e.type == event_types.PROCESSING)
    final_at = _first(e.created_at for e in recorded if e.final)
    accepted_at = _first(
        a.started_at + a.duration_s
        for a in attempts
        if a.subscription_id is None and a.event_type in event_types.FINAL_EVENTS and _accepted(a)
    )
    # Housekeeping deletes every event of an ended watch at once; a job that ended had some.
    purged = not recorded and watch.status in _ENDED and watch.status != "cancelled"
    ongoing = watch.status == "active"
    # A step neither seen begun nor passed: still to come, its events purged, or never to be.
    not_begun = Span(None, "waiting" if ongoing else "purged" if purged else "none")
    if processing_at is not None:
        queue = Span(max(0.0, processing_at - watch.created_at))
    else:
        queue = Span(None, "unseen") if final_at is not None else not_begun

    if processing_at is not None and final_at is not None:
        processing = Span(max(0.0, final_at - processing_at))
    else:
        processing = Span(None, "unseen") if final_at is not None else not_begun

    if accepted_at is not None and final_at is not None:
        delivery = Span(max(0.0, accepted_at - final_at))
    elif watch.callback_url is None or watch.status == "completed":
        delivery = Span(None, "none")  # no callback, or it did not ask for the final event
    elif accepted_at is not None or purged:
        delivery = Span(None, "purged")
    elif watch.status in ("active", "delivering"):
        delivery = Span(None, "waiting")
    else:
        delivery = Span(None, "none")
    return Durations(queue, processing, delivery)


def _accepted(attempt: Attempt) -> bool:
    code = attempt.status_code
    return attempt.error is None and code is not None and 200 <= code < 300


def _first(moments: Iterable[float]) -> float | None:
    return min(moments, default=None)
