"""In-memory backend (`memory://`): the whole contract of `base.Store`, kept in this process
only and lost when it ends. For tests, and for trying the bridge without a database.

Every call runs to its end without awaiting, so each is atomic on the event loop without locks.
What it holds is public, for tests to assert on. Setting `outage` makes the calls it covers fail
as an unavailable store's do (every call, or only writes when it is `refusing_writes`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from service.clock import Clock, SystemClock
from service.errors import LeaseLost, StoreError, StoreUnavailable
from service.store import base, buckets, rules
from service.store.health import StoreHealth


@dataclass(slots=True)
class Lease:
    """Who holds a watch or a delivery, until when, and the token of the latest claim."""

    owner: str | None = None
    until: float | None = None
    token: int = 0

    def free(self, now: float) -> bool:
        return self.owner is None or self.until is None or self.until <= now

    def held(self, owner: str, token: int) -> bool:
        return self.owner == owner and self.token == token

    def take(self, owner: str, until: float) -> None:
        token = self.token if owner == self.owner else self.token + 1
        self.owner, self.until, self.token = owner, until, token

    def release(self) -> None:
        self.owner = self.until = None


# The subscription statuses that may still change (`active` gets deliveries).
_LIVE_SUBSCRIPTION = ("active", "disabled")


@dataclass(slots=True)
class DeliveryRow:
    """A delivery as held: an event addressed to one endpoint (see `rules.fan_out`)."""

    id: str
    watch_id: str
    event_id: str
    event_type: str
    body: bytes | None  # None once purged
    final: bool
    subscription_id: str | None
    host: str
    tenant: str
    created_at: float
    lease: Lease
    status: base.DeliveryStatus = "pending"
    attempts: int = 0
    next_attempt_at: float | None = None
    ended_at: float | None = None
    series: int = 1

    def due(self, now: float) -> bool:
        at = self.next_attempt_at
        return self.status == "pending" and at is not None and at <= now and self.lease.free(now)


class MemoryStore(base.Store):
    def __init__(self, clock: Clock | None = None, *, health: StoreHealth | None = None) -> None:
        self.health = health or StoreHealth(clock or SystemClock())
        self.outage: StoreUnavailable | None = None
        self.closed = False
        # Watches by id; a watch's lease token is its `lease_token`, the rest in `leases`.
        self.watches: dict[str, base.Watch] = {}
        self.leases: dict[str, Lease] = {}
        self.deliveries: dict[str, DeliveryRow] = {}
        self.events: list[base.EventRecord] = []  # in the order recorded
        self.attempts: list[base.Attempt] = []  # in the order recorded
        self.subscriptions: dict[str, base.Subscription] = {}
        self.idempotency: dict[tuple[str, str], base.Idempotency] = {}  # by (tenant, key)
        self.job_owners: dict[tuple[str, str], str] = {}  # tenant by (upstream, job id)
        self.revoked_sessions: dict[str, float] = {}  # cookie expiry by session id

    def _call(self, *, writes: bool) -> None:
        """Report the call to `health` (see `base.Store`); raise while `outage` covers it."""
        if self.closed:
            raise StoreError("the store is closed")
        outage = self.outage
        if outage is not None and (writes or not outage.refusing_writes):
            error = StoreUnavailable(outage.message, refusing_writes=outage.refusing_writes)
            self.health.failed(error)
            raise error
        self.health.succeeded(wrote=writes)

    def _watch(self, tenant: str, watch_id: str) -> base.Watch | None:
        watch = self.watches.get(watch_id)
        return watch if watch is not None and watch.tenant == tenant else None

    def _held(self, watch_id: str, owner: str, token: int) -> base.Watch | None:
        """The active watch `owner` holds with `token`, if so."""
        watch, lease = self.watches.get(watch_id), self.leases.get(watch_id)
        if watch is None or lease is None or watch.status != "active":
            return None
        return watch if lease.held(owner, token) else None

    def _pending(self, where: Callable[[DeliveryRow], bool]) -> Iterator[DeliveryRow]:
        return (row for row in self.deliveries.values() if row.status == "pending" and where(row))

    def _cancel(self, where: Callable[[DeliveryRow], bool], now: float) -> None:
        for row in list(self._pending(where)):
            row.status, row.ended_at = "cancelled", now
            row.lease.release()

    async def open(self, *, migrate: bool = True) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True

    async def migrate(self) -> list[int]:
        self._call(writes=False)
        return []  # no schema

    async def ping(self, *, write: bool = False) -> None:
        self._call(writes=write)

    # Registration and reading.

    async def insert_watch(
        self,
        watch: base.Watch,
        idempotency: base.Idempotency | None = None,
        *,
        lease_owner: str | None = None,
        lease_until: float = 0.0,
        shared_key: bool = False,
        started: bool = False,
    ) -> base.Watch:
        self._call(writes=True)
        if watch.id in self.watches:
            raise StoreError(f"watch {watch.id} exists already")
        job = (watch.upstream, watch.job_id)
        if shared_key and self.job_owners.get(job, watch.tenant) != watch.tenant:
            raise base.JobOfAnotherTenant()
        if idempotency is not None:
            if (watch.tenant, idempotency.key) in self.idempotency:
                raise base.DuplicateIdempotencyKey()
            self.idempotency[watch.tenant, idempotency.key] = idempotency
        if started:
            self.job_owners.setdefault(job, watch.tenant)
        lease = Lease()
        if lease_owner is not None:
            lease.take(lease_owner, lease_until)
        self.leases[watch.id] = lease
        stored = replace(watch, updated_at=watch.created_at, lease_token=lease.token)
        self.watches[watch.id] = stored
        return stored

    async def find_idempotency(self, tenant: str, key: str) -> base.Idempotency | None:
        self._call(writes=False)
        return self.idempotency.get((tenant, key))

    async def get_watch(self, tenant: str, watch_id: str) -> base.Watch | None:
        self._call(writes=False)
        return self._watch(tenant, watch_id)

    async def list_watches(
        self,
        tenant: str,
        filters: base.WatchFilter = base.EVERY_WATCH,
        *,
        before_id: str | None = None,
        limit: int = 50,
    ) -> list[base.Watch]:
        self._call(writes=False)
        found = [
            w for w in self._matching(tenant, filters) if before_id is None or w.id < before_id
        ]
        return sorted(found, key=lambda w: w.id, reverse=True)[:limit]

    async def count_matching(
        self, tenant: str, filters: base.WatchFilter = base.EVERY_WATCH
    ) -> int:
        self._call(writes=False)
        return len(self._matching(tenant, filters))

    def _matching(self, tenant: str, filters: base.WatchFilter) -> list[base.Watch]:
        return [w for w in self.watches.values() if w.tenant == tenant and _passes(w, filters)]

    async def cancel_watch(self, tenant: str, watch_id: str, now: float) -> base.Watch | None:
        self._call(writes=True)
        watch = self._watch(tenant, watch_id)
        if watch is None or watch.status not in rules.LIVE:
            return watch
        self.leases[watch_id].release()
        self._cancel(lambda row: row.watch_id == watch_id, now)
        outcome = watch.outcome
        if watch.status == "active":
            outcome = rules.job_outcome("cancelled", None, None)
        watch = replace(
            watch, status="cancelled", queue_position=None, outcome=outcome, updated_at=now,
            completed_at=now,
        )  # fmt: skip
        self.watches[watch_id] = watch
        return watch

    async def redeliver(
        self, tenant: str, watch_id: str, now: float, endpoints: Collection[str] | None = None
    ) -> base.Redelivery | None:
        self._call(writes=True)
        watch = self._watch(tenant, watch_id)
        if watch is None:
            return None
        active = {s.id for s in self.subscriptions.values() if s.status == "active"}
        finals = [
            rules.Final(row.id, row.subscription_id, row.status, row.body is not None,
                        row.subscription_id is None or row.subscription_id in active)
            for row in self.deliveries.values() if row.watch_id == watch_id and row.final
        ]  # fmt: skip
        again, delivering = rules.redelivery(watch.status, finals, endpoints)
        for delivery_id in again:
            row = self.deliveries[delivery_id]
            row.status, row.attempts, row.next_attempt_at, row.ended_at = "pending", 0, now, None
            row.series += 1
            row.lease.release()
        if delivering:
            watch = replace(watch, status="delivering", updated_at=now, completed_at=None)
            self.watches[watch_id] = watch
        return base.Redelivery(watch, tuple(again))

    async def retry_delivery(
        self, tenant: str, watch_id: str, delivery_id: str, now: float
    ) -> base.DeliveryRecord | None:
        self._call(writes=True)
        row = self.deliveries.get(delivery_id)
        if self._watch(tenant, watch_id) is None or row is None or row.watch_id != watch_id:
            return None
        due = rules.retried_at(row.status, row.next_attempt_at, now)
        if due is not None:
            row.next_attempt_at = due
        return _record(row)

    async def list_attempts(self, tenant: str, watch_id: str) -> list[base.Attempt]:
        self._call(writes=False)
        if self._watch(tenant, watch_id) is None:
            return []
        found = [a for a in self.attempts if self.deliveries[a.delivery_id].watch_id == watch_id]
        return sorted(found, key=lambda a: a.started_at)

    async def watch_deliveries(self, tenant: str, watch_id: str) -> list[base.DeliveryRecord]:
        self._call(writes=False)
        if self._watch(tenant, watch_id) is None:
            return []
        rows = sorted(
            (row for row in self.deliveries.values() if row.watch_id == watch_id),
            key=lambda r: (r.created_at, r.subscription_id or "", r.id),  # the callback first
        )
        return [_record(row) for row in rows]

    # Polling.

    async def claim_watches(
        self,
        owner: str,
        now: float,
        lease_until: float,
        limit: int,
        upstreams: Sequence[str] | None = None,
    ) -> list[base.Watch]:
        self._call(writes=True)
        free = [
            w
            for w in self.watches.values()
            if w.status == "active"
            and self.leases[w.id].free(now)
            and (upstreams is None or w.upstream in upstreams)
        ]
        claimed = []
        for watch in sorted(free, key=lambda w: (w.next_poll_at, w.id))[:limit]:
            lease = self.leases[watch.id]
            lease.take(owner, lease_until)
            self.watches[watch.id] = replace(watch, lease_token=lease.token)
            claimed.append(self.watches[watch.id])
        return claimed

    async def renew_watch_leases(
        self, owner: str, held: Sequence[tuple[str, int]], lease_until: float
    ) -> set[str]:
        self._call(writes=True)
        renewed = {watch_id for watch_id, token in held if self._held(watch_id, owner, token)}
        for watch_id in renewed:
            self.leases[watch_id].until = lease_until
        return renewed

    async def release_watches(self, owner: str, held: Sequence[tuple[str, int]]) -> None:
        self._call(writes=True)
        for watch_id, token in held:
            lease = self.leases.get(watch_id)
            if lease is not None and lease.held(owner, token):
                lease.release()

    async def record_progress(
        self, owner: str, now: float, changes: Sequence[base.Progress]
    ) -> base.Recorded:
        self._call(writes=True)
        lost, created = set(), 0
        for change in changes:
            watch = self._held(change.watch_id, owner, change.lease_token)
            if watch is None:
                lost.add(change.watch_id)
                continue
            watch = replace(
                watch, job_status=change.job_status, queue_position=change.queue_position,
                last_error=change.last_error, next_poll_at=change.next_poll_at, updated_at=now,
            )  # fmt: skip
            self.watches[watch.id] = watch
            for event in change.events:
                created += len(self._record_event(watch, event, now, None, 0.0))
        return base.Recorded(lost, created)

    def _record_event(
        self,
        watch: base.Watch,
        event: base.NewEvent,
        now: float,
        owner: str | None,
        lease_until: float,
    ) -> list[str]:
        """Keep `event` and record its deliveries (claimed by `owner` when given); their ids.
        An event kept already is skipped."""
        if any(kept.id == event.id for kept in self.events):
            return []
        self.events.append(
            base.EventRecord(event.id, watch.id, event.type, event.final, event.body, now)
        )
        endpoints = [
            rules.Endpoint.of(s.id, s.events, s.url)
            for s in sorted(self.subscriptions.values(), key=lambda s: s.id)
            if s.tenant == watch.tenant and s.status == "active"
        ]
        ids = []
        for new in rules.fan_out(event, watch.callback_url, endpoints, now):
            lease = Lease()
            if owner is not None:
                lease.take(owner, lease_until)
            self.deliveries[new.delivery.id] = DeliveryRow(
                new.delivery.id, watch.id, event.id, event.type, new.delivery.body, event.final,
                new.subscription_id, new.host, watch.tenant, now, lease, next_attempt_at=now,
            )  # fmt: skip
            ids.append(new.delivery.id)
        return ids

    async def complete_watch(
        self, owner: str, now: float, completion: base.Completion, delivery_lease_until: float
    ) -> list[base.Delivery]:
        self._call(writes=True)
        watch = self._held(completion.watch_id, owner, completion.lease_token)
        if watch is None:
            raise LeaseLost()
        status, completed_at, outcome = rules.ending(completion.event, now)
        self.leases[watch.id].release()
        watch = replace(
            watch, status=status, job_status=completion.job_status, queue_position=None,
            last_error=completion.last_error, updated_at=now, completed_at=completed_at,
            outcome=outcome,
        )  # fmt: skip
        self.watches[watch.id] = watch
        ids = self._record_event(watch, completion.event, now, owner, delivery_lease_until)
        return [self._claimed(self.deliveries[delivery_id]) for delivery_id in ids]

    def _claimed(self, row: DeliveryRow) -> base.Delivery:
        """The delivery as sent: to the subscription's endpoint, else to the watch's callback."""
        w = self.watches[row.watch_id]
        s = self.subscriptions.get(row.subscription_id or "")
        url, method, headers, secret, final_statuses = (
            (w.callback_url or "", w.callback_method, w.callback_headers, w.secret,
             w.final_statuses)
            if s is None
            else (s.url, "POST", s.headers, s.secret, s.final_statuses)
        )  # fmt: skip
        return base.Delivery(
            row.id, row.watch_id, row.event_type, row.body or b"", row.final, row.attempts,
            row.lease.token, url, method, headers, secret, row.created_at, row.subscription_id,
            row.event_id, final_statuses, row.tenant,
            "" if s is None else s.previous_secret, None if s is None else s.previous_secret_until,
            row.series,
        )  # fmt: skip

    # Delivery.

    async def _claim_deliveries(
        self, owner: str, now: float, lease_until: float, limit: int, shares: base.Shares | None
    ) -> list[base.Delivery]:
        self._call(writes=True)
        due = sorted(
            self._pending(lambda row: row.due(now)), key=lambda r: (r.next_attempt_at, r.id)
        )
        if shares is None:
            chosen = due[:limit]
        else:
            groups: dict[tuple[str, str], list[DeliveryRow]] = {}
            for row in due:
                groups.setdefault((row.host, row.tenant), []).append(row)
            with_both = sorted(
                (
                    (host, tenant, shares.host(host), shares.tenant(tenant))
                    for host, tenant in groups
                    if shares.host(host) > 0 and shares.tenant(tenant) > 0
                ),
                key=lambda g: (groups[g[0], g[1]][0].next_attempt_at, g[0], g[1]),
            )
            offered = [
                (row.next_attempt_at or 0.0, row.id, host, tenant)
                for host, tenant, most in rules.groups_taken(with_both, limit)
                for row in groups[host, tenant][:most]
            ]
            ids = rules.offers_kept(with_both, offered, limit)
            chosen = [self.deliveries[delivery_id] for delivery_id in ids]
        for row in chosen:
            row.lease.take(owner, lease_until)
        return [self._claimed(row) for row in chosen]

    async def renew_delivery_leases(
        self, owner: str, held: Sequence[tuple[str, int]], lease_until: float
    ) -> set[str]:
        self._call(writes=True)
        renewed = set()
        for row in self._held_deliveries(owner, held):
            row.lease.until = lease_until
            renewed.add(row.id)
        return renewed

    async def release_deliveries(self, owner: str, held: Sequence[tuple[str, int]]) -> None:
        self._call(writes=True)
        for row in self._held_deliveries(owner, held):
            row.lease.release()

    def _held_deliveries(self, owner: str, held: Sequence[tuple[str, int]]) -> list[DeliveryRow]:
        rows = (self.deliveries.get(delivery_id) for delivery_id, _ in held)
        return [
            row
            for row, (_, token) in zip(rows, held, strict=True)
            if row is not None and row.status == "pending" and row.lease.held(owner, token)
        ]

    async def record_attempts(self, owner: str, records: Sequence[base.AttemptRecord]) -> set[str]:
        self._call(writes=True)
        return {r.delivery.id for r in records if not self._record(owner, r)}

    def _record(self, owner: str, record: base.AttemptRecord) -> bool:
        """Apply one fenced attempt record (see `rules.effect`); False: the lease was lost."""
        row, attempt, now = self.deliveries.get(record.delivery.id), record.attempt, record.now
        if row is None or row.status != "pending":
            return False
        if not row.lease.held(owner, record.delivery.lease_token):
            return False
        effect = rules.effect(record)
        row.attempts += 1
        row.status, row.next_attempt_at, row.ended_at = (
            effect.status, attempt.next_attempt_at, effect.ended_at,
        )  # fmt: skip
        row.lease.release()
        logged = replace(
            attempt, delivery_id=row.id, subscription_id=row.subscription_id, series=row.series
        )
        self.attempts.append(logged)
        gone = effect.subscription_gone
        if gone is not None:
            if self.subscriptions[gone].status == "active":
                self.subscriptions[gone] = replace(
                    self.subscriptions[gone], status="gone", updated_at=now
                )
            self._cancel(lambda r: r.subscription_id == gone, now)
        watch = self.watches[row.watch_id]
        watch = replace(watch, attempts=watch.attempts + 1, updated_at=now)
        if effect.counted and watch.status == "delivering":
            watch = replace(
                watch, last_error=watch.last_error if attempt.error is None else attempt.error,
                status=effect.watch_status or watch.status, completed_at=effect.ended_at,
            )  # fmt: skip
        if effect.watch_gone:
            if watch.status in rules.LIVE:
                watch = replace(watch, status="gone", updated_at=now, completed_at=now)
                self.leases[watch.id].release()
            self._cancel(lambda r: r.watch_id == watch.id and r.subscription_id is None, now)
        self.watches[watch.id] = watch
        return True

    # Subscriptions.

    async def insert_subscription(self, subscription: base.Subscription) -> base.Subscription:
        self._call(writes=True)
        if subscription.id in self.subscriptions:
            raise StoreError(f"subscription {subscription.id} exists already")
        self.subscriptions[subscription.id] = subscription
        return subscription

    async def list_subscriptions(self, tenant: str) -> list[base.Subscription]:
        self._call(writes=False)
        found = self.subscriptions.values()
        mine = [s for s in found if s.tenant == tenant and s.status in _LIVE_SUBSCRIPTION]
        return sorted(mine, key=lambda s: s.id)

    async def get_subscription(self, tenant: str, subscription_id: str) -> base.Subscription | None:
        self._call(writes=False)
        found = self.subscriptions.get(subscription_id)
        return found if found is not None and found.tenant == tenant else None

    async def _change_subscription_status(
        self, tenant: str, subscription_id: str, status: base.SubscriptionStatus, now: float
    ) -> base.Subscription | None:
        self._call(writes=True)
        found = self._live_subscription(tenant, subscription_id)
        if found is None:
            return None
        changed = self.subscriptions[subscription_id] = replace(
            found, status=status, updated_at=now
        )
        if status != "active":
            self._cancel(lambda row: row.subscription_id == subscription_id, now)
        return changed

    async def rotate_subscription_secret(
        self, tenant: str, subscription_id: str, secret: str, previous_until: float, now: float
    ) -> base.Subscription | None:
        self._call(writes=True)
        found = self._live_subscription(tenant, subscription_id)
        if found is None:
            return None
        rotated = self.subscriptions[subscription_id] = replace(
            found, secret=secret, previous_secret=found.secret,
            previous_secret_until=previous_until, updated_at=now,
        )  # fmt: skip
        return rotated

    def _live_subscription(self, tenant: str, subscription_id: str) -> base.Subscription | None:
        """The tenant's subscription, if it is `active` or `disabled`."""
        found = self.subscriptions.get(subscription_id)
        if found is None or found.tenant != tenant or found.status not in _LIVE_SUBSCRIPTION:
            return None
        return found

    async def subscription_health(
        self, tenant: str, since: float
    ) -> dict[str, base.SubscriptionHealth]:
        self._call(writes=False)
        found: dict[str, base.SubscriptionHealth] = {}
        for a in self.attempts:  # in the order recorded: the latest error comes last
            sub = self.subscriptions.get(a.subscription_id or "")
            if sub is None or sub.tenant != tenant or a.started_at < since:
                continue
            ok = a.status_code is not None and 200 <= a.status_code < 300
            was = found.get(sub.id, base.SubscriptionHealth(0, 0))
            was = replace(was, attempts=was.attempts + 1, succeeded=was.succeeded + ok)
            if not ok and (was.last_error_at is None or a.started_at >= was.last_error_at):
                was = replace(
                    was, last_error_at=a.started_at, last_error=a.error,
                    last_status_code=a.status_code,
                )  # fmt: skip
            found[sub.id] = was
        return found

    # Events.

    async def list_events(
        self, tenant: str, *, types: Sequence[str] | None = None, limit: int = 50
    ) -> list[base.EventRecord]:
        self._call(writes=False)
        found = [
            e
            for e in reversed(self.events)
            if self.watches[e.watch_id].tenant == tenant and (types is None or e.type in types)
        ]
        return found[:limit]

    async def watch_events(
        self, tenant: str, watch_id: str, *, after: str | None = None
    ) -> list[base.EventRecord]:
        self._call(writes=False)
        if self._watch(tenant, watch_id) is None:
            return []
        mine = [e for e in self.events if e.watch_id == watch_id]
        ids = [e.id for e in mine]
        return mine[ids.index(after) + 1 :] if after in ids else mine

    # Trends.

    async def outcome_buckets(
        self, tenant: str, since: float, bucket_s: float, count: int
    ) -> list[base.OutcomeBucket]:
        self._call(writes=False)
        outcomes: list[list[str]] = [[] for _ in range(count)]  # of the final events
        for event in self.events:
            watch = self.watches[event.watch_id]
            at = buckets.index(event.created_at, since, bucket_s, count)
            if event.final and watch.tenant == tenant and at is not None:
                outcomes[at].append(watch.outcome)
        webhooks: list[buckets.Webhook] = []
        for row in self.deliveries.values():
            ended_at = row.ended_at
            if ended_at is None or row.tenant != tenant or not row.final or row.subscription_id:
                continue
            at = buckets.index(ended_at, since, bucket_s, count)
            if at is not None and row.status == "succeeded":
                webhooks.append((at, ended_at - row.created_at))
            elif at is not None and row.status in ("failed", "gone"):
                webhooks.append((at, None))
        jobs = [
            (i, found.count("succeeded"), found.count("timed_out"), len(found))
            for i, found in enumerate(outcomes)
        ]
        return buckets.assemble(since, bucket_s, count, jobs, webhooks)

    # Dashboard sign-ins.

    async def revoke_session(self, session_id: str, expires_at: float) -> None:
        self._call(writes=True)
        self.revoked_sessions.setdefault(session_id, expires_at)

    async def session_revoked(self, session_id: str) -> bool:
        self._call(writes=False)
        return session_id in self.revoked_sessions

    # Housekeeping.

    async def purge_revoked_sessions(self, now: float) -> int:
        self._call(writes=True)
        expired = [s for s, expires_at in self.revoked_sessions.items() if expires_at <= now]
        for session_id in expired:
            del self.revoked_sessions[session_id]
        return len(expired)

    async def purge_bodies(self, completed_before: float) -> int:
        self._call(writes=True)
        self.events = [
            e
            for e in self.events
            if e.created_at >= completed_before or self.watches[e.watch_id].status in rules.LIVE
        ]
        purged = [
            row
            for row in self.deliveries.values()
            if row.body is not None
            and row.status in ("succeeded", "cancelled")
            and row.ended_at is not None
            and row.ended_at < completed_before
        ]
        for row in purged:
            row.body = None
        self.attempts = [
            replace(a, response=replace(a.response, body=None))
            if a.response is not None and a.response.body is not None
            and a.started_at < completed_before
            else a
            for a in self.attempts
        ]  # fmt: skip
        return len(purged)

    async def count_due_deliveries(self, now: float) -> int:
        self._call(writes=False)
        return sum(1 for _ in self._pending(lambda row: row.due(now)))

    async def count_watches(self, tenant: str | None = None) -> dict[str, int]:
        self._call(writes=False)
        counts: dict[str, int] = dict.fromkeys(base.WATCH_STATUSES, 0)
        for watch in self.watches.values():
            if tenant in (None, watch.tenant):
                counts[watch.status] += 1
        return counts

    async def count_active_by_upstream(self) -> dict[str, int]:
        self._call(writes=False)
        return dict(Counter(w.upstream for w in self.watches.values() if w.status == "active"))

    async def count_outcomes(
        self, tenant: str
    ) -> dict[tuple[base.WatchStatus, base.JobOutcome], int]:
        self._call(writes=False)
        return dict(
            Counter((w.status, w.outcome) for w in self.watches.values() if w.tenant == tenant)
        )


