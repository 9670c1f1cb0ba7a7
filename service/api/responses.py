"""The API's answers, each a model: the handlers serialize through them and /openapi.json
describes them from them (`service.api.openapi`), so an answer and its description are one.

Every key of an answer is always present (`null` when empty) and in the order of its model,
except a problem's `errors`. Times are ISO 8601 in UTC with milliseconds (`events.iso8601`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, Field, RootModel
from typing_extensions import TypeAliasType

from service import durations as steps
from service import events
from service.api.models import CallbackMethod, EventName, JsonObject, Metadata, PayloadFormat
from service.events import iso8601
from service.store import base as store
from service.watches import Registration

Time = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
MASK = "********"
# Named, as in `service.api.models`: one component each in /openapi.json.
WatchStatus = TypeAliasType("WatchStatus", store.WatchStatus)
SubscriptionStatus = TypeAliasType("SubscriptionStatus", store.SubscriptionStatus)
MaskedHeaders = TypeAliasType(
    "MaskedHeaders",
    Annotated[
        dict[str, str],
        Field(
            description="The header fields sent with every delivery: their names, each value "
            f"shown as {MASK}.",
            json_schema_extra={"additionalProperties": {"const": MASK}},
        ),
    ],
)


def public_url(url: str) -> str:
    """The URL with any userinfo (credentials) removed, for showing back."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _time(value: float | None) -> str | None:
    return None if value is None else iso8601(value)


class Answer(BaseModel):
    def dump(self) -> bytes:
        """The answer as JSON, keys in the model's order."""
        return self.model_dump_json().encode()


class Watch(Answer):
    """A watch as clients see it: never its secret or API key; header values masked."""

    id: str = Field(json_schema_extra={"pattern": "^wch_"})
    job_id: str
    callback_url: str | None = Field(
        description="Without any credentials; null: the watch has no callback."
    )
    callback_method: CallbackMethod
    callback_headers: MaskedHeaders
    events: list[EventName]
    payload_format: PayloadFormat
    metadata: Metadata | None
    poll_interval_s: float
    timeout_s: float
    final_statuses: list[int]
    status: WatchStatus = Field(
        description="`completed`: the job ended and the watch has no callback."
    )
    job_status: str | None
    queue_position: int | None
    attempts: int
    last_error: str | None
    created_at: Time
    updated_at: Time
    completed_at: Time | None
    expires_at: Time

    @classmethod
    def of(cls, watch: store.Watch, **more: Any) -> Self:
        """The answer showing `watch`, with the `more` fields of a subclass."""
        return cls(
            id=watch.id,
            job_id=watch.job_id,
            callback_url=None if watch.callback_url is None else public_url(watch.callback_url),
            callback_method=watch.callback_method,
            callback_headers=dict.fromkeys(watch.callback_headers, MASK),
            events=watch.events,
            payload_format=watch.payload_format,
            metadata=watch.metadata,
            poll_interval_s=watch.poll_interval_s,
            timeout_s=watch.timeout_s,
            final_statuses=watch.final_statuses,
            status=watch.status,
            job_status=watch.job_status,
            queue_position=watch.queue_position,
            attempts=watch.attempts,
            last_error=watch.last_error,
            created_at=iso8601(watch.created_at),
            updated_at=iso8601(watch.updated_at),
            completed_at=_time(watch.completed_at),
            expires_at=iso8601(watch.deadline_at),
            **more,
        )


class Durations(Answer):
    """How long each step of the watch took, in seconds, as the bridge saw it: each moment is
    when a poll saw the job's status, or when the receiver answered. null: not measured, because
    the step has not ended yet, no poll saw the job processing (already finished when first
    polled, or between two polls), it will never happen (cancelled, no callback, not delivered),
    or the watch's events were purged after delivery.payload_retention_days."""

    queue_s: float | None = Field(
        description="From the registration to the first poll that saw the job processing."
    )
    processing_s: float | None = Field(
        description="From the first poll that saw the job processing to the one that saw it end."
    )
    delivery_s: float | None = Field(
        description="From the poll that saw the job end to the end of the first attempt of its "
        "final event to the watch's callback that the receiver accepted (2xx)."
    )

    @classmethod
    def of(cls, measured: steps.Durations) -> Self:
        return cls(
            queue_s=measured.queue.seconds,
            processing_s=measured.processing.seconds,
            delivery_s=measured.delivery.seconds,
        )


class WatchDetail(Watch):
    """A watch read on its own: with how long each of its steps took."""

    durations: Durations


class CreatedWatch(Watch):
    """A watch just registered: the one answer that shows its secret."""

    secret: str | None = Field(
        description="Only in this answer; null when the watch is signed with the configured "
        "delivery.signing_secrets, or has no callback."
    )


