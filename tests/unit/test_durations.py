"""A watch's durations (`service/durations.py`) from what the store recorded, as a table: each
step measured when both its moments were recorded, and why not otherwise."""

from __future__ import annotations

from dataclasses import replace

import pytest

from service.durations import Durations, Span, measure
from service.store.base import Attempt, EventRecord, Watch, WatchStatus

T0 = 1_767_225_600.0  # the watch's registration
CALLBACK = "https://receiver.example/hooks"


def watch(status: WatchStatus, *, callback: str | None = CALLBACK) -> Watch:
    return Watch(
        id="wch_1", tenant="acme", job_id="job-1", callback_url=callback,
        callback_method="POST", callback_headers={}, metadata=None,
        events=("job.succeeded", "job.failed"), payload_format="envelope", secret="",
        poll_interval_s=5.0, timeout_s=3600.0, upstream_api_key=None, created_at=T0,
        status=status,
    )  # fmt: skip


def event(event_type: str, at: float) -> EventRecord:
    final = event_type in ("job.succeeded", "job.failed")
    return EventRecord(f"evt_{event_type}_{at}", "wch_1", event_type, final, b"{}", T0 + at)


def attempt(
    at: float,
    status_code: int | None,
    *,
    took: float = 0.5,
    event_type: str = "job.succeeded",
    subscription: str | None = None,
    error: str | None = None,
) -> Attempt:
    return Attempt(
        "msg_1", event_type, 1, T0 + at, took, status_code, error, subscription_id=subscription
    )


QUEUED, PROCESSING = event("job.queued", 1.0), event("job.processing", 10.0)
SUCCEEDED, FAILED = event("job.succeeded", 70.0), event("job.failed", 70.0)


@pytest.mark.parametrize(
    ("status", "recorded", "attempts", "expected"),
    [
        # every step seen: queue 10 s, processing 60 s, delivery to the end of the accepted
        # attempt (72 + 0.5 - 70)
        ("delivered", [QUEUED, PROCESSING, SUCCEEDED], [attempt(72.0, 200)],
         (Span(10.0), Span(60.0), Span(2.5))),
        # retried: the first accepted attempt counts, not the failed ones before it
        ("delivered", [PROCESSING, SUCCEEDED], [attempt(70.1, 503), attempt(100.0, 204)],
         (Span(10.0), Span(60.0), Span(30.5))),
        # redelivered later: still the first acceptance, whatever the order given
        ("delivered", [PROCESSING, SUCCEEDED], [attempt(900.0, 200), attempt(71.0, 200)],
         (Span(10.0), Span(60.0), Span(1.5))),
        # a job seen only when already finished: no queue nor processing time
        ("delivered", [SUCCEEDED], [attempt(70.5, 200)],
         (Span(None, "unseen"), Span(None, "unseen"), Span(1.0))),
        # a job that failed: measured the same way
        ("delivered", [QUEUED, PROCESSING, FAILED], [attempt(70.0, 200, event_type="job.failed")],
         (Span(10.0), Span(60.0), Span(0.5))),
        # still queued, then processing: what has not ended yet is waited for
        ("active", [QUEUED], [], (Span(None, "waiting"),) * 3),
        ("active", [QUEUED, PROCESSING], [],
         (Span(10.0), Span(None, "waiting"), Span(None, "waiting"))),
        # being delivered: the receiver has not accepted it yet
        ("delivering", [PROCESSING, SUCCEEDED], [attempt(70.0, 500)],
         (Span(10.0), Span(60.0), Span(None, "waiting"))),
        # never delivered: attempts ran out, or 410, or a transport error with no status
        ("failed", [PROCESSING, SUCCEEDED], [attempt(70.0, 500), attempt(80.0, None, error="x")],
         (Span(10.0), Span(60.0), Span(None, "none"))),
        ("gone", [PROCESSING, SUCCEEDED], [attempt(70.0, 410)],
         (Span(10.0), Span(60.0), Span(None, "none"))),
        # a 2xx with an error (the answer could not be read) is not an acceptance
        ("failed", [PROCESSING, SUCCEEDED], [attempt(70.0, 200, error="reset")],
         (Span(10.0), Span(60.0), Span(None, "none"))),
        # accepted by a subscription only, or a progress event accepted: not the callback's
        # final delivery
        ("delivering", [PROCESSING, SUCCEEDED],
         [attempt(70.0, 200, subscription="sub_1"),
          attempt(11.0, 200, event_type="job.processing")],
         (Span(10.0), Span(60.0), Span(None, "waiting"))),
        # cancelled while queued, or while processing: those steps never end
        ("cancelled", [QUEUED], [], (Span(None, "none"),) * 3),
        ("cancelled", [QUEUED, PROCESSING], [],
         (Span(10.0), Span(None, "none"), Span(None, "none"))),
        # cancelled with nothing recorded at all (before its first poll)
        ("cancelled", [], [], (Span(None, "none"),) * 3),
        # ended long ago: its events were purged, its attempt log stays
        ("delivered", [], [attempt(72.0, 200)],
         (Span(None, "purged"), Span(None, "purged"), Span(None, "purged"))),
        ("failed", [], [attempt(72.0, 500)],
         (Span(None, "purged"), Span(None, "purged"), Span(None, "purged"))),
        # clocks of two replicas a little apart: never a negative duration
        ("delivered", [event("job.processing", -0.2), event("job.succeeded", -0.3)],
         [attempt(-0.9, 200)],
         (Span(0.0), Span(0.0), Span(0.0))),
    ],
)  # fmt: skip
def test_steps(
    status: WatchStatus,
    recorded: list[EventRecord],
    attempts: list[Attempt],
    expected: tuple[Span, Span, Span],
) -> None:
    """Each step is measured between its two recorded moments, or says why it is not."""
    found = measure(watch(status), recorded, attempts)
    assert found == Durations(*expected)


@pytest.mark.parametrize(
    ("status", "recorded", "delivery"),
    [
        # no callback: nothing to deliver, ever (subscriptions have their own deliveries)
        ("completed", [PROCESSING, SUCCEEDED], Span(None, "none")),
        ("active", [PROCESSING], Span(None, "none")),
    ],
)
def test_no_callback(status: WatchStatus, recorded: list[EventRecord], delivery: Span) -> None:
    """A watch without a callback has no delivery step; its job's steps are measured."""
    found = measure(watch(status, callback=None), recorded, [])
    assert found.queue == Span(10.0)
    assert found.delivery == delivery


def test_callback_not_asked_for_the_final_event() -> None:
    """A watch whose callback did not ask for the final event ends `completed`: no delivery."""
    found = measure(replace(watch("completed"), events=("job.processing",)), [SUCCEEDED], [])
    assert found == Durations(Span(None, "unseen"), Span(None, "unseen"), Span(None, "none"))
