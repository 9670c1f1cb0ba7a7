"""Sending webhooks: sign, hand to the sender (service/sender.py), judge the answer, record
the attempt.

`judge` is pure. `Deliverer` runs attempts concurrently, up to a global limit, a per-host
one and a per-tenant one (their bookkeeping is service/slots.py), and records each outcome
under the delivery's lease, many attempts to one commit; an attempt whose outcome was not
recorded (a crash) is sent again later with the same `webhook-id`.

Per-host and per-tenant limits: a delivery whose host already has `max_per_host` attempts in
flight, or whose tenant has `max_per_tenant`, waits in memory (its lease renewed, no global
slot taken) in a line of at most `LINE` times the limit for that host or tenant; past that it
is handed back to the store at once. A claim takes for each host and each tenant only what it
has room for (none for one whose line is full), so a host or a tenant with a large backlog
neither fills the deliverer nor hides the others' due deliveries, and one tenant's slow
receivers hold at most its share of the slots; a line is topped up by one claim once two
thirds of it are free, not at every attempt (each claim is a store write). A sender that keeps
the limits itself (the sender process, `depth` 4) is handed `depth` times them, and makes no
more than the limits at once.
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

import structlog

from service import USER_AGENT, schedule
from service.clock import Clock
from service.config import DeliverySettings
from service.errors import StoreError, StoreUnavailable
from service.sender import Sender
from service.signing import sign
from service.slots import Slots
from service.store.base import (
    Attempt,
    AttemptOutcome,
    AttemptRecord,
    Delivery,
    Store,
    callback_host,
)
from service.vault import Vault, VaultError

log = structlog.get_logger("service.delivery")
# A host's or a tenant's waiting line, in multiples of its limit: long enough that a fast
# host's line is topped up by few, large claims.
LINE = 3
# Under load, the least time between two commits of outcomes: what arrives meanwhile goes into
# one transaction (one fsync, one trip to the store's thread). A lone outcome is committed at
# once; the deliveries wait for their commit, not their slots.
COMMIT_GAP_S = 0.01
# Callback URLs whose parsing is kept (see `_Target`): the busiest ones stay, as a claim's
# deliveries mostly go to few receivers.
TARGETS = 1024


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: AttemptOutcome
    next_attempt_at: float | None


def judge(
    status_code: int | None,
    retry_after: str | None,
    attempts_made: int,
    settings: DeliverySettings,
    now: float,
    rand: float,
    final_statuses: Collection[int] = (),
) -> Verdict:
    """What an attempt's answer (None: no answer) means for its delivery.

    2xx succeeds; 410 is `gone`; a status among the endpoint's `final_statuses` fails at once
    (a receiver that will never take this event, such as an n8n resume URL whose execution is
    over); anything else, 3xx included, is retried on the schedule (not before a `Retry-After`,
    capped) until it runs out."""
    if status_code is not None and 200 <= status_code < 300:
        return Verdict("succeeded", None)
    if status_code == 410:
        return Verdict("gone", None)
    if status_code in final_statuses:
        return Verdict("failed", None)
    delay = schedule.next_delivery_delay(
        attempts_made, settings.retry_schedule_s, settings.jitter, rand
    )
    if delay is None:
        return Verdict("failed", None)
    asked = schedule.retry_after(retry_after, now, settings.max_retry_after_s)
    return Verdict("retry", now + max(delay, asked or 0.0))


@dataclass(frozen=True, slots=True)
class ClaimPlan:
    """What the next claim of due deliveries may take (see `Store.claim_deliveries`)."""

    limit: int
    per_host: int  # for a host not in `host_limits`
    host_limits: dict[str, int]  # room left per busy host; 0: claim none
    per_tenant: int  # for a tenant not in `tenant_limits`
    tenant_limits: dict[str, int]  # room left per busy tenant; 0: claim none


@dataclass(frozen=True, slots=True)
class _Sent:
    """What one request gave: when it started, how long it took, and the answer."""

    started: float
    duration: float
    status_code: int | None
    retry_after: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class _Target:
    """What a callback URL gives every request to it, worked out once: the URL without its
    userinfo, the Basic credentials the userinfo stood for, and its host key."""

    url: str
    authorization: str | None
    host: str


class Deliverer:
    """Attempts the deliveries this process claimed: at most `max_concurrency` requests at
    once, at most `max_per_host` to one host and `per_tenant` of one tenant, each outcome
    committed (in groups) before its delivery is let go. Whatever it holds, running, waiting
    or committing, is in `held()` for the lease renewals; `drain` hands back what was not
    attempted."""

    def __init__(
        self,
        store: Store,
        sender: Sender,
        settings: DeliverySettings,
        clock: Clock,
        owner: str,
        rand: Callable[[], float] = random.random,
        vault: Vault | None = None,
    ) -> None:
        self._store = store
        self._vault = vault or Vault([])
        self._sender = sender
        self._settings = settings
        self._clock = clock
        self._owner = owner
        self._rand = rand
        # A sender that queues requests and keeps the limits itself may be handed `depth`
        # times them, so that its next request of a host is there before the last one's answer
        # has come back through this loop (see service/sender.py).
        self._depth = sender.depth
        self._concurrency = asyncio.Semaphore(settings.max_concurrency * self._depth)
        self._limits: Slots[Delivery] = Slots(
            self._keys, settings.max_per_host * self._depth, settings.per_tenant * self._depth,
            LINE,
        )  # fmt: skip
        # One task per running slot: it attempts one delivery, then the next waiting one that
        # the slot passes to, and so on (not a task per attempt).
        self._tasks: set[asyncio.Task[None]] = set()
        # Attempts whose request is not over yet (the others are committing their outcome).
        self._posting = 0
        # Every delivery held (running, waiting for its host or tenant, or being released) and
        # the lease token it was claimed with, for renewals.
        self._sending: dict[str, int] = {}
        # Outcomes waiting for the next commit, and the one task that commits them.
        self._records: list[AttemptRecord] = []
        self._writer: asyncio.Task[None] | None = None
        # Deliveries handed back to the store, and the task that does it.
        self._releases: list[tuple[str, int]] = []
        self._releaser: asyncio.Task[None] | None = None
        # Claims more due deliveries (the dispatcher's `claim_deliveries`) when slots free up
        # and the store may have more for them (see `_worth_claiming`).
        self.refill: Callable[[], Awaitable[None]] | None = None
        # What the last claim suggests is left in the store: more for these hosts and these
        # tenants (each got all it had room for, or none because it had no room), more for
        # anyone (the claim was cut by its limit).
        self._more_for_hosts: set[str] = set()
        self._more_for_tenants: set[str] = set()
        self._more_due = False
        self._refilling: asyncio.Task[None] | None = None
        # (host, tenant) of the attempts that ended while a claim was being made: worth another?
        self._refill_again: set[tuple[str, str]] = set()
        self._closing = False
        self._targets: dict[str, _Target] = {}
        # Told of each recorded attempt: metrics.
        self.on_outcome: Callable[[Delivery, Attempt, AttemptOutcome, float], None] | None = None

    @property
    def in_flight(self) -> int:
        return self._posting

    def held(self) -> list[tuple[str, int]]:
        """(id, lease token) of every delivery held: being attempted or waiting for its host or
        tenant (their leases need renewing)."""
        return list(self._sending.items())

    @property
    def free_slots(self) -> int:
        return max(0, self._settings.max_concurrency * self._depth - self._posting)

    def lost(self, ids: set[str]) -> None:
        """Forget the deliveries of `ids` still waiting for their host or tenant: their leases
        could not be renewed. (One already being attempted finds out when its outcome is
        recorded.)"""
        if not ids:
            return
        for delivery in self._limits.drop(lambda waiting: waiting.id in ids):
            self._sending.pop(delivery.id, None)
            log.info("delivery.lease_lost", webhook_id=delivery.id)

    def claim_plan(self) -> ClaimPlan:
        """The next claim: as many as there are free slots, for each busy host and tenant what
        it has room for (running or waiting), `max_per_host` and `per_tenant` for any other."""
        hosts, tenants = self._limits.hosts, self._limits.tenants
        return ClaimPlan(
            max(self.free_slots, 0), hosts.per_key, hosts.limits(), tenants.per_key,
            tenants.limits(),
        )  # fmt: skip

    def claimed(self, plan: ClaimPlan, deliveries: list[Delivery]) -> None:
        """Take the deliveries a claim made with `plan` returned."""
        keys = [self._keys(delivery) for delivery in deliveries]
        got_hosts = Counter(host for host, _ in keys)
        got_tenants = Counter(tenant for _, tenant in keys)
        self._more_for_hosts = _more_for(plan.host_limits, plan.per_host, got_hosts)
        self._more_for_tenants = _more_for(plan.tenant_limits, plan.per_tenant, got_tenants)
        self._more_due = plan.limit > 0 and len(deliveries) >= plan.limit
        for delivery in deliveries:
            self.submit(delivery)

    def submit(self, delivery: Delivery) -> None:
        """Attempt `delivery` (claimed by this process) now, or once its host and its tenant
        have a free slot."""
        if delivery.id in self._sending or self._closing:
            return
        admission = self._limits.admit(delivery)
        self._sending[delivery.id] = delivery.lease_token
        if admission == "run":
            self._start(delivery)
        elif admission == "release":
            self._release(delivery)

    def _keys(self, delivery: Delivery) -> tuple[str, str]:
        """What the per-host and per-tenant limits count `delivery` under."""
        return self._target(delivery.callback_url).host, delivery.tenant

    def _target(self, callback_url: str) -> _Target:
        target = self._targets.get(callback_url)
        if target is None:
            if len(self._targets) >= TARGETS:  # the oldest goes
                del self._targets[next(iter(self._targets))]
            target = self._targets[callback_url] = _parse_target(callback_url)
        return target

    def _start(self, delivery: Delivery) -> None:
        self._posting += 1
        task = asyncio.create_task(self._run(delivery), name="delivery")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, delivery: Delivery) -> None:
        """A slot: attempt `delivery`, then a waiting delivery its slots pass to, until none
        does (the slot is then given up). Each attempt is counted in `_posting` from the moment
        its delivery has its slots."""
        while True:
            await self._attempt(delivery)
            if self._closing:
                return
            # Its slots pass to waiting deliveries: one carries on here, any other in a task.
            passed = self._limits.done(delivery)
            self._slot_freed(*self._keys(delivery))
            for other in passed[1:]:
                self._start(other)
            if not passed:
                return
            delivery = passed[0]
            self._posting += 1

    async def drain(self, grace_s: float) -> list[tuple[str, int]]:
        """Wait up to `grace_s` for attempts in flight, then cancel the rest; return the
        (id, lease token) of those abandoned and of those never started, whose leases the
        caller should release."""
        self._closing = True
        if self._refilling is not None:
            self._refilling.cancel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(grace_s, 0.0)
        waiting = self._limits.clear_waiting()
        for delivery in waiting:
            self._sending.pop(delivery.id, None)
        never_started = [(d.id, d.lease_token) for d in waiting]
        pending: set[asyncio.Task[None]] = set()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=max(grace_s, 0.0))
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for helper in (self._writer, self._releaser):
            if helper is not None and not helper.done():
                # Outcomes already sent are worth committing; a little past the grace if need be.
                await asyncio.wait({helper}, timeout=max(deadline - loop.time(), 1.0))
        # Cancelled attempts, and outcomes not committed, are still held: handed back.
        abandoned = self.held()
        self._sending.clear()
        return [*never_started, *abandoned]

    async def _attempt(self, delivery: Delivery) -> None:
        """One attempt: the request in a global slot (the host's and the tenant's are its
        caller's), then its outcome queued for the next commit. The slots are given up as soon
        as the answer is in (the receiver is done with it); the delivery stays held until its
        outcome is committed (a cancelled attempt stays held too: `drain` hands it back)."""
        try:
            async with self._concurrency:
                sent = await self._post(delivery)
        except Exception:
            log.exception("delivery.crashed", watch_id=delivery.watch_id, webhook_id=delivery.id)
            self._sending.pop(delivery.id, None)
            return
        finally:
            self._posting -= 1
        self._record(delivery, sent)

    def _worth_claiming(self, host: str, tenant: str) -> bool:
        """Whether a claim now would likely find work: the store has more for `host` (or
        `tenant`) and it has room for a third of its line, or the last claim was cut short by
        its limit."""
        hosts, tenants = self._limits.hosts, self._limits.tenants
        if host in self._more_for_hosts and hosts.room(host) >= _top_up(hosts.per_key):
            return True
        if tenant in self._more_for_tenants and tenants.room(tenant) >= _top_up(tenants.per_key):
            return True
        return self._more_due

    def _slot_freed(self, host: str, tenant: str) -> None:
        """An attempt to `host` of `tenant` ended: claim more if the store may have some worth
        taking."""
        if self.refill is None or not self._worth_claiming(host, tenant):
            return
        if self._refilling is not None and not self._refilling.done():
            self._refill_again.add((host, tenant))
            return
        self._refilling = asyncio.create_task(self._refill(self.refill), name="delivery refill")

    async def _refill(self, refill: Callable[[], Awaitable[None]]) -> None:
        while not self._closing:
            self._refill_again.clear()
            try:
                await refill()
            except StoreError as error:
                if not isinstance(error, StoreUnavailable):  # an outage is logged once
                    log.warning("delivery.claim_failed", error=str(error))
                return
            if not any(self._worth_claiming(*keys) for keys in self._refill_again):
                return

    def _release(self, delivery: Delivery) -> None:
        self._releases.append((delivery.id, delivery.lease_token))
        if self._releaser is None or self._releaser.done():
            self._releaser = asyncio.create_task(self._release_all(), name="delivery release")

    async def _release_all(self) -> None:
        while self._releases:
            batch, self._releases = self._releases, []
            try:
                await self._store.release_deliveries(self._owner, batch)
            except StoreError as error:
                # Their leases run out instead (they are no longer renewed). An outage is
                # logged once.
                if not isinstance(error, StoreUnavailable):
                    log.warning("delivery.release_failed", deliveries=len(batch), error=str(error))
            for delivery_id, _ in batch:
                self._sending.pop(delivery_id, None)

    async def _write_all(self) -> None:
        # Outcomes that arrive while a batch is being committed form the next batch. Each
        # delivery is let go once its outcome is committed (or could not be).
        while self._records:
            batch, self._records = self._records, []
            try:
                lost = await self._store.record_attempts(self._owner, batch)
            except StoreError as failure:
                for record in batch:
                    self._sending.pop(record.delivery.id, None)
                    # Not recorded: the lease expires and the attempt is made again, same
                    # webhook-id. An outage is logged once, not per attempt.
                    if isinstance(failure, StoreUnavailable):
                        continue
                    log.error(
                        "delivery.record_failed", watch_id=record.delivery.watch_id,
                        webhook_id=record.delivery.id, error=f"store: {failure}",
                    )  # fmt: skip
            else:
                for record in batch:
                    self._recorded(record, record.delivery.id in lost)
            if self._records and not self._closing:
                await asyncio.sleep(COMMIT_GAP_S)

    def _recorded(self, record: AttemptRecord, lost: bool) -> None:
        delivery, attempt = record.delivery, record.attempt
        self._sending.pop(delivery.id, None)
        if lost:
            log.info("delivery.lease_lost", watch_id=delivery.watch_id, webhook_id=delivery.id)
            return
        log.info(
            "delivery.attempted",
            watch_id=delivery.watch_id,
            webhook_id=delivery.id,
            event_type=delivery.event_type,
            attempt=attempt.number,
            status_code=attempt.status_code,
            error=attempt.error,
            outcome=record.outcome,
            duration_s=round(attempt.duration_s, 4),
        )
        if self.on_outcome is not None:
            self.on_outcome(delivery, attempt, record.outcome, record.now)

    async def _post(self, delivery: Delivery) -> _Sent:
        started = self._clock.now()
        began = time.perf_counter()
        status_code, retry_after, error = await self._send(delivery, started)
        return _Sent(started, time.perf_counter() - began, status_code, retry_after, error)

    def _record(self, delivery: Delivery, sent: _Sent) -> None:
        """Judge the answer and queue the outcome for the next commit."""
        now = self._clock.now()
        attempts_made = delivery.attempts + 1
        verdict = judge(
            sent.status_code, sent.retry_after, attempts_made, self._settings, now, self._rand(),
            delivery.final_statuses,
        )  # fmt: skip
        attempt = Attempt(
            delivery_id=delivery.id,
            event_type=delivery.event_type,
            number=attempts_made,
            started_at=sent.started,
            duration_s=sent.duration,
            status_code=sent.status_code,
            error=sent.error,
            next_attempt_at=verdict.next_attempt_at,
        )
        self._records.append(AttemptRecord(delivery, attempt, verdict.outcome, now))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all(), name="delivery records")

    async def _send(
        self, delivery: Delivery, now: float
    ) -> tuple[int | None, str | None, str | None]:
        """(status code, Retry-After, error) of one request, signed at `now`."""
        target = self._target(delivery.callback_url)
        try:
            secrets = (
                [self._vault.open(delivery.secret)]
                if delivery.secret
                else self._settings.signing_secrets_at(now)
            )
            if not secrets:
                return None, None, "no delivery.signing_secrets is configured to sign this watch"
            headers = {
                **{k: self._vault.open(v) for k, v in delivery.callback_headers.items()},
                **({"authorization": target.authorization} if target.authorization else {}),
                "content-type": "application/json",
                "user-agent": USER_AGENT,
                **sign(delivery.id, delivery.body, now, secrets),
            }
        except VaultError as unreadable:
            return None, None, unreadable.message
        return await self._sender.send(
            delivery.callback_method, target.url, headers, delivery.body, delivery.tenant
        )


def _more_for(limits: Mapping[str, int], default: int, got: Counter[str]) -> set[str]:
    """The hosts (or tenants) a claim with these limits suggests the store has more for: those
    it had no room for, and those that got all they had room for."""
    found = {key for key, room in limits.items() if room <= 0}
    found.update(key for key, n in got.items() if n >= limits.get(key, default))
    return found


def _top_up(per_key: int) -> int:
    # A line is topped up once two thirds of it are free.
    return LINE * per_key * 2 // 3 or 1


def split_credentials(url: str) -> tuple[str, str | None]:
    """The URL without userinfo, and the Basic `Authorization` value the userinfo stood for."""
    if "@" not in url:  # the common case, without parsing
        return url, None
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    netloc = parts.netloc.rsplit("@", 1)[1]
    user, password = unquote(parts.username), unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return urlunsplit(parts._replace(netloc=netloc)), f"Basic {token}"


def _parse_target(callback_url: str) -> _Target:
    url, authorization = split_credentials(callback_url)
    return _Target(url, authorization, callback_host(callback_url))
