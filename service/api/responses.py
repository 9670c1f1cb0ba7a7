"""The API's answers, each a model: the handlers serialize through them and /openapi.json
describes them from them (`service.api.openapi`), so an answer and its description are one.

Every key of an answer is always present (`null` when empty) and in the order of its model,
except a problem's `errors`. Times are ISO 8601 in UTC with milliseconds (`events.iso8601`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, RootModel
from typing_extensions import TypeAliasType

from service import config, events, redelivery
from service import durations as steps
from service.api import models
from service.events import iso8601
from service.store import base as store
from service.store import rules
from service.watches import TRACEPARENT, Registration

Time = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
MASK = "********"
# Named, as in `service.api.models`: one component each in /openapi.json.
WatchStatus = TypeAliasType("WatchStatus", store.WatchStatus)
DeliveryState = TypeAliasType("DeliveryState", store.DeliveryState)
DeliveryStatus = TypeAliasType("DeliveryStatus", store.DeliveryStatus)
AttemptVerdict = TypeAliasType("AttemptVerdict", store.AttemptVerdict)
SubscriptionStatus = TypeAliasType("SubscriptionStatus", store.SubscriptionStatus)
TokenRole = TypeAliasType("TokenRole", config.TokenRole)
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
    """The URL as answers and pages show it: without userinfo (credentials) and with each
    query value masked as header values are (`?signature=********`), since a query often
    carries a secret (an n8n 2.x resume URL's signature). Deliveries use the URL as stored."""
    parts = urlsplit(url)
    if "@" not in parts.netloc and not parts.query:
        return url
    query = "&".join(_masked_parameter(part) for part in parts.query.split("&"))
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2], query=query))


def _masked_parameter(part: str) -> str:
    """`name=value` as `name=********`; a part without `=` may be a bare token: masked whole."""
    name, equals, _ = part.partition("=")
    if equals:
        return f"{name}={MASK}"
    return MASK if part else part


def _time(value: float | None) -> str | None:
    return None if value is None else iso8601(value)


class Answer(BaseModel):
    def dump(self) -> bytes:
        """The answer as JSON, keys in the model's order."""
        return self.model_dump_json().encode()


class Watch(Answer):
    """A watch as clients see it: never its secret or API key; header and query values
    masked."""

    id: str = Field(json_schema_extra={"pattern": "^wch_"})
    job_id: str
    upstream: str = Field(
        description="The upstream the job runs at, by its name in the bridge's settings "
        "(`default` is the `[upstream]` section), as registered."
    )
    callback_url: str | None = Field(
        description="Without any credentials, each query value masked (`?signature=********`): "
        "deliveries go to the URL as registered. null: the watch has no callback."
    )
    callback_method: models.CallbackMethod
    callback_headers: MaskedHeaders = Field(
        description=f"The header fields given in `callback_headers`, each value shown as "
        f"{MASK}, but `traceparent`: the registration request's own is kept there for the "
        "webhooks, and one given in `callback_headers` is not told from it, so none is listed."
    )
    events: list[models.EventName]
    payload_format: models.PayloadFormat
    metadata: models.Metadata | None
    poll_interval_s: float
    timeout_s: float
    final_statuses: list[int]
    status: WatchStatus = Field(
        description="`completed`: the job ended and the watch has no callback."
    )
    outcome: models.JobOutcome = Field(
        description="How the job ended: what the upstream said (`succeeded`, `failed`), why "
        "the bridge ended it (`timed_out`, `not_found`, `unauthorized`, `bad_request`: the "
        "`error_code` of its `job.failed`), `cancelled` before it ended, or `in_progress`; "
        "`unknown` for a job that ended before outcomes were kept, its final event purged."
    )
    delivery: DeliveryState = Field(
        description="What became of the final event's delivery to the callback: `pending` "
        "(attempts go on), `delivered`, `failed` (attempts ran out, a final status, or 410), "
        "`cancelled` (the watch was cancelled while delivering), `none` (nothing to send yet, "
        "or no callback)."
    )
    job_status: str | None = Field(
        description="The last status the upstream reported (of a job that timed out: where "
        "it was when the bridge gave up)."
    )
    queue_position: int | None = Field(description="While queued; null once the watch ended.")
    attempts: int = Field(
        description="Every delivery attempt of the watch (to its callback and subscriptions, "
        "every event and redelivery): as many as its `deliveries` lists."
    )
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
            upstream=watch.upstream,
            callback_url=None if watch.callback_url is None else public_url(watch.callback_url),
            callback_method=watch.callback_method,
            callback_headers={
                name: MASK for name in watch.callback_headers if name.lower() != TRACEPARENT
            },
            events=watch.events,
            payload_format=watch.payload_format,
            metadata=watch.metadata,
            poll_interval_s=watch.poll_interval_s,
            timeout_s=watch.timeout_s,
            final_statuses=watch.final_statuses,
            status=watch.status,
            outcome=watch.outcome,
            delivery=rules.delivery_state(watch.status, watch.outcome),
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
    upstream: models.JsonObject = Field(
        description="The upstream's answer to the request that started the job, as sent (the "
        "watch's `upstream` names the upstream)."
    )
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


