"""What the dashboard shows: the tenant's watches and their counts by job outcome and delivery
state, what ended over the last day, one watch's deliveries (where their attempts stand), the
endpoints a redelivery may send it to, its timeline, durations and the body it sent.
Everything goes through the service layer, as the API's handlers do: reads and actions
(`WatchService`, `RedeliveryService`, `SubscriptionService`) follow the same rules."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson

from service import USER_AGENT
from service.api.responses import MASK, public_url
from service.durations import Durations, Gap
from service.errors import NotFound
from service.redelivery import UNSENDABLE_WORDS, Choice, RedeliveryService
from service.store.base import (
    REDELIVERABLE,
    Attempt,
    DeliveryRecord,
    DeliveryStatus,
    EventRecord,
    ResponseStart,
    Watch,
    WatchFilter,
)
from service.subscriptions import SubscriptionService
from service.ui import words
from service.ui.images import final_image_urls
from service.watches import Counts, History, WatchService

PAGE_SIZE = 50
PAGE_SIZES = (20, 50, 100)  # the choices of the list's page size; PAGE_SIZE by default
CANCELLABLE = frozenset({"active", "delivering"})


@dataclass(frozen=True, slots=True)
class ListPage:
    watches: list[Watch]
    total: int  # of the watches the filters let through, every page together
    counts: Counts
    next_cursor: str | None
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Step:
    """One line of a watch's timeline; of an attempt, what it meant and what was answered."""

    at: float
    kind: Literal["registered", "event", "attempt", "ended"]
    title: str
    endpoint: str | None = None
    status_code: int | None = None
    duration_ms: float | None = None
    error: str | None = None
    ok: bool = True
    verdict: str | None = None
    response: ResponseStart | None = None
    series: int | None = None  # of an attempt: its delivery's series when it was made


@dataclass(frozen=True, slots=True)
class DeliveryLine:
    """A delivery of the watch: one event to one endpoint, and where its attempts stand."""

    id: str
    event_type: str
    endpoint: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: float | None  # while pending
    why: str | None  # why it ended, from its last attempt
    series: int
    final: bool
    state: str  # where its current series stands, in a sentence


@dataclass(frozen=True, slots=True)
class EndpointOption:
    """An endpoint a redelivery of the watch may send its final event to: a checkbox of its
    dialog and of its confirmation page, ticked when it can be sent and did not accept it."""

    key: str  # `callback`, or the subscription's id
    label: str  # what and where it is
    state: str  # where its latest series stands, in a sentence
    checked: bool
    unavailable: str | None  # why it cannot be chosen


@dataclass(frozen=True, slots=True)
class Sent:
    """The final event's body as sent (pretty-printed; None once purged) and the headers that
    went with it, secrets masked."""

    endpoint: str
    body: str | None
    headers: list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class StepTime:
    """One step of a watch's durations as its page says it: seconds, or why there are none."""

    key: str
    label: str
    between: str  # the two moments it is measured between
    seconds: float | None
    gap: str | None  # why there are no seconds, in words


@dataclass(frozen=True, slots=True)
class WatchPage:
    watch: Watch
    callback_url: str | None  # as `public_url` shows it
    metadata: str | None  # pretty-printed JSON
    timeline: list[Step]
    durations: list[StepTime]
    deliveries: list[DeliveryLine]
    max_attempts: int
    sent: Sent | None
    image_urls: list[str]  # of the final event
    endpoints: list[EndpointOption]  # of its final event, while it can be redelivered
    redelivered: str | None  # how its latest redelivery goes, in words
    can_redeliver: bool
    can_cancel: bool
    fingerprint: str


def pretty(body: bytes) -> str:
    try:
        return orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")


def _digest(data: Any) -> str:
    return hashlib.sha256(orjson.dumps(data)).hexdigest()[:32]


_ORDER = {"registered": 0, "event": 1, "attempt": 2, "ended": 3}


