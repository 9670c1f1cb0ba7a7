"""The service layer: registering, reading and cancelling watches, and retrying a pending
delivery at once (redelivering them: `service.redelivery`).

HTTP handlers and the dashboard call only this; it owns every store call made on a client's
behalf. It takes what a client asked for as its own records (`WatchOptions`), returns the
store's records (`Watch`, `Attempt`, ...) or its own (`Registered`), and refuses with the
errors of `service.errors`.
"""

from __future__ import annotations

import dataclasses
import hmac
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from service import events, ssrf
from service.clock import Clock
from service.config import DEFAULT_UPSTREAM, Settings
from service.delivery import Deliverer
from service.durations import Durations, measure
from service.errors import Conflict, InvalidRequest, NotFound
from service.ids import new_id
from service.pollers import Pollers
from service.signing import endpoint_secret
from service.store import rules
from service.store.base import (
    DELIVERY_STATES,
    JOB_OUTCOMES,
    WATCH_STATUSES,
    Attempt,
    DeliveryRecord,
    DeliveryState,
    DuplicateIdempotencyKey,
    EventRecord,
    Idempotency,
    JobOfAnotherTenant,
    JobOutcome,
    OutcomeBucket,
    Store,
    Watch,
    WatchFilter,
)
from service.vault import Vault

log = structlog.get_logger("service.watches")
# The dashboard's trends: what ended in each UTC hour of the last day, the current hour last.
TREND_BUCKET_S = 3600.0
TREND_BUCKETS = 24
# The W3C trace context header: a registration's request's goes on with its webhooks.
TRACEPARENT = "traceparent"


@dataclass(frozen=True, slots=True)
class WatchOptions:
    """What a watch is asked to do, whatever names its job: each field as the API names it,
    already valid on its own (the HTTP layer's request models check each); `check` judges
    them against the settings and the callback's address."""

    callback_url: str | None = None
    callback_method: str = "POST"
    callback_headers: Mapping[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] | None = None
    events: Sequence[str] = events.FINAL_EVENTS
    payload_format: str = "envelope"
    secret: str | None = None
    poll_interval_s: float | None = None
    timeout_s: float | None = None
    upstream_api_key: str | None = None
    final_statuses: Sequence[int] = ()
    upstream: str = DEFAULT_UPSTREAM


@dataclass(frozen=True, slots=True)
class Checked:
    """Options that passed `WatchService.check`, with the poll interval and timeout to use."""

    options: WatchOptions
    poll_interval_s: float
    timeout_s: float


@dataclass(frozen=True, slots=True)
class Registration:
    """A new watch as committed, with its signing secret in clear (shown this once; None when
    the configured signing secrets sign for it, or it has no callback), and, when the bridge
    started its job (`POST /v1/generate`), the upstream's answer."""

    watch: Watch
    secret: str | None
    upstream: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Registered:
    """What a registration call answers: the registration it made, or None when it replays a
    retried call, and the answer rendered for it (`render`), kept under the Idempotency-Key
    so that a replay answers exactly what the first call did."""

    answer: bytes
    registration: Registration | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """A page of watches, newest first, and the cursor of the next one (None: the last)."""

    watches: list[Watch]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Counts:
    """A tenant's watches per status, per job outcome and per delivery state, every key
    present."""

    statuses: dict[str, int]
    outcomes: dict[JobOutcome, int]
    deliveries: dict[DeliveryState, int]


@dataclass(frozen=True, slots=True)
class History:
    """A watch with its events, its delivery attempts and its deliveries, oldest first."""

    watch: Watch
    events: list[EventRecord]
    attempts: list[Attempt]
    deliveries: list[DeliveryRecord]

    @property
    def durations(self) -> Durations:
        """How long its queue, processing and delivery took (`durations.measure`)."""
        return measure(self.watch, self.events, self.attempts)


def canonical(options: WatchOptions, namespace: bytes = b"", **named: Any) -> bytes:
    """The request as the bytes its Idempotency-Key records: the options and the `named`
    fields of its endpoint (`job_id`, or `input`), keys sorted, so that the same request in
    another order is the same; `namespace` tells endpoints apart. Stored keys hold a digest
    of these bytes: they must not change (so the default upstream, which requests named before
    there were several, is left out)."""
    fields = dataclasses.asdict(options) | named
    if fields["upstream"] == DEFAULT_UPSTREAM:
        del fields["upstream"]
    return namespace + orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)