class Generated(Answer):
    """The answer of `POST /v1/generate`: the job started, and its watch."""

    job_id: str
    upstream: JsonObject = Field(description="The upstream's answer, as sent.")
    watch: CreatedWatch


def registration_body(registration: Registration) -> bytes:
    """The answer to a registration, kept under its Idempotency-Key: the watch with its secret
    (this once); of `POST /v1/generate`, with the job's id and the upstream's answer too."""
    created = CreatedWatch.of(registration.watch, secret=registration.secret)
    if registration.upstream is None:
        return created.dump()
    job_id = registration.watch.job_id
    return Generated(job_id=job_id, upstream=registration.upstream, watch=created).dump()


class WatchPage(Answer):
    """A page of watches, newest first."""

    data: list[Watch]
    next_cursor: str | None = Field(
        description="The `cursor` of the next page; null: this is the last page."
    )


class Pending(Answer):
    """A long-poll's "not yet": the watch as it stands."""

    status: Literal["pending"]
    watch: Watch


class Attempt(Answer):
    """One HTTP request of a delivery."""

    webhook_id: str
    subscription_id: str | None = Field(
        description="The subscription addressed; null: the watch's own callback."
    )
    event: EventName
    attempt: int
    attempted_at: Time
    duration_ms: float
    status_code: int | None
    error: str | None
    next_attempt_at: Time | None

    @classmethod
    def of(cls, attempt: store.Attempt) -> Self:
        return cls(
            webhook_id=attempt.delivery_id,
            subscription_id=attempt.subscription_id,
            event=attempt.event_type,
            attempt=attempt.number,
            attempted_at=iso8601(attempt.started_at),
            duration_ms=round(attempt.duration_s * 1000, 1),
            status_code=attempt.status_code,
            error=attempt.error,
            next_attempt_at=_time(attempt.next_attempt_at),
        )


class AttemptList(Answer):
    """Every delivery attempt of a watch, oldest first."""

    data: list[Attempt]


class Subscription(Answer):
    """A subscription as clients see it: never its secret; URL credentials and header values
    hidden."""

    id: str = Field(json_schema_extra={"pattern": "^sub_"})
    url: str = Field(description="Without any credentials.")
    events: list[EventName]
    headers: MaskedHeaders
    final_statuses: list[int]
    status: SubscriptionStatus
    created_at: Time

    @classmethod
    def of(cls, subscription: store.Subscription, **more: Any) -> Self:
        """The answer showing `subscription`, with the `more` fields of a subclass."""
        return cls(
            id=subscription.id,
            url=public_url(subscription.url),
            events=subscription.events,
            headers=dict.fromkeys(subscription.headers, MASK),
            final_statuses=subscription.final_statuses,
            status=subscription.status,
            created_at=iso8601(subscription.created_at),
            **more,
        )


class CreatedSubscription(Subscription):
    """A subscription just created: the one answer that shows its secret."""

    secret: str | None = Field(
        description="Only in this answer; null when the configured delivery.signing_secrets "
        "sign for it."
    )


class SubscriptionList(Answer):
    """The active subscriptions, oldest first."""

    data: list[Subscription]


class Event(Answer):
    """The envelope: the body of every webhook to a subscription (and of envelope-format
    callbacks), of the long-poll and of the event API. `service.events.envelope` writes it."""

    id: str = Field(
        json_schema_extra={"pattern": "^evt_"}, description="The same for every endpoint."
    )
    type: EventName
    timestamp: Time
    watch_id: str
    job_id: str
    status: str = Field(
        json_schema_extra={"enum": [name.removeprefix("job.") for name in events.ALL_EVENTS]}
    )
    image_urls: list[str] | None
    error: str | None
    error_code: str | None
    metadata: Metadata | None
    data: JsonObject | None = Field(description="The upstream's answer.")


class EventList(RootModel[list[Event]]):
    """Events, newest first (`GET /v1/events`): the envelopes as recorded, each the body its
    webhooks carry."""


class FieldError(Answer):
    """What is wrong with one field (of the body, or a query parameter)."""

    field: str
    message: str


class Problem(Answer):
    """An RFC 9457 problem document: every error a client sees says what to fix."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] = Field(
        default_factory=list, description="Each invalid field; absent when there are none."
    )

    def dump(self) -> bytes:
        return self.model_dump_json(exclude_defaults=True).encode()


class Caller(Answer):
    """Who a token belongs to."""

    tenant: str
    authenticated: bool


class Health(Answer):
    """Alive, or ready."""

    status: Literal["ok"]


class Unready(Answer):
    """Not ready, and why."""

    status: Literal["unavailable"]
    reason: str