@dataclass(frozen=True, slots=True)
class Dashboard:
    watches: WatchService
    redelivery: RedeliveryService
    subscriptions: SubscriptionService

    async def list_page(
        self, tenant: str, filters: WatchFilter, cursor: str | None, size: int | None = None
    ) -> ListPage:
        page = await self.watches.list_page(tenant, filters, size or PAGE_SIZE, cursor)
        counts = await self.watches.counts(tenant)
        total = await self.watches.matching(tenant, filters)
        shown = [
            (w.id, w.status, w.outcome, w.job_status, w.queue_position, w.attempts, w.updated_at)
            for w in page.watches
        ]
        digest = _digest([total, counts.outcomes, counts.deliveries, shown])
        return ListPage(page.watches, total, counts, page.next_cursor, digest)

    async def watch_page(self, tenant: str, watch_id: str) -> WatchPage | None:
        history = await self._history(tenant, watch_id)
        if history is None:
            return None
        watch, recorded, attempts = history.watch, history.events, history.attempts
        deliveries, most = history.deliveries, self.watches.max_attempts
        steps = [Step(watch.created_at, "registered", "Registered")]
        steps += [_event_step(event) for event in recorded]
        steps += [_attempt_step(attempt, most) for attempt in attempts]
        if watch.status == "cancelled":
            ended = watch.completed_at or watch.updated_at
            steps.append(Step(ended, "ended", "Cancelled", ok=False))
        steps.sort(key=lambda step: (step.at, _ORDER[step.kind]))
        sent = await self._sent(tenant, watch, recorded, [d for d in deliveries if d.final])
        lines = [_line(d, attempts, most) for d in deliveries]
        can_redeliver = watch.status in REDELIVERABLE
        return WatchPage(
            watch=watch,
            callback_url=None if watch.callback_url is None else public_url(watch.callback_url),
            metadata=None if watch.metadata is None else pretty(orjson.dumps(watch.metadata)),
            timeline=steps,
            durations=step_times(history.durations, watch),
            deliveries=lines,
            max_attempts=most,
            sent=sent,
            image_urls=final_image_urls(recorded),
            endpoints=await self._endpoints(tenant, watch, lines) if can_redeliver else [],
            redelivered=_redelivered(lines),
            can_redeliver=can_redeliver,
            can_cancel=watch.status in CANCELLABLE,
            fingerprint=_watch_fingerprint(history),
        )

    async def _endpoints(
        self, tenant: str, watch: Watch, lines: Sequence[DeliveryLine]
    ) -> list[EndpointOption]:
        states = {line.id: line.state for line in lines}
        return [
            _option(choice, watch, states[choice.delivery.id])
            for choice in await self.redelivery.choices(tenant, watch.id)
        ]

    async def watch_fingerprint(self, tenant: str, watch_id: str) -> str | None:
        """What changes whenever the watch's page would (its status, events, attempts and
        deliveries)."""
        history = await self._history(tenant, watch_id)
        return None if history is None else _watch_fingerprint(history)

    async def _history(self, tenant: str, watch_id: str) -> History | None:
        try:
            return await self.watches.history(tenant, watch_id)
        except NotFound:
            return None

    async def _sent(
        self,
        tenant: str,
        watch: Watch,
        recorded: list[EventRecord],
        deliveries: list[DeliveryRecord],
    ) -> Sent | None:
        """The final event as the watch's callback got it (`deliveries`: the final event's);
        without a callback, as its first subscription got it; without either, as API clients
        read it."""
        own = next((d for d in deliveries if d.subscription_id is None), None)
        if own is not None and watch.callback_url is not None:
            headers = [(name, MASK) for name in watch.callback_headers]
            if "@" in urlsplit(watch.callback_url).netloc:  # credentials in the URL
                headers.append(("authorization", MASK))
            return Sent(
                f"{watch.callback_method} {public_url(watch.callback_url)}",
                None if own.body is None else pretty(own.body),
                headers + _standard_headers(own),
            )
        if deliveries:
            first = deliveries[0]
            assert first.subscription_id is not None
            try:
                subscription = await self.subscriptions.get(tenant, first.subscription_id)
            except NotFound:
                subscription = None
            names = [] if subscription is None else list(subscription.headers)
            url = "" if subscription is None else f" {public_url(subscription.url)}"
            return Sent(
                f"POST{url} (subscription {first.subscription_id})",
                None if first.body is None else pretty(first.body),
                [(name, MASK) for name in names] + _standard_headers(first),
            )
        final = next((event for event in recorded if event.final), None)
        if final is None:
            return None
        return Sent("no endpoint: read through the event API", pretty(final.body), [])

    async def redeliver(self, tenant: str, watch_id: str, endpoints: Sequence[str]) -> str:
        """Send the final event again to `endpoints`; what started, in a sentence."""
        done = await self.redelivery.redeliver(tenant, watch_id, endpoints)
        sent = ", ".join(
            f"{delivery.endpoint} (series {delivery.series})" for delivery in done.deliveries
        )
        return f"Redelivery started to {sent}."


_GAPS: dict[Gap, str] = {
    "waiting": "Not yet",
    "unseen": "Not seen: no poll saw the job processing",
    "purged": "No longer known: its events were purged after delivery.payload_retention_days",
}


def step_times(durations: Durations, watch: Watch) -> list[StepTime]:
    """The watch page's durations, each gap said in words that fit its step and the watch."""
    if watch.callback_url is None:
        undelivered = "None: the watch has no callback"
    elif watch.status == "completed":
        undelivered = "None: its callback did not ask for the final event"
    else:
        undelivered = "None: not delivered"
    ended = "None: cancelled first" if watch.status == "cancelled" else "None: polling ended first"
    steps = [
        ("queue", "Queue", "registered → seen processing", durations.queue, ended),
        ("processing", "Processing", "seen processing → final status seen",
         durations.processing, ended),
        ("delivery", "Time to deliver", "final status seen → webhook accepted",
         durations.delivery, undelivered),
    ]  # fmt: skip
    return [
        StepTime(key, label, between, span.seconds, _gap_words(span.gap, none))
        for key, label, between, span, none in steps
    ]