def _record(row: DeliveryRow) -> base.DeliveryRecord:
    return base.DeliveryRecord(
        row.id, row.event_type, row.final, row.status, row.attempts, row.body, row.created_at,
        row.subscription_id, row.event_id,
        row.next_attempt_at if row.status == "pending" else None, row.series,
    )  # fmt: skip


def _passes(w: base.Watch, filters: base.WatchFilter) -> bool:
    """Whether `filters` let the watch through (`base.WatchFilter`)."""
    prefix, metadata = filters.job_id_prefix, filters.metadata
    return (
        filters.status in (None, w.status)
        and filters.job_id in (None, w.job_id)
        and filters.outcome in (None, w.outcome)
        and filters.delivery in (None, rules.delivery_state(w.status, w.outcome))
        and (prefix is None or w.job_id.startswith(prefix))
        and (metadata is None or _has(w.metadata, *metadata))
        and (filters.created_from is None or w.created_at >= filters.created_from)
        and (filters.created_to is None or w.created_at < filters.created_to)
        and filters.upstream in (None, w.upstream)
    )


def _has(metadata: dict[str, Any] | None, key: str, value: str) -> bool:
    """Whether the metadata's `key` holds `value` (`base.WatchFilter`); a bool is no number."""
    if metadata is None or key not in metadata:
        return False
    found = metadata[key]
    return not isinstance(found, bool) and found in rules.metadata_values(value)
