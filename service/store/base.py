"""The store contract: what every backend guarantees. Backends add no rules of their own: the
ones they all apply (fan-out, an attempt's outcome, redelivery, claims with shares) are decided
once in `rules`, and each backend reads, persists and locks around them.

Records
-------
A *watch* is one registration: poll one upstream job and record its events. An *event* is one
status change of the job (`job.queued`, `job.processing`, or the final `job.succeeded` or
`job.failed`); every event of every watch is kept, whatever the watch asked to be told, in the
order it was recorded (API clients read them back, see `list_events`).

A *subscription* is a tenant-wide endpoint: every event of every watch of its tenant whose type
it lists is addressed to it. A *delivery* is one event addressed to one endpoint: the watch's own
callback, when it has one and its `events` include the type, or a subscription. Its id is the
`webhook-id`, stable across every attempt and redelivery (one per event and endpoint). An
*attempt* is one HTTP request of a delivery. A delivery's attempts come in *series*: the first
series starts when it is recorded, each redelivery starts the next (`series` 2, 3, ...), and
attempts are numbered from 1 in each.

Watch statuses: `active` (polling) → `delivering` (final event recorded, its callback delivery
pending) → `delivered` | `failed` (attempts ran out) | `gone` (receiver answered 410). A watch
without a callback goes from `active` to `completed` when its final event is recorded. `active`
and `delivering` watches may become `cancelled`. `delivered`, `failed` and `gone` may go back to
`delivering` by a redelivery. A watch's status follows its own callback only: subscription
deliveries never change it.

A watch's `outcome` is how its job ended (`JobOutcome`): `in_progress` until its final event is
recorded, which decides it (`rules.job_outcome`), or `cancelled` when the watch is cancelled
before that. Its status and outcome together say what became of the final event's delivery to its
callback (`rules.delivery_state`). Its `attempts` counts every attempt of every one of its
deliveries, callback and subscriptions, every series: as many as `list_attempts` lists.

Subscription statuses: `active` ⇄ `disabled` (by its tenant); `active` | `disabled` → `deleted`
(by its tenant) | `gone` (it answered 410). Only an `active` subscription gets new deliveries;
leaving `active` cancels its pending ones (a re-enabled one gets the events recorded from then on).
A rotated subscription signs with its new secret and, until `previous_secret_until`, also with the
one before (`previous_secret` "" then stands for the shared signing secrets).

Leases
------
Work is claimed with a lease: an owner name, an expiry time and a *token* that grows by one at
each claim by another owner. A row whose lease has expired (or that has none) may be claimed by
anyone; a claim takes the lease away from a previous holder, whose token no longer matches. An
owner taking back its own lease that ran out (a store outage outlasted it, and nobody claimed
the row meanwhile) keeps the token: it still holds the work, and its writes under way still
count. A released lease has no owner, so claiming it again raises the token. Every write-back of
claimed work names the owner and token it was claimed with and is applied only when both still
match (*fencing*): otherwise it raises `LeaseLost` and changes nothing. So at most one holder
acts on a row at a time, and a stale holder's writes are rejected.

Polling writes only state changes: a lease is claimed once and renewed in bulk, and a poll
that saw nothing new writes nothing.

Times are wall-clock seconds since the epoch, passed in by the caller: the store never reads a
clock, so tests drive time explicitly.

Failures
--------
A call that fails raises `StoreError`. When the store cannot be used for now, rather than the
call being wrong, it is `StoreUnavailable`, whose message says why in one sentence: the store is
unreachable (connection refused or lost, a server shutting down, starting or out of
connections), or it answers but refuses writes (a full disk, a read-only file system or server,
an I/O error). Such a call may have been applied all the same when only its answer was lost
(a commit whose acknowledgement never came). Every call reports to the store's `health`
(`StoreHealth`): its `StoreUnavailable`, or its success and whether it wrote.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

from service.errors import LeaseLost

if TYPE_CHECKING:
    from service.store.health import StoreHealth

WatchStatus = Literal[
    "active", "delivering", "delivered", "failed", "cancelled", "gone", "completed"
]  # fmt: skip
WATCH_STATUSES: tuple[WatchStatus, ...] = get_args(WatchStatus)
REDELIVERABLE: frozenset[str] = frozenset({"delivered", "failed", "gone", "completed"})
# How a redelivery names the watch's own callback among its endpoints (the others by their
# subscription's id).
CALLBACK = "callback"

SubscriptionStatus = Literal["active", "disabled", "deleted", "gone"]

# How the job ended, as far as the bridge knows (`rules.job_outcome`): what the upstream said
# (`succeeded`, `failed`), or why the bridge ended it (`timed_out`, `not_found`,
# `unauthorized`, `bad_request`), or that it was `cancelled` before it ended; `in_progress`
# while polling. `unknown`: a job that ended before outcomes were kept, its final event purged.
JobOutcome = Literal[
    "in_progress", "succeeded", "failed", "timed_out", "not_found", "unauthorized",
    "bad_request", "cancelled", "unknown",
]  # fmt: skip
JOB_OUTCOMES: tuple[JobOutcome, ...] = get_args(JobOutcome)
# The state of the final event's delivery to the watch's own callback (`rules.delivery_state`):
# `none` while there is nothing to send, or nothing to send it to.
DeliveryState = Literal["none", "pending", "delivered", "failed", "cancelled"]
DELIVERY_STATES: tuple[DeliveryState, ...] = get_args(DeliveryState)

DeliveryStatus = Literal["pending", "succeeded", "failed", "gone", "cancelled"]
# What one attempt's outcome does to its delivery: try again later, or end it.
AttemptOutcome = Literal["retry", "succeeded", "failed", "gone"]
# What the deliverer made of one attempt's answer: `failed` told apart by why the retries
# stopped (the status is final for the endpoint, or the schedule ran out).
AttemptVerdict = Literal["succeeded", "retry", "gone", "final_status", "exhausted"]


@dataclass(frozen=True, slots=True)
class Watch:
    id: str
    tenant: str
    job_id: str
    callback_url: str | None  # None: no callback of its own (subscriptions and API clients only)
    callback_method: str
    callback_headers: dict[str, str]
    metadata: dict[str, Any] | None
    events: tuple[str, ...]
    payload_format: str
    secret: str
    poll_interval_s: float
    timeout_s: float
    upstream_api_key: str | None
    created_at: float
    status: WatchStatus = "active"
    job_status: str | None = None
    queue_position: int | None = None
    attempts: int = 0
    last_error: str | None = None
    updated_at: float = 0.0
    completed_at: float | None = None
    next_poll_at: float = 0.0
    lease_token: int = 0
    # Receiver statuses that end the callback's retries as `failed` (besides 410 → `gone`).
    final_statuses: tuple[int, ...] = ()
    outcome: JobOutcome = "in_progress"
    # The upstream it polls, by its name in the settings.
    upstream: str = "default"

    @property
    def deadline_at(self) -> float:
        return self.created_at + self.timeout_s


@dataclass(frozen=True, slots=True)
class Idempotency:
    """A registration's `Idempotency-Key`, the hash of its body and the response it got."""

    key: str
    request_hash: str
    response: bytes


