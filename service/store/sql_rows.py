"""The rows both SQL backends read and write: the columns of each record, in its fields' order,
and the record a row holds. A JSON column is read by `decode` and written by `encode`: SQLite
keeps its text, PostgreSQL's driver converts it itself (`same`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from service.store.base import (
    Attempt,
    DeliveryRecord,
    EventRecord,
    ResponseStart,
    Subscription,
    Watch,
)

Convert = Callable[[Any], Any]

WATCH_FIELDS = (
    "id", "tenant", "job_id", "callback_url", "callback_method", "callback_headers", "metadata",
    "events", "payload_format", "secret", "poll_interval_s", "timeout_s", "upstream_api_key",
    "created_at", "status", "job_status", "queue_position", "attempts", "last_error", "updated_at",
    "completed_at", "next_poll_at", "lease_token", "final_statuses", "outcome", "upstream",
)  # fmt: skip
WATCH_COLUMNS = ", ".join(WATCH_FIELDS)
# The columns a new watch is inserted with (the others start at their defaults).
NEW_WATCH_COLUMNS = (
    "id, tenant, job_id, callback_url, callback_method, callback_headers, metadata, events,"
    " payload_format, secret, poll_interval_s, timeout_s, upstream_api_key, created_at, status,"
    " updated_at, next_poll_at, lease_owner, lease_expires_at, lease_token, final_statuses,"
    " upstream"
)
SUBSCRIPTION_FIELDS = (
    "id", "tenant", "url", "events", "secret", "headers", "final_statuses", "status",
    "created_at", "updated_at", "previous_secret", "previous_secret_until",
)  # fmt: skip
SUBSCRIPTION_COLUMNS = ", ".join(SUBSCRIPTION_FIELDS)
ATTEMPT_COLUMNS = (
    "a.delivery_id, a.event_type, a.number, a.started_at, a.duration_s, a.status_code, a.error,"
    " a.next_attempt_at, d.subscription_id, a.verdict, a.response_body, a.response_size,"
    " a.response_truncated, a.response_type, a.series"
)
EVENT_COLUMNS = "e.id, e.watch_id, e.type, e.final, e.body, e.created_at"


def same(value: Any) -> Any:
    return value


def watch(row: Sequence[Any], decode: Convert = same) -> Watch:
    """The watch of a row of `WATCH_COLUMNS` (a watch without a callback keeps "")."""
    values = dict(zip(WATCH_FIELDS, row, strict=True))
    metadata = values["metadata"]
    return Watch(
        **{
            **values,
            "callback_url": values["callback_url"] or None,
            "callback_headers": decode(values["callback_headers"]),
            "metadata": None if metadata is None else decode(metadata),
            "events": tuple(decode(values["events"])),
            "final_statuses": tuple(decode(values["final_statuses"])),
        }
    )


def new_watch_values(
    watch: Watch, lease_owner: str | None, lease_until: float, encode: Convert = same
) -> tuple[object, ...]:
    """The values of `NEW_WATCH_COLUMNS` of `watch`, leased to `lease_owner` (token 1) until
    `lease_until` when given (see `Store.insert_watch`)."""
    metadata = None if watch.metadata is None else encode(watch.metadata)
    return (
        watch.id, watch.tenant, watch.job_id, watch.callback_url or "", watch.callback_method,
        encode(watch.callback_headers), metadata, encode(list(watch.events)),
        watch.payload_format, watch.secret, watch.poll_interval_s, watch.timeout_s,
        watch.upstream_api_key, watch.created_at, watch.status, watch.created_at,
        watch.next_poll_at, lease_owner, lease_until if lease_owner else None,
        1 if lease_owner else 0, encode(list(watch.final_statuses)), watch.upstream,
    )  # fmt: skip


def subscription(row: Sequence[Any], decode: Convert = same) -> Subscription:
    """The subscription of a row of `SUBSCRIPTION_COLUMNS`."""
    values = dict(zip(SUBSCRIPTION_FIELDS, row, strict=True))
    return Subscription(
        **{
            **values,
            "events": tuple(decode(values["events"])),
            "headers": decode(values["headers"]),
            "final_statuses": tuple(decode(values["final_statuses"])),
        }
    )


def subscription_values(sub: Subscription, encode: Convert = same) -> tuple[object, ...]:
    """The values of `SUBSCRIPTION_COLUMNS` of `sub`."""
    return (
        sub.id, sub.tenant, sub.url, encode(list(sub.events)), sub.secret, encode(sub.headers),
        encode(list(sub.final_statuses)), sub.status, sub.created_at, sub.updated_at,
        sub.previous_secret, sub.previous_secret_until,
    )  # fmt: skip


def attempt(row: Sequence[Any]) -> Attempt:
    """The attempt of a row of `ATTEMPT_COLUMNS`."""
    size = row[11]
    response = None if size is None else ResponseStart(row[10], size, bool(row[12]), row[13])
    return Attempt(
        delivery_id=row[0], event_type=row[1], number=row[2], started_at=row[3],
        duration_s=row[4], status_code=row[5], error=row[6], next_attempt_at=row[7],
        subscription_id=row[8], verdict=row[9], response=response, series=row[14],
    )  # fmt: skip


def event(row: Sequence[Any]) -> EventRecord:
    """The event of a row of `EVENT_COLUMNS`."""
    return EventRecord(row[0], row[1], row[2], bool(row[3]), row[4], row[5])


def delivery_record(row: Sequence[Any]) -> DeliveryRecord:
    """The delivery of a row in `DeliveryRecord`'s field order."""
    return DeliveryRecord(row[0], row[1], bool(row[2]), *row[3:])