class ResponseStart(Answer):
    """The start of the receiver's answer, as kept."""

    model_config = ConfigDict(from_attributes=True)  # read from `store.ResponseStart` as it is
    body: str | None = Field(
        description="The first `size` bytes of the body as text; null when it was empty or "
        "is not UTF-8 text."
    )
    size: int = Field(description="Bytes of the body read: at most delivery.max_response_bytes.")
    truncated: bool = Field(
        description="The body went on past them, or broke off before its announced end."
    )
    content_type: str | None


class Attempt(Answer):
    """One HTTP request of a delivery."""

    webhook_id: str
    subscription_id: str | None = Field(
        description="The subscription addressed; null: the watch's own callback."
    )
    event: models.EventName
    series: int = Field(description="Its series: 1, then one more per redelivery of its delivery.")
    attempt: int = Field(description="Its number in its series, from 1.")
    max_attempts: int = Field(
        description="Attempts in a series: the first and one per wait of delivery.retry_schedule_s."
    )
    attempted_at: Time
    duration_ms: float
    status_code: int | None
    error: str | None = Field(
        description="What went wrong: `HTTP <status>`, or why there was no answer "
        "(`connection refused`, `timed out after 15 s`, `TLS handshake failed: ...`, `DNS: no "
        "such host ...`, ...)."
    )
    verdict: AttemptVerdict | None = Field(
        description="What it meant: `succeeded`, `retry` (at `next_attempt_at`), `gone` (410: "
        "no more to this endpoint), `final_status` (a status the endpoint lists in "
        "`final_statuses`: retries stopped), `exhausted` (the last of the series); null for "
        "attempts recorded before verdicts were kept."
    )
    next_attempt_at: Time | None
    response: ResponseStart | None = Field(description="Null: no answer (or not kept).")

    @classmethod
    def of(cls, attempt: store.Attempt, max_attempts: int) -> Self:
        return cls(
            webhook_id=attempt.delivery_id,
            subscription_id=attempt.subscription_id,
            event=attempt.event_type,
            series=attempt.series,
            attempt=attempt.number,
            max_attempts=max_attempts,
            attempted_at=iso8601(attempt.started_at),
            duration_ms=round(attempt.duration_s * 1000, 1),
            status_code=attempt.status_code,
            error=attempt.error,
            verdict=attempt.verdict,
            next_attempt_at=_time(attempt.next_attempt_at),
            response=attempt.response,
        )


class Delivery(Answer):
    """One event addressed to one endpoint: its `webhook_id` is the same on every attempt."""

    webhook_id: str
    subscription_id: str | None = Field(
        description="The subscription addressed; null: the watch's own callback."
    )
    event: models.EventName
    status: DeliveryStatus
    series: int = Field(description="Its current series: 1, then one more per redelivery.")
    attempts: int = Field(description="Attempts of its current series.")
    max_attempts: int = Field(
        description="Attempts in a series: the first and one per wait of delivery.retry_schedule_s."
    )
    next_attempt_at: Time | None = Field(
        description="While `pending`: when the next attempt is due (retry it to make it now)."
    )
    created_at: Time

    @classmethod
    def of(cls, delivery: store.DeliveryRecord, max_attempts: int) -> Self:
        return cls(
            webhook_id=delivery.id,
            subscription_id=delivery.subscription_id,
            event=delivery.event_type,
            status=delivery.status,
            series=delivery.series,
            attempts=delivery.attempts,
            max_attempts=max_attempts,
            next_attempt_at=_time(delivery.next_attempt_at),
            created_at=iso8601(delivery.created_at),
        )


class Redelivered(Watch):
    """A watch redelivered: its final event's deliveries that started a new series."""

    deliveries: list[Delivery] = Field(
        description="Those sent again, each in its new `series`, with its `webhook_id` kept."
    )

    @classmethod
    def of_redelivered(cls, redelivered: redelivery.Redelivered, max_attempts: int) -> Self:
        shown = [Delivery.of(delivery, max_attempts) for delivery in redelivered.deliveries]
        return cls.of(redelivered.watch, deliveries=shown)