@dataclass(frozen=True, slots=True)
class Subscription:
    """A tenant-wide endpoint. `secret` and the `headers` values are sealed by the caller
    (`secret` "" signs with the shared signing secrets); `url` may carry credentials."""

    id: str
    tenant: str
    url: str
    events: tuple[str, ...]
    secret: str
    headers: dict[str, str]
    final_statuses: tuple[int, ...]
    status: SubscriptionStatus
    created_at: float
    updated_at: float
    # After a rotation: the secret before (sealed, "" for the shared ones) and until when it
    # also signs; None when there was no rotation or it is over.
    previous_secret: str = ""
    previous_secret_until: float | None = None


@dataclass(frozen=True, slots=True)
class SubscriptionHealth:
    """How a subscription's attempts went since a time: how many, how many got a 2xx, and the
    latest that did not (its time and what went wrong: the error, else the status code)."""

    attempts: int
    succeeded: int
    last_error_at: float | None = None
    last_error: str | None = None
    last_status_code: int | None = None


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """The watch's own callback delivery of an event."""

    id: str
    event_type: str
    body: bytes
    final: bool


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to record. `body` is its envelope (what subscriptions and API clients get);
    `callback` is the watch's own delivery of it (its body in the watch's payload format), None
    when the watch has no callback or did not ask for this type. `error_code` is the envelope's
    (a `job.failed`'s reason), which decides the job's outcome."""

    id: str
    type: str
    final: bool
    body: bytes
    callback: NewDelivery | None
    error_code: str | None = None


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A recorded event, as API clients read it back: `body` is the envelope."""

    id: str
    watch_id: str
    type: str
    final: bool
    body: bytes
    created_at: float


@dataclass(frozen=True, slots=True)
class Delivery:
    """A delivery as claimed for sending, with what it takes to send it."""

    id: str
    watch_id: str
    event_type: str
    body: bytes
    final: bool
    attempts: int
    lease_token: int
    callback_url: str
    callback_method: str
    callback_headers: dict[str, str]
    secret: str
    # When the event happened (for a final event: when the upstream's ending was seen).
    created_at: float = 0.0
    # None: the watch's own callback. Else url, headers and secret are the subscription's,
    # and the method is POST.
    subscription_id: str | None = None
    event_id: str | None = None  # None for deliveries recorded before events were kept
    # Receiver statuses that end retries as `failed`: the watch's or the subscription's.
    final_statuses: tuple[int, ...] = ()
    # The watch's tenant: the key of the per-tenant delivery limit.
    tenant: str = ""
    # A rotated subscription's secret before, signing too until `previous_secret_until`.
    previous_secret: str = ""
    previous_secret_until: float | None = None
    series: int = 1  # its attempts' series: 1, then one more per redelivery


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """A delivery of a watch as its tenant reads it back (the dashboard): `body` is what was
    sent, None once purged."""

    id: str
    event_type: str
    final: bool
    status: DeliveryStatus
    attempts: int
    body: bytes | None
    created_at: float
    subscription_id: str | None = None  # None: the watch's own callback
    event_id: str | None = None
    next_attempt_at: float | None = None  # while pending: when it is due
    series: int = 1  # of its attempts: 1, then one more per redelivery

    @property
    def endpoint(self) -> str:
        """Its endpoint as a redelivery names it: its subscription's id, or `CALLBACK`."""
        return self.subscription_id or CALLBACK


@dataclass(frozen=True, slots=True)
class ResponseStart:
    """What is kept of a receiver's answer: the start of its body as text (None when it had
    none, or it is not UTF-8 text), how many bytes of it were read (at most
    `delivery.max_response_bytes`), whether it went on past them (or broke off before its
    end), and its Content-Type."""

    body: str | None
    size: int
    truncated: bool
    content_type: str | None


@dataclass(frozen=True, slots=True)
class Attempt:
    delivery_id: str
    event_type: str
    number: int
    started_at: float
    duration_s: float
    status_code: int | None
    error: str | None
    next_attempt_at: float | None = None
    subscription_id: str | None = None  # the endpoint: None for the watch's own callback
    # What the deliverer made of it (one of the verdicts of its record's outcome) and what the
    # receiver answered (None: no answer); None both for attempts recorded before they were kept.
    verdict: AttemptVerdict | None = None
    response: ResponseStart | None = None
    series: int = 1  # its delivery's series when it was made (`number` counts within it)


@dataclass(frozen=True, slots=True)
class Progress:
    """A state change seen by a poll, written back under the watch's lease."""

    watch_id: str
    lease_token: int
    job_status: str | None
    queue_position: int | None
    last_error: str | None
    next_poll_at: float
    events: Sequence[NewEvent] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Recorded:
    """What `Store.record_progress` did."""

    lost: set[str]  # the watches whose lease was lost: their changes were not applied
    deliveries: int  # the deliveries it created (pending, due at once, unclaimed)


@dataclass(frozen=True, slots=True)
class Completion:
    """The end of polling: the final event, committed before its first attempt."""

    watch_id: str
    lease_token: int
    job_status: str | None
    last_error: str | None
    event: NewEvent


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt's outcome to record, at `now` (see `Store.record_attempt`)."""

    delivery: Delivery
    attempt: Attempt
    outcome: AttemptOutcome
    now: float


@dataclass(frozen=True, slots=True)
class Redelivery:
    """What `Store.redeliver` did: the watch as it stands, and the final deliveries it started
    again (their ids), each in a new series."""

    watch: Watch
    restarted: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class OutcomeBucket:
    """What ended for a tenant in one span of time (see `Store.outcome_buckets`): its jobs by
    how they ended, its watches' webhooks by whether they were delivered, and the time their
    delivery took (None when none was delivered)."""

    start: float
    succeeded: int
    failed: int
    timed_out: int
    delivered: int
    undelivered: int
    latency_p50_s: float | None
    latency_p90_s: float | None


# scheme, then the authority's host and port after any userinfo (the last `@` of it).
_HOST = re.compile(r"^([^:/?#]+)://(?:[^/?#]*@)?([^@/?#]*)")


def callback_host(url: str) -> str:
    """The key of the per-host delivery limit: `scheme://host[:port]` of a callback URL as
    written, lower-cased, without userinfo (`https://u:p@API.example:8443/x` gives
    `https://api.example:8443`). The port is not filled in, so `https://h` and `https://h:443`
    are two keys. Each delivery keeps the key of its endpoint, computed when it is recorded."""
    found = _HOST.match(url)
    if found is None:
        return url.lower()
    return f"{found.group(1)}://{found.group(2)}".lower()


@dataclass(frozen=True, slots=True)
class WatchFilter:
    """Which of a tenant's watches a listing shows: each part given narrows it. `status`,
    `job_id`, `outcome`: the watches with that one. `delivery`: those whose
    `rules.delivery_state` of their status and outcome is it. `job_id_prefix`: job ids that
    start with it (byte for byte, case included). `metadata`: (key, value): a top-level
    metadata key (without a double quote or backslash) whose value is the string `value`, or a
    number equal to it when `value` writes a number (`rules.metadata_values`).
    `created_from` <= created_at < `created_to`. `upstream`: the watches of the upstream of
    that name, configured or not (any more)."""

    status: WatchStatus | None = None
    job_id: str | None = None
    outcome: JobOutcome | None = None
    delivery: DeliveryState | None = None
    job_id_prefix: str | None = None
    metadata: tuple[str, str] | None = None
    created_from: float | None = None
    created_to: float | None = None
    upstream: str | None = None


# No part given: every watch of the tenant.
EVERY_WATCH = WatchFilter()


@dataclass(frozen=True, slots=True)
class Shares:
    """The shares a claim was given (see `Store.claim_deliveries`): a host listed in
    `host_limits` has that share, any other `per_host`; likewise a tenant."""

    per_host: int
    host_limits: dict[str, int]
    per_tenant: int
    tenant_limits: dict[str, int]

    @classmethod
    def of(
        cls,
        limit: int,
        per_host: int | None,
        host_limits: Mapping[str, int] | None,
        per_tenant: int | None,
        tenant_limits: Mapping[str, int] | None,
    ) -> Shares | None:
        """The shares of a claim of `limit`, None when it was given none: without either of
        a pair, every share of that kind is `limit`."""
        if per_host is None and not host_limits and per_tenant is None and not tenant_limits:
            return None
        return cls(
            limit if per_host is None else per_host, dict(host_limits or {}),
            limit if per_tenant is None else per_tenant, dict(tenant_limits or {}),
        )  # fmt: skip

    def host(self, host: str) -> int:
        return self.host_limits.get(host, self.per_host)

    def tenant(self, tenant: str) -> int:
        return self.tenant_limits.get(tenant, self.per_tenant)


class Store(abc.ABC):
    """Durable state of watches, events, subscriptions, deliveries and attempts."""

    # Told of every call's outcome (see Failures above); one per store, given at construction.
    health: StoreHealth

    @abc.abstractmethod
    async def open(self, *, migrate: bool = True) -> None:
        """Connect and, unless told not to, bring the schema up to date (see `migrate`)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; the store may not be used afterwards."""

    @abc.abstractmethod
    async def migrate(self) -> list[int]:
        """Apply every schema migration not applied yet, in order; return their versions.

        Each migration is applied once, atomically, whatever the number of callers."""

    @abc.abstractmethod
    async def ping(self, *, write: bool = False) -> None:
        """Raise `StoreError` unless the store answers a trivial query; with `write`, unless it
        also commits a trivial write (a store refusing writes still answers queries)."""

    # Registration and reading, on behalf of API clients. `tenant` scopes every call: a watch
    # of another tenant does not exist for the caller.

    @abc.abstractmethod
    async def insert_watch(
        self,
        watch: Watch,
        idempotency: Idempotency | None = None,
        *,
        lease_owner: str | None = None,
        lease_until: float = 0.0,
        shared_key: bool = False,
        started: bool = False,
    ) -> Watch:
        """Commit a new watch; return it as stored.

        A job's *owner* is the tenant the bridge started it for with the shared upstream key
        (every tenant polls with that key, so the upstream cannot tell them apart). With
        `shared_key` (the watch polls with that key), the watch is refused when the job has
        another owner: nothing is written and `JobOfAnotherTenant` is raised, before any
        idempotency key is looked at. A job without an owner (started with a key of its own,
        or outside the bridge) may be watched by any tenant. With `started` (the bridge has
        just started the job for the watch's tenant with the shared key), the tenant is
        recorded as the job's owner in the same transaction as the watch, unless the job has
        an owner already (the first one stays); nothing is recorded when the watch is not.

        With `idempotency`, the key is recorded in the same transaction; if the tenant already
        used the key, nothing is written and `DuplicateIdempotencyKey` is raised.

        With `lease_owner`, the watch is committed already claimed by that owner until
        `lease_until` (token 1), so the registering process polls it without a claim round.

        Concurrent calls may be committed together (one transaction, one flush to disk), yet
        each succeeds or fails on its own: one call's error never fails or undoes another's,
        and a call returns only once its watch is committed.
        """

    @abc.abstractmethod
    async def find_idempotency(self, tenant: str, key: str) -> Idempotency | None:
        """The recorded registration that used `key`, if any."""

    @abc.abstractmethod
    async def get_watch(self, tenant: str, watch_id: str) -> Watch | None:
        """The watch, or None when it does not exist for this tenant."""

    @abc.abstractmethod
    async def list_watches(
        self,
        tenant: str,
        filters: WatchFilter = EVERY_WATCH,
        *,
        before_id: str | None = None,
        limit: int = 50,
    ) -> list[Watch]:
        """The watches `filters` let through, newest first (ids are time-ordered), those with
        an id below `before_id`."""

    @abc.abstractmethod
    async def count_matching(self, tenant: str, filters: WatchFilter = EVERY_WATCH) -> int:
        """How many of the tenant's watches `list_watches` with these filters would list,
        every page together."""

    @abc.abstractmethod
    async def cancel_watch(self, tenant: str, watch_id: str, now: float) -> Watch | None:
        """Cancel an `active` or `delivering` watch and its pending deliveries (to its callback
        and to subscriptions); release leases. Its queue position is forgotten, and an `active`
        watch's outcome becomes `cancelled` (a `delivering` one keeps its job's).

        Other statuses are left as they are (cancelling is idempotent). None when not found."""

    @abc.abstractmethod
    async def redeliver(
        self, tenant: str, watch_id: str, now: float, endpoints: Collection[str] | None = None
    ) -> Redelivery | None:
        """Start a new series of attempts of the final event of a `delivered`, `failed`, `gone`
        or `completed` watch to `endpoints` (`CALLBACK` and subscription ids; None: every
        one): of those, its ended final deliveries with a body to send, to its callback or to
        a subscription still `active` (`rules.redelivery`), become pending, due at `now`, with
        their attempt counts reset and their `series` one more (the watch's own count goes
        on) and the same ids, their leases released: an attempt of an earlier series still in
        flight is then refused (`LeaseLost`) even if its owner claims the new series, so it
        neither counts in nor ends the new one. A watch with a callback delivery made pending
        becomes `delivering`; a `completed` watch stays `completed`. Returns the watch and the
        ids started again: none, and the watch unchanged, when its status does not allow it or
        nothing chosen can be sent again (purged, pending still, or a watch that went `gone` on
        a progress event); None when not found."""

    @abc.abstractmethod
    async def retry_delivery(
        self, tenant: str, watch_id: str, delivery_id: str, now: float
    ) -> DeliveryRecord | None:
        """Make a pending delivery of the watch due at `now` (when it was due later), without
        changing its attempt count or its lease: an attempt in flight is recorded as usual.
        Returns the delivery as stored, unchanged when it is not pending; None when the watch
        does not exist for this tenant or has no such delivery."""

    @abc.abstractmethod
    async def list_attempts(self, tenant: str, watch_id: str) -> list[Attempt]:
        """Every attempt of every delivery of the watch (callback and subscriptions), oldest
        first."""

    @abc.abstractmethod
    async def watch_deliveries(self, tenant: str, watch_id: str) -> list[DeliveryRecord]:
        """Every delivery of the watch with its body as sent, oldest first; of one event, the
        callback's first, then the subscriptions' (oldest subscription first). Empty when the
        watch does not exist for this tenant."""

    # Polling, on behalf of the worker (leases, progress).

    @abc.abstractmethod
    async def claim_watches(
        self,
        owner: str,
        now: float,
        lease_until: float,
        limit: int,
        upstreams: Sequence[str] | None = None,
    ) -> list[Watch]:
        """Claim up to `limit` `active` watches whose lease is absent or expired at `now`,
        due or not, those due soonest first, and return them in that order; only those of
        `upstreams` when given (the ones this process polls). Each claim raises the token by
        one, unless `owner` holds the lease already (see Leases)."""

    @abc.abstractmethod
    async def renew_watch_leases(
        self, owner: str, held: Sequence[tuple[str, int]], lease_until: float
    ) -> set[str]:
        """Extend the leases of `held` (id, token) pairs that `owner` still holds on `active`
        watches; return the ids renewed. A watch missing from the answer was cancelled or
        taken over: its holder must stop polling it."""

    @abc.abstractmethod
    async def release_watches(self, owner: str, held: Sequence[tuple[str, int]]) -> None:
        """Give up leases so any process may claim the watches at once."""

    @abc.abstractmethod
    async def record_progress(
        self, owner: str, now: float, changes: Sequence[Progress]
    ) -> Recorded:
        """Apply each fenced change and record its events, in one transaction.

        Recording an event inserts it, its callback delivery if any, and one delivery (a new
        `msg_` id, the event's body) per `active` subscription of the watch's tenant whose
        `events` include the type. Deliveries are pending, due at `now`, unclaimed. An event
        already recorded (its id) is skipped with its deliveries: a change written again after
        a commit whose answer was lost is applied once.

        Returns the ids whose lease was lost (their changes were not applied) and how many
        deliveries were created (none: no claim is needed for them)."""

    @abc.abstractmethod
    async def complete_watch(
        self, owner: str, now: float, completion: Completion, delivery_lease_until: float
    ) -> list[Delivery]:
        """Fenced by the watch's lease: record the final state and the final event (as
        `record_progress` records events) and the job's outcome it decides
        (`rules.job_outcome`), release the watch's lease and make it `delivering`
        (it has a callback delivery) or `completed` (it has none). Every final delivery is
        due at `now` and claimed by `owner` until `delivery_lease_until`, so the caller
        attempts them at once; they are returned, the callback's first. Raises `LeaseLost`."""

    # Delivery, on behalf of the deliverer (delivery_leases).

    async def claim_deliveries(
        self,
        owner: str,
        now: float,
        lease_until: float,
        limit: int,
        *,
        per_host: int | None = None,
        host_limits: Mapping[str, int] | None = None,
        per_tenant: int | None = None,
        tenant_limits: Mapping[str, int] | None = None,
    ) -> list[Delivery]:
        """Claim up to `limit` pending deliveries due at `now` whose lease is absent or expired,
        oldest due first (then by id), and return them in that order.

        Shares: a delivery counts under its host (the `callback_host` key of its endpoint: the
        subscription's URL, else the watch's callback URL, as it was when the delivery was
        recorded) and under its tenant (its watch's). A host listed in `host_limits` has that
        share (0: its deliveries are left alone), any other `per_host`; likewise a tenant,
        with `tenant_limits` and `per_tenant`. Without either of a pair, every share of that
        kind is `limit`.

        With any share given, due deliveries are taken by *group* (one host and one tenant),
        and a list (of groups, then of deliveries), oldest first, is cut *within shares*: an
        item is kept when fewer than its host's share of the items before it are of its host,
        and likewise for its tenant; the first `limit` kept are taken. The groups whose host
        and tenant both have a share, by their oldest due delivery (then host, then tenant), are
        cut within shares; each group taken offers its oldest due deliveries (then by id), up to
        the smaller of its two shares; the deliveries offered, by due time (then id), are cut
        within shares and claimed. So a host or a tenant with a large backlog can neither take
        more than its share nor crowd the others out of a claim. Such a claim reads no row of a
        group left alone and at most `limit` due rows (past the leased ones) of each of at most
        `limit` groups: its cost grows with the number of groups that have pending deliveries
        (one index probe each), not with their backlogs."""
        shares = Shares.of(limit, per_host, host_limits, per_tenant, tenant_limits)
        return await self._claim_deliveries(owner, now, lease_until, limit, shares)

    @abc.abstractmethod
    async def _claim_deliveries(
        self, owner: str, now: float, lease_until: float, limit: int, shares: Shares | None
    ) -> list[Delivery]:
        """`claim_deliveries` with its shares, None when it was given none."""

    @abc.abstractmethod
    async def renew_delivery_leases(
        self, owner: str, held: Sequence[tuple[str, int]], lease_until: float
    ) -> set[str]:
        """Extend the leases of `held` (id, token) pending deliveries that `owner` still holds
        (their attempts are in flight); return the ids renewed."""

    @abc.abstractmethod
    async def release_deliveries(self, owner: str, held: Sequence[tuple[str, int]]) -> None:
        """Give up the leases of `held` (id, token) pending deliveries whose attempts were
        abandoned (a shutdown), so any process may attempt them at once."""

    async def record_attempt(
        self,
        owner: str,
        delivery: Delivery,
        attempt: Attempt,
        outcome: AttemptOutcome,
        now: float,
    ) -> None:
        """Fenced by the delivery's lease: log the attempt in the delivery's current series
        (whatever `attempt.series` says), count it, and either schedule the next one at
        `attempt.next_attempt_at` (`retry`) or end the delivery. The lease is released.
        Raises `LeaseLost`.

        Every attempt counts in its watch's `attempts` (and sets its `updated_at`); otherwise
        only the watch's own callback deliveries change the watch. An attempt of its final
        callback delivery, while the watch is `delivering`, becomes its `last_error` when it
        failed (a success leaves the last error as it was). Ending that delivery ends its watch
        (`delivered`, `failed` or `gone`); `gone` on any callback delivery cancels the watch's
        other pending callback deliveries and its polling.

        `gone` on a subscription delivery makes the subscription `gone` and cancels its
        pending deliveries (of every watch); the watch is left as it is."""
        if await self.record_attempts(owner, [AttemptRecord(delivery, attempt, outcome, now)]):
            raise LeaseLost()

    @abc.abstractmethod
    async def record_attempts(self, owner: str, records: Sequence[AttemptRecord]) -> set[str]:
        """`record_attempt` for each record, in order, in one transaction: all are committed
        together or none (`StoreError`). A record whose lease was lost changes nothing; the
        ids of those deliveries are returned instead of raising `LeaseLost`."""

    # Subscriptions, on behalf of API clients (scoped by `tenant` like watches).

    @abc.abstractmethod
    async def insert_subscription(self, subscription: Subscription) -> Subscription:
        """Commit a new subscription; return it as stored. Events recorded from then on are
        addressed to it; earlier ones are not."""

    @abc.abstractmethod
    async def list_subscriptions(self, tenant: str) -> list[Subscription]:
        """The tenant's `active` and `disabled` subscriptions, oldest first."""

    @abc.abstractmethod
    async def get_subscription(self, tenant: str, subscription_id: str) -> Subscription | None:
        """The subscription whatever its status, or None when it does not exist for this
        tenant."""

    async def delete_subscription(
        self, tenant: str, subscription_id: str, now: float
    ) -> Subscription | None:
        """Make an `active` or `disabled` subscription `deleted` and cancel its pending
        deliveries; return it as stored. None when not found or already ended."""
        return await self._change_subscription_status(tenant, subscription_id, "deleted", now)

    async def set_subscription_status(
        self, tenant: str, subscription_id: str, status: Literal["active", "disabled"], now: float
    ) -> Subscription | None:
        """Make an `active` or `disabled` subscription `status` (disabling cancels its pending
        deliveries); return it as stored. None when not found or ended."""
        return await self._change_subscription_status(tenant, subscription_id, status, now)

    @abc.abstractmethod
    async def _change_subscription_status(
        self, tenant: str, subscription_id: str, status: SubscriptionStatus, now: float
    ) -> Subscription | None:
        """Make an `active` or `disabled` subscription `status`, cancelling its pending
        deliveries unless it becomes `active`; return it as stored. None when not found or
        ended."""

    @abc.abstractmethod
    async def rotate_subscription_secret(
        self, tenant: str, subscription_id: str, secret: str, previous_until: float, now: float
    ) -> Subscription | None:
        """Give an `active` or `disabled` subscription the (sealed) `secret`; its secret before
        becomes `previous_secret`, signing too until `previous_until`. None when not found or
        ended."""

    @abc.abstractmethod
    async def subscription_health(self, tenant: str, since: float) -> dict[str, SubscriptionHealth]:
        """Per subscription of the tenant with attempts started at `since` or later, how they
        went."""

    # Events, on behalf of API clients.

    @abc.abstractmethod
    async def list_events(
        self, tenant: str, *, types: Sequence[str] | None = None, limit: int = 50
    ) -> list[EventRecord]:
        """The tenant's most recent events, newest first (the order they were recorded in),
        only those of `types` when given."""

    @abc.abstractmethod
    async def watch_events(
        self, tenant: str, watch_id: str, *, after: str | None = None
    ) -> list[EventRecord]:
        """The watch's events oldest first; with `after`, only those recorded after that
        event (all of them when `after` is not an event of this watch). Empty when the watch
        does not exist for this tenant."""

    # Trends, on behalf of the dashboard.

    @abc.abstractmethod
    async def outcome_buckets(
        self, tenant: str, since: float, bucket_s: float, count: int
    ) -> list[OutcomeBucket]:
        """What ended for the tenant in each of `count` consecutive buckets of `bucket_s`
        seconds from `since`, oldest first, every bucket present (zeros when nothing ended).
        A moment `t` is in bucket `floor((t - since) / bucket_s)`.

        - Jobs: each watch whose final event was recorded in the bucket, once, by its job's
          outcome: `succeeded`, `timed_out`, and every other ending counted as `failed`. A
          final event deleted by `purge_bodies` is no longer counted.
        - Webhooks: each final-event delivery to a watch's own callback that ended in the
          bucket (`ended_at`), once whatever its number of attempts: `delivered` when it
          succeeded, `undelivered` when it failed or was gone (a cancelled one is neither).
          A redelivered one counts where its latest series ended, or nowhere while pending.
        - Latency: of the delivered ones, the time from the final event to the delivery's end
          (`ended_at - created_at`); its 50th and 90th percentiles by nearest rank (the least
          of those times that at least 50 %, 90 % of them do not exceed), None without any.
        """

    # Dashboard sign-ins, on behalf of the dashboard. A sign-in is a signed cookie naming a
    # random session id; the store keeps only the ids signed out before their cookie expired.

    @abc.abstractmethod
    async def revoke_session(self, session_id: str, expires_at: float) -> None:
        """Record that the sign-in `session_id` ended; its cookie would have expired at
        `expires_at` (until then, a copy of it must be refused). Revoking it again changes
        nothing."""

    @abc.abstractmethod
    async def session_revoked(self, session_id: str) -> bool:
        """Whether the sign-in `session_id` was revoked (and not purged since)."""

    # Housekeeping.

    @abc.abstractmethod
    async def purge_revoked_sessions(self, now: float) -> int:
        """Forget the revoked sign-ins whose cookie has expired at `now` (`expires_at <= now`:
        no cookie naming them is accepted any more); return how many."""

    @abc.abstractmethod
    async def purge_bodies(self, completed_before: float) -> int:
        """Drop the stored bodies of succeeded or cancelled deliveries that ended before the
        given time (their attempt log stays); return how many. Events recorded before that
        time whose watch has ended (neither `active` nor `delivering`) are deleted too, and the
        text of the receivers' answers kept with attempts started before it (neither
        counted)."""

    @abc.abstractmethod
    async def count_due_deliveries(self, now: float) -> int:
        """Pending deliveries due at `now` that nobody holds a live lease on (the backlog)."""

    @abc.abstractmethod
    async def count_watches(self, tenant: str | None = None) -> dict[str, int]:
        """Watches per status (every status present, zero when none)."""

    @abc.abstractmethod
    async def count_active_by_upstream(self) -> dict[str, int]:
        """Every tenant's `active` watches per upstream name, the names that have any."""

    @abc.abstractmethod
    async def count_outcomes(self, tenant: str) -> dict[tuple[WatchStatus, JobOutcome], int]:
        """The tenant's watches per (status, outcome), the pairs that have any."""


class DuplicateIdempotencyKey(Exception):
    """The tenant already used this Idempotency-Key (internal signal to the service layer)."""


class JobOfAnotherTenant(Exception):
    """Another tenant started this job with the shared upstream key (internal signal to the
    service layer)."""
