"""The store contract: what every backend guarantees. Backends add no rules of their own.

Records
-------
A *watch* is one registration: poll one upstream job, deliver its events to one callback.
A *delivery* is one event of one watch addressed to its callback; its id is the `webhook-id`,
stable across every attempt and redelivery. An *attempt* is one HTTP request of a delivery.

Watch statuses: `active` (polling) → `delivering` (final event recorded, delivery pending) →
`delivered` | `failed` (attempts ran out) | `gone` (receiver answered 410). `active` and
`delivering` watches may become `cancelled`. `delivered`, `failed` and `gone` may go back to
`delivering` by a redelivery.

Leases
------
Work is claimed with a lease: an owner name, an expiry time and a *token* that grows by one at
each claim. A row whose lease has expired (or that has none) may be claimed by anyone; a claim
takes the lease away from a previous holder, whose token no longer matches. Every write-back of
claimed work names the owner and token it was claimed with and is applied only when both still
match (*fencing*): otherwise it raises `LeaseLost` and changes nothing. So at most one holder
acts on a row at a time, and a stale holder's writes are rejected.

Polling writes only state changes: a lease is claimed once and renewed in bulk, and a poll
that saw nothing new writes nothing.

Times are wall-clock seconds since the epoch, passed in by the caller: the store never reads a
clock, so tests drive time explicitly.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

WatchStatus = Literal["active", "delivering", "delivered", "failed", "cancelled", "gone"]
WATCH_STATUSES: tuple[WatchStatus, ...] = (
    "active", "delivering", "delivered", "failed", "cancelled", "gone",
)  # fmt: skip
REDELIVERABLE: frozenset[str] = frozenset({"delivered", "failed", "gone"})

DeliveryStatus = Literal["pending", "succeeded", "failed", "gone", "cancelled"]
# What one attempt's outcome does to its delivery: try again later, or end it.
AttemptOutcome = Literal["retry", "succeeded", "failed", "gone"]


@dataclass(frozen=True, slots=True)
class Watch:
    id: str
    tenant: str
    job_id: str
    callback_url: str
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
class NewDelivery:
    id: str
    event_type: str
    body: bytes
    final: bool


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


@dataclass(frozen=True, slots=True)
class Progress:
    """A state change seen by a poll, written back under the watch's lease."""

    watch_id: str
    lease_token: int
    job_status: str | None
    queue_position: int | None
    last_error: str | None
    next_poll_at: float
    deliveries: Sequence[NewDelivery] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Completion:
    """The end of polling: the final event, committed before its first attempt."""

    watch_id: str
    lease_token: int
    job_status: str | None
    last_error: str | None
    delivery: NewDelivery


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt's outcome to record, at `now` (see `Store.record_attempt`)."""

    delivery: Delivery
    attempt: Attempt
    outcome: AttemptOutcome
    now: float


# scheme, then the authority's host and port after any userinfo (the last `@` of it).
_HOST = re.compile(r"^([^:/?#]+)://(?:[^/?#]*@)?([^@/?#]*)")
# The same in PostgreSQL's regular expressions, over `w.callback_url`: both must agree.
HOST_SQL_PG = (
    "lower(substring(w.callback_url from '^([^:/?#]+)://') || '://'"
    " || substring(w.callback_url from '^[^:/?#]+://(?:[^/?#]*@)?([^@/?#]*)'))"
)


def callback_host(url: str) -> str:
    """The key of the per-host delivery limit: `scheme://host[:port]` of a callback URL as
    written, lower-cased, without userinfo (`https://u:p@API.example:8443/x` gives
    `https://api.example:8443`). The port is not filled in, so `https://h` and `https://h:443`
    are two keys. Backends compute the same key in SQL."""
    found = _HOST.match(url)
    if found is None:
        return url.lower()
    return f"{found.group(1)}://{found.group(2)}".lower()