class Recovery(Answer):
    """A redelivery of the failed webhooks of watches: those taken, newest first."""

    matched: int = Field(description="Watches the filters match whose delivery failed.")
    max_redeliveries: int = Field(description="The most taken by one call (api.max_redeliveries).")
    redelivered: list[Redelivered] = Field(
        description="Sent again to every endpoint that did not accept the final event."
    )
    unsendable: list[str] = Field(
        description="Ids of the watches taken that had nothing left to send (a body purged, "
        "a subscription no longer active, or no final event)."
    )
    left: int = Field(
        description="Matched but not taken: call again to redeliver the next ones (those sent "
        "now are pending, no longer failed)."
    )

    @classmethod
    def of(cls, recovery: redelivery.Recovery, max_attempts: int) -> Self:
        return cls(
            matched=recovery.matched,
            max_redeliveries=recovery.limit,
            redelivered=[Redelivered.of_redelivered(r, max_attempts) for r in recovery.redelivered],
            unsendable=[watch.id for watch in recovery.unsendable],
            left=recovery.left,
        )


class AttemptList(Answer):
    """Every delivery attempt of a watch, oldest first, and its deliveries."""

    data: list[Attempt]
    deliveries: list[Delivery] = Field(
        description="Each event addressed to each endpoint, oldest first: where its attempts stand."
    )


class Subscription(Answer):
    """A subscription as clients see it: never its secret; URL credentials, query and header
    values hidden."""

    id: str = Field(json_schema_extra={"pattern": "^sub_"})
    url: str = Field(
        description="Without any credentials, each query value masked (`?token=********`): "
        "deliveries go to the URL as registered."
    )
    events: list[models.EventName]
    headers: MaskedHeaders
    final_statuses: list[int]
    status: SubscriptionStatus = Field(
        description="`active` gets deliveries; `disabled` gets none until enabled again; "
        "`deleted` and `gone` (it answered 410) are final."
    )
    created_at: Time
    previous_secret_expires_at: Time | None = Field(
        description="After a secret rotation: until when the secret before signs alongside the "
        "new one (each webhook then carries both signatures); null otherwise."
    )

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
            previous_secret_expires_at=_time(subscription.previous_secret_until),
            **more,
        )


class CreatedSubscription(Subscription):
    """A subscription just created: the one answer that shows its secret."""

    secret: str | None = Field(
        description="Only in this answer; null when the configured delivery.signing_secrets "
        "sign for it."
    )


class RotatedSubscription(Subscription):
    """A subscription whose secret was just rotated: the one answer that shows the new one."""

    secret: str = Field(description="The new secret, only in this answer.")


class TestEventResult(Answer):
    """How the receiver answered a test event (sent once, not retried, not in any attempt
    log)."""

    webhook_id: str = Field(
        json_schema_extra={"pattern": "^msg_"}, description="The test's `webhook-id` header."
    )
    succeeded: bool = Field(description="The receiver answered 2xx.")
    status_code: int | None = Field(description="null: no answer (see `error`).")
    error: str | None = Field(description="What went wrong, in words; null on success.")
    duration_ms: int


class SubscriptionList(Answer):
    """The active and disabled subscriptions, oldest first."""

    data: list[Subscription]


class Event(Answer):
    """The envelope: the body of every webhook to a subscription (and of envelope-format
    callbacks), of the long-poll and of the event API. `service.events.envelope` writes it."""

    id: str = Field(
        json_schema_extra={"pattern": "^evt_"}, description="The same for every endpoint."
    )
    type: models.EventName
    timestamp: Time
    watch_id: str
    job_id: str
    upstream: str | None = Field(
        description="The upstream the job runs at, by its name in the bridge's settings "
        "(`default` unless the watch named one); null on test events."
    )
    status: str = Field(
        json_schema_extra={"enum": [name.removeprefix("job.") for name in events.ALL_EVENTS]}
    )
    image_urls: list[str] | None = Field(
        description="The job's output URLs that a receiver may fetch, whatever their media "
        "(images, videos), as the upstream's profile finds them; null when there are none."
    )
    error: str | None
    error_code: str | None
    metadata: models.Metadata | None
    data: models.JsonObject | None = Field(description="The upstream's answer.")


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
    role: TokenRole = Field(
        description="full: every operation; viewer: reads only (GET), every change is a 403."
    )


class Health(Answer):
    """Alive, or ready."""

    status: Literal["ok"]


class Unready(Answer):
    """Not ready, and why."""

    status: Literal["unavailable"]
    reason: str