def _gap_words(gap: Gap | None, none: str) -> str | None:
    if gap is None:
        return None
    return none if gap == "none" else _GAPS[gap]


def _watch_fingerprint(history: History) -> str:
    watch, attempts = history.watch, history.attempts
    last = attempts[-1] if attempts else None
    return _digest(
        [
            watch.status, watch.outcome, watch.job_status, watch.queue_position, watch.attempts,
            watch.last_error, watch.updated_at, len(history.events), len(attempts),
            None if last is None else (last.delivery_id, last.number, last.started_at),
            [(d.id, d.status, d.series, d.attempts, d.next_attempt_at) for d in history.deliveries],
        ]
    )  # fmt: skip


def _attempt_step(attempt: Attempt, max_attempts: int) -> Step:
    code = attempt.status_code
    place = _capital(words.place(attempt.series, attempt.number, max_attempts))
    return Step(
        attempt.started_at,
        "attempt",
        f"{place}: {attempt.event_type}",
        endpoint=attempt.subscription_id or "callback",
        status_code=code,
        duration_ms=round(attempt.duration_s * 1000, 1),
        error=attempt.error,
        ok=attempt.error is None and code is not None and 200 <= code < 300,
        verdict=words.verdict(attempt, max_attempts),
        response=attempt.response,
        series=attempt.series,
    )


def _line(delivery: DeliveryRecord, attempts: Sequence[Attempt], max_attempts: int) -> DeliveryLine:
    """The delivery as the page lists it: why it ended is its last attempt's verdict."""
    last = next(
        (a for a in reversed(attempts)
         if a.delivery_id == delivery.id and a.series == delivery.series),
        None,
    )  # fmt: skip
    why = None
    if delivery.status == "cancelled":
        why = "Cancelled before it was delivered."
    elif delivery.status in ("failed", "gone") and last is not None:
        why = words.verdict(last, max_attempts)
    return DeliveryLine(
        delivery.id, delivery.event_type, delivery.endpoint, delivery.status,
        delivery.attempts, delivery.next_attempt_at, why, delivery.series, delivery.final,
        _state(delivery, last, why, max_attempts),
    )  # fmt: skip


def _state(
    delivery: DeliveryRecord, last: Attempt | None, why: str | None, max_attempts: int
) -> str:
    """Where the delivery's current series stands, in a sentence (`last`: its latest attempt)."""
    match delivery.status:
        case "succeeded":
            return "Delivered." if last is None else f"Delivered at {words.when(last.started_at)}."
        case "pending" if last is not None and delivery.next_attempt_at is not None:
            tried = _capital(words.place(delivery.series, last.number, max_attempts))
            return (
                f"{tried} failed ({_failure(last)}); the next at "
                f"{words.when(delivery.next_attempt_at)}."
            )
        case "pending":
            return "Being sent."
    return why or f"{words.DELIVERY_STATUS_LABELS[delivery.status]}."


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _failure(attempt: Attempt) -> str:
    return attempt.error or f"HTTP {attempt.status_code}"


def _redelivered(lines: Sequence[DeliveryLine]) -> str | None:
    """How the latest redelivery goes (the final deliveries in a series after the first), in
    words; None before any."""
    again = [line for line in lines if line.final and line.series > 1]
    if not again:
        return None
    said = " ".join(f"{line.endpoint}: {line.state}" for line in again)
    return f"Redelivery: {said}"


def _option(choice: Choice, watch: Watch, state: str) -> EndpointOption:
    why = None if choice.unsendable is None else UNSENDABLE_WORDS[choice.unsendable]
    return EndpointOption(
        choice.endpoint, _endpoint_label(choice, watch), state, choice.suggested, why
    )


def _endpoint_label(choice: Choice, watch: Watch) -> str:
    if choice.delivery.subscription_id is None:
        url = "" if watch.callback_url is None else f" {public_url(watch.callback_url)}"
        return f"The callback, {watch.callback_method}{url}"
    subscription = choice.subscription
    url = "" if subscription is None else f" {public_url(subscription.url)}"
    return f"Subscription {choice.delivery.subscription_id}{url}"


def _standard_headers(delivery: DeliveryRecord) -> list[tuple[str, str]]:
    return [
        ("content-type", "application/json"),
        ("user-agent", USER_AGENT),
        ("accept-encoding", "identity"),
        ("webhook-id", delivery.id),
        ("webhook-timestamp", "the time of each attempt, in Unix seconds"),
        ("webhook-signature", f"v1,{MASK}"),
    ]


def _event_step(event: EventRecord) -> Step:
    error = None
    try:
        envelope = orjson.loads(event.body)
    except orjson.JSONDecodeError:
        envelope = None
    if isinstance(envelope, dict) and isinstance(envelope.get("error"), str):
        error = envelope["error"]
    failed = event.type == "job.failed"
    return Step(event.created_at, "event", f"Upstream: {event.type}", error=error, ok=not failed)