class Store(abc.ABC):
    """Durable state of watches, deliveries and attempts."""

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
    async def ping(self) -> None:
        """Raise `StoreError` unless the store answers a trivial query."""

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
    ) -> Watch:
        """Commit a new watch; return it as stored.

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
        *,
        status: str | None = None,
        job_id: str | None = None,
        before_id: str | None = None,
        limit: int = 50,
    ) -> list[Watch]:
        """Watches newest first (ids are time-ordered), those with an id below `before_id`."""

    @abc.abstractmethod
    async def cancel_watch(self, tenant: str, watch_id: str, now: float) -> Watch | None:
        """Cancel an `active` or `delivering` watch and its pending deliveries; release leases.

        Other statuses are left as they are (cancelling is idempotent). None when not found."""

    @abc.abstractmethod
    async def redeliver(self, tenant: str, watch_id: str, now: float) -> Watch | None:
        """Start a new series of attempts of the final event of a `delivered`, `failed` or
        `gone` watch: its delivery becomes pending, due at `now`, with its attempt count reset
        and the same id. The watch becomes `delivering`. Returns the watch, unchanged when its
        status does not allow it or when there is no final delivery body to send (purged, or a
        watch that went `gone` on a progress event); None when not found."""

    @abc.abstractmethod
    async def list_attempts(self, tenant: str, watch_id: str) -> list[Attempt]:
        """Every attempt of every delivery of the watch, oldest first."""

    # Polling, on behalf of the dispatcher.

    @abc.abstractmethod
    async def claim_watches(
        self, owner: str, now: float, lease_until: float, limit: int
    ) -> list[Watch]:
        """Claim up to `limit` `active` watches whose lease is absent or expired at `now`,
        due or not, those due soonest first, and return them in that order. Each claim raises
        the token by one."""

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
    ) -> set[str]:
        """Apply each fenced change and insert its progress deliveries, in one transaction.

        Returns the ids whose lease was lost (their changes were not applied)."""

    @abc.abstractmethod
    async def complete_watch(
        self, owner: str, now: float, completion: Completion, delivery_lease_until: float
    ) -> Delivery:
        """Fenced by the watch's lease: record the final state, make the watch `delivering`,
        release its lease and insert the final delivery, due at `now` and claimed by `owner`
        until `delivery_lease_until` so the caller attempts it at once. Raises `LeaseLost`."""

    # Delivery, on behalf of the dispatcher.

    @abc.abstractmethod
    async def claim_deliveries(
        self,
        owner: str,
        now: float,
        lease_until: float,
        limit: int,
        *,
        per_host: int | None = None,
        host_limits: Mapping[str, int] | None = None,
    ) -> list[Delivery]:
        """Claim up to `limit` pending deliveries due at `now` whose lease is absent or expired,
        oldest due first, and return them in that order.

        Per host (the `callback_host` key of the watch's callback URL), at most
        `host_limits[host]` are claimed for a host listed there (0: its deliveries are left
        alone) and at most `per_host` for any other, so a host with a large backlog cannot
        crowd the others out of a claim. With either, the choice is made among the `4 * limit`
        oldest due candidates of the hosts not left alone (the cost of a claim stays bounded
        by `limit`, apart from skipping the rows of hosts left alone): a host may get fewer
        than its limit, never more."""

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

    @abc.abstractmethod
    async def record_attempt(
        self,
        owner: str,
        delivery: Delivery,
        attempt: Attempt,
        outcome: AttemptOutcome,
        now: float,
    ) -> None:
        """Fenced by the delivery's lease: log the attempt, count it, and either schedule the
        next one at `attempt.next_attempt_at` (`retry`) or end the delivery. An attempt of the
        final delivery counts in the watch's `attempts` and, when it failed, becomes its
        `last_error` (a success leaves the last error as it was). Ending the final
        delivery ends its watch (`delivered`, `failed` or `gone`); `gone` on any delivery
        cancels the watch's other pending deliveries and its polling. The lease is released.
        Raises `LeaseLost`."""

    @abc.abstractmethod
    async def record_attempts(self, owner: str, records: Sequence[AttemptRecord]) -> set[str]:
        """`record_attempt` for each record, in order, in one transaction: all are committed
        together or none (`StoreError`). A record whose lease was lost changes nothing; the
        ids of those deliveries are returned instead of raising `LeaseLost`."""

    # Housekeeping.

    @abc.abstractmethod
    async def purge_bodies(self, completed_before: float) -> int:
        """Drop the stored bodies of succeeded or cancelled deliveries that ended before the
        given time (their attempt log stays); return how many."""

    @abc.abstractmethod
    async def count_due_deliveries(self, now: float) -> int:
        """Pending deliveries due at `now` that nobody holds a live lease on (the backlog)."""

    @abc.abstractmethod
    async def count_watches(self, tenant: str | None = None) -> dict[str, int]:
        """Watches per status (every status present, zero when none)."""


class DuplicateIdempotencyKey(Exception):
    """The tenant already used this Idempotency-Key (internal signal to the service layer)."""
