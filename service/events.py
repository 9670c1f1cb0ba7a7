"""Pure: the webhook bodies, built from what the upstream said (or what the bridge decided).

Envelope bodies carry every key on every event (`null` when empty), because tools such as Make
infer a webhook's structure from its first sample. Their first key is the event's id, the same at
every endpoint (callback, subscriptions, event API), so a receiver can tell an event it saw
before.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from service import ssrf
from service.observation import Observation

SUCCEEDED = "job.succeeded"
FAILED = "job.failed"
QUEUED = "job.queued"
PROCESSING = "job.processing"
FINAL_EVENTS = (SUCCEEDED, FAILED)
PROGRESS_EVENTS = (QUEUED, PROCESSING)
ALL_EVENTS = (*FINAL_EVENTS, *PROGRESS_EVENTS)
# Sent to one subscription on request (whatever events it lists), never subscribed to: a
# receiver can tell it from job events and acknowledge it with a 2xx.
TEST = "webhook.test"

# error_code values of `job.failed`.
GENERATION_FAILED = "generation_failed"
TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class Event:
    """One event of one job. `body` is the upstream's answer verbatim, when there was one."""

    type: str
    job_status: str | None
    body: bytes | None = None
    document: dict[str, Any] | None = None
    error: str | None = None
    error_code: str | None = None
    # The output URLs the upstream's profile found in the answer.
    outputs: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Subject:
    """What a body says about the watch it belongs to."""

    watch_id: str
    job_id: str
    metadata: dict[str, Any] | None
    payload_format: str
    upstream: str


def iso8601(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def image_url(url: str) -> bool:
    """Whether `url` may be offered to receivers as an image to fetch: an absolute http(s) URL
    of one printable line, naming a host that is not written as a non-public address (the
    SSRF table) or as localhost. Names are not resolved here."""
    if not url.isprintable() or " " in url:
        return False
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return False
    host = (parts.hostname or "").removesuffix(".")
    if parts.scheme not in ("http", "https") or not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return False
    address = ssrf.parse_ip_literal(host)
    return address is None or ssrf.blocked_reason(address) is None


def image_urls(outputs: tuple[str, ...] | None) -> list[str] | None:
    """The output URLs that receivers may fetch (`image_url`), whatever their media; None
    when there are none. `data` keeps the answer as it was."""
    urls = [url for url in outputs or () if image_url(url)]
    return urls or None


def terminal_event(seen: Observation) -> Event:
    """The final event of a job the upstream reports `succeeded` or `failed`, with the output
    URLs and the error text its profile found."""
    status, body, document = seen.job_status, seen.body, seen.document
    if status == "succeeded":
        return Event(SUCCEEDED, status, body, document, outputs=seen.outputs)
    error = seen.message or "the upstream reported the generation as failed"
    return Event(FAILED, status, body, document, error, GENERATION_FAILED)


def bridge_failure(
    error_code: str, error: str, job_status: str | None, document: dict[str, Any] | None = None
) -> Event:
    """A `job.failed` the bridge decides itself (timeout, not_found, unauthorized, ...)."""
    return Event(FAILED, job_status, None, document, error, error_code)


def render(subject: Subject, event: Event, timestamp: float, event_id: str) -> bytes:
    """The webhook body for `event`, in the subject's payload format."""
    if subject.payload_format == "raw":
        if event.body is not None:
            return event.body
        return orjson.dumps(
            {"id": subject.job_id, "status": "failed", "error": event.error,
             "error_code": event.error_code}
        )  # fmt: skip
    return envelope(subject, event, timestamp, event_id)


def envelope(subject: Subject, event: Event, timestamp: float, event_id: str) -> bytes:
    """The envelope body of `event`, whatever the subject's payload format: what subscriptions
    and the event API carry."""
    return orjson.dumps(
        {
            "id": event_id,
            "type": event.type,
            "timestamp": iso8601(timestamp),
            "watch_id": subject.watch_id,
            "job_id": subject.job_id,
            "upstream": subject.upstream,
            "status": event.type.removeprefix("job."),
            "image_urls": image_urls(event.outputs),
            "error": event.error,
            "error_code": event.error_code,
            "metadata": subject.metadata,
            "data": event.document,
        }
    )


def test_envelope(event_id: str, timestamp: float, subscription_id: str) -> bytes:
    """The body of a test event: the envelope's keys (no watch, no job), and the subscription
    it was sent to as `data`."""
    return orjson.dumps(
        {
            "id": event_id,
            "type": TEST,
            "timestamp": iso8601(timestamp),
            "watch_id": None,
            "job_id": None,
            "upstream": None,
            "status": "test",
            "image_urls": None,
            "error": None,
            "error_code": None,
            "metadata": None,
            "data": {"subscription_id": subscription_id},
        }
    )