class WatchService:
    def __init__(
        self,
        store: Store,
        poller: Pollers,
        deliverer: Deliverer,
        owner: str,
        settings: Settings,
        clock: Clock,
        render: Callable[[Registration], bytes],
        vault: Vault | None = None,
        resolve: ssrf.Resolve | None = None,
    ) -> None:
        self._store = store
        self._vault = vault or Vault([])
        # New watches are polled at once by this process, which holds their lease (`owner`).
        self._poller = poller
        self._owner = owner
        self._deliverer = deliverer
        self._settings = settings
        self._clock = clock
        # The HTTP layer's answer to a registration: what an Idempotency-Key keeps.
        self._render = render
        self._resolve = resolve
        self._policy = settings.security.callback_policy()

    async def register(
        self,
        tenant: str,
        job_id: str,
        options: WatchOptions,
        idempotency_key: str | None = None,
        traceparent: str | None = None,
    ) -> Registered:
        """Check, commit, and start polling at once; or replay a retried call's answer."""
        request = b""
        # Only a call with an Idempotency-Key needs its request recorded (to tell a retry from
        # a new body under the same key).
        if idempotency_key is not None:
            request = canonical(options, job_id=job_id)
            replay = await self.replay(tenant, idempotency_key, request)
            if replay is not None:
                return replay
        checked = await self.check(options)
        return await self.commit(tenant, job_id, checked, idempotency_key, request, traceparent)

    async def commit(
        self,
        tenant: str,
        job_id: str,
        checked: Checked,
        idempotency_key: str | None,
        request: bytes,
        traceparent: str | None = None,
        upstream: dict[str, Any] | None = None,
    ) -> Registered:
        """Commit a checked registration and start polling at once; `request` is what the
        Idempotency-Key records (`canonical`). With `upstream`, the answer of the upstream
        that just started the job for this tenant (`POST /v1/generate`): with the shared
        upstream key, the tenant is then recorded as the job's owner, and another tenant's
        watch of it with that key is a `NotFound` (`Store.insert_watch`)."""
        options = checked.options
        now = self._clock.now()
        seal = self._vault.seal
        headers = dict(options.callback_headers)
        callback = options.callback_url
        if callback and traceparent and TRACEPARENT not in {name.lower() for name in headers}:
            headers[TRACEPARENT] = traceparent  # the caller's trace goes on in the webhook
        # Without its own secret a watch is signed with the configured signing secrets, if any
        # (stored as ""), else with one generated for it. A watch without a callback signs
        # nothing (subscriptions have their own secrets).
        shared = bool(self._settings.delivery.signing_secrets)
        secret = "" if callback is None else endpoint_secret(options.secret, shared)
        watch = Watch(
            id=new_id("wch", now),
            tenant=tenant,
            job_id=job_id,
            callback_url=options.callback_url,
            callback_method=options.callback_method,
            callback_headers={k: seal(v) for k, v in headers.items()},
            metadata=options.metadata,
            events=tuple(options.events),
            payload_format=options.payload_format,
            secret=seal(secret) if secret else "",
            poll_interval_s=checked.poll_interval_s,
            timeout_s=checked.timeout_s,
            upstream_api_key=None
            if options.upstream_api_key is None
            else seal(options.upstream_api_key),
            created_at=now,
            updated_at=now,
            next_poll_at=now,
            final_statuses=tuple(options.final_statuses),
            upstream=options.upstream,
        )
        registration = Registration(watch, secret or None, upstream)
        answer = self._render(registration)
        idempotency = None
        if idempotency_key:  # its answer holds the secret, so it is sealed like the secret
            fingerprint = self._vault.fingerprint(request)
            idempotency = Idempotency(idempotency_key, fingerprint, seal(answer.decode()).encode())
        lease_until = now + self._settings.store.lease_s
        shared = self._shared_key(options.upstream, options.upstream_api_key)
        try:
            stored = await self._store.insert_watch(
                watch, idempotency, lease_owner=self._owner, lease_until=lease_until,
                shared_key=shared, started=upstream is not None and shared,
            )  # fmt: skip
        except JobOfAnotherTenant:
            # A 404, as for another tenant's watch: nothing says whose the job is.
            log.info("watch.refused_job_of_another_tenant", job_id=watch.job_id)
            raise NotFound(
                f"no job {watch.job_id} for this token: a job started through POST /v1/generate "
                "with the bridge's upstream key can be watched only with the API token that "
                "started it; check the job id"
            ) from None
        except DuplicateIdempotencyKey:
            assert idempotency_key is not None  # raised only with a key
            replay = await self.replay(tenant, idempotency_key, request)
            assert replay is not None  # the key's row exists: it made this insert fail
            return replay
        self._poller.adopt(stored)
        log.info("watch.registered", watch_id=watch.id, job_id=watch.job_id)
        return Registered(answer, registration)

    def _shared_key(self, upstream: str, key: str | None) -> bool:
        """Whether a watch of `upstream` with this `upstream_api_key` polls with the configured
        key, which every tenant shares (the upstream cannot tell them apart)."""
        if key is None:
            return True
        configured = self._settings.upstream_named(upstream)[0].bridge_key
        return configured is not None and hmac.compare_digest(key.encode(), configured.encode())

    async def check(self, options: WatchOptions) -> Checked:
        """Refuse (`InvalidRequest`) what the request alone cannot judge: the intervals against
        the settings, a per-watch key without an encryption key, where the callback points."""
        names = self._settings.upstream_names
        if options.upstream not in names:
            raise InvalidRequest.field(
                "upstream",
                f"no upstream is named {options.upstream!r}; the configured ones are "
                f"{', '.join(names)}",
            )
        poll = self._settings.upstream_named(options.upstream)[1]
        interval = poll.interval_s if options.poll_interval_s is None else options.poll_interval_s
        timeout = poll.timeout_s if options.timeout_s is None else options.timeout_s
        if not poll.min_interval_s <= interval <= poll.max_interval_s:
            raise InvalidRequest.field(
                "poll_interval_s",
                f"must be between {poll.min_interval_s:g} and {poll.max_interval_s:g} seconds",
            )
        if not 0 < timeout <= poll.max_timeout_s:
            raise InvalidRequest.field(
                "timeout_s", f"must be above 0 and at most {poll.max_timeout_s:g}"
            )
        if options.upstream_api_key is not None and not self._vault.enabled:
            raise InvalidRequest.field(
                "upstream_api_key",
                "per-watch API keys are stored encrypted and security.encryption_key is not "
                "set; set it, or leave this field out to use the configured upstream.api_key",
            )
        if options.callback_url is not None:
            await ssrf.check_field(
                "callback_url", options.callback_url, self._policy, self._resolve
            )
        return Checked(options, interval, timeout)

    async def replay(self, tenant: str, key: str, request: bytes) -> Registered | None:
        """The answer recorded under `key` for this same request (`canonical`), None when
        there is none; `Conflict` when the key was used with another request."""
        earlier = await self._store.find_idempotency(tenant, key)
        if earlier is None:
            return None
        if not self._vault.matches(earlier.request_hash, request):
            raise Conflict(
                "this Idempotency-Key was already used with a different body; "
                "use a new key for a new registration"
            )
        return Registered(self._vault.open(earlier.response.decode()).encode())

    async def get(self, tenant: str, watch_id: str) -> Watch:
        watch = await self._store.get_watch(tenant, watch_id)
        if watch is None:
            raise NotFound(f"no watch {watch_id}")
        return watch

    @property
    def max_attempts(self) -> int:
        """The attempts of a series of one delivery: the first, then one per wait of the
        retry schedule."""
        return 1 + len(self._settings.delivery.retry_schedule_s)

    async def list_page(
        self, tenant: str, filters: WatchFilter, limit: int, cursor: str | None
    ) -> Page:
        """The tenant's watches newest first, after `cursor`, those `filters` let through
        (each part already valid: the HTTP layer checks them)."""
        found = await self._store.list_watches(tenant, filters, before_id=cursor, limit=limit + 1)
        page = found[:limit]
        return Page(page, page[-1].id if len(found) > limit else None)

    async def matching(self, tenant: str, filters: WatchFilter) -> int:
        """How many of the tenant's watches `filters` let through, every page together."""
        return await self._store.count_matching(tenant, filters)

    async def counts(self, tenant: str) -> Counts:
        """The tenant's watches per status, job outcome and delivery state."""
        pairs = await self._store.count_outcomes(tenant)
        counts = Counts(
            dict.fromkeys(WATCH_STATUSES, 0),
            dict.fromkeys(JOB_OUTCOMES, 0),
            dict.fromkeys(DELIVERY_STATES, 0),
        )
        for (status, outcome), n in pairs.items():
            counts.statuses[status] += n
            counts.outcomes[outcome] += n
            counts.deliveries[rules.delivery_state(status, outcome)] += n
        return counts

    async def trend(self, tenant: str) -> list[OutcomeBucket]:
        """What ended for the tenant in each hour of the last day (`TREND_BUCKETS` UTC hours,
        the current one last), read from the store: the same on every replica."""
        hour = math.floor(self._clock.now() / TREND_BUCKET_S)
        since = (hour - TREND_BUCKETS + 1) * TREND_BUCKET_S
        return await self._store.outcome_buckets(tenant, since, TREND_BUCKET_S, TREND_BUCKETS)

    async def cancel(self, tenant: str, watch_id: str) -> Watch:
        watch = await self._store.cancel_watch(tenant, watch_id, self._clock.now())
        if watch is None:
            raise NotFound(f"no watch {watch_id}")
        self._poller.forget(watch_id)
        log.info("watch.cancelled", watch_id=watch_id, status=watch.status)
        return watch

    async def attempts(self, tenant: str, watch_id: str) -> list[Attempt]:
        await self.get(tenant, watch_id)
        return await self._store.list_attempts(tenant, watch_id)

    async def timed(self, tenant: str, watch_id: str) -> tuple[Watch, Durations]:
        """The watch and how long its steps took (`NotFound` when there is no such watch)."""
        watch = await self.get(tenant, watch_id)
        recorded = await self._store.watch_events(tenant, watch_id)
        return watch, measure(watch, recorded, await self._store.list_attempts(tenant, watch_id))

    async def history(self, tenant: str, watch_id: str) -> History:
        """The watch, its events, its attempts and its deliveries (`NotFound` when there is no
        such watch)."""
        watch = await self.get(tenant, watch_id)
        recorded = await self._store.watch_events(tenant, watch_id)
        attempts = await self._store.list_attempts(tenant, watch_id)
        return History(
            watch, recorded, attempts, await self._store.watch_deliveries(tenant, watch_id)
        )

    async def deliveries(self, tenant: str, watch_id: str) -> list[DeliveryRecord]:
        """Every delivery of the watch, oldest first (`NotFound` when there is no such watch)."""
        await self.get(tenant, watch_id)
        return await self._store.watch_deliveries(tenant, watch_id)

    async def retry(self, tenant: str, watch_id: str, delivery_id: str) -> DeliveryRecord:
        """Make a pending delivery of the watch due now, and claim it at once: its next
        attempt is made without waiting for the schedule (which goes on from it). `Conflict`
        when it is not pending."""
        found = await self._store.retry_delivery(tenant, watch_id, delivery_id, self._clock.now())
        if found is None:
            await self.get(tenant, watch_id)
            raise NotFound(f"no delivery {delivery_id} of watch {watch_id}")
        if found.status != "pending":
            again = (
                "; redeliver the watch to send its final event again"
                if found.final and found.status in ("succeeded", "failed", "gone")
                else ""
            )
            raise Conflict(
                f"delivery {delivery_id} is {found.status}, not pending: there is no next "
                f"attempt to make now{again}"
            )
        await self._deliverer.claim()
        log.info("delivery.retried", watch_id=watch_id, webhook_id=delivery_id)
        return found

    async def final_deliveries(self, tenant: str, watch_id: str) -> list[DeliveryRecord]:
        """The deliveries of the watch's final event with their bodies as sent (None once
        purged): the callback's first, then the subscriptions'."""
        found = await self._store.watch_deliveries(tenant, watch_id)
        return [delivery for delivery in found if delivery.final]
