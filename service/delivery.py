"""Sending webhooks: sign, hand to the sender (service/sender.py), judge the answer, record
the attempt.

`judge` is pure. `HostSlots` is the pure bookkeeping of the per-host limit. `Deliverer` runs
attempts concurrently, up to a global limit and a per-host one, and records each outcome under
the delivery's lease, many attempts to one commit; an attempt whose outcome was not recorded
(a crash) is sent again later with the same `webhook-id`.

Per-host limit: a delivery whose host already has `max_per_host` attempts in flight waits in
memory (its lease renewed, no global slot taken) in a line of at most `LINE * max_per_host`
for that host; past that it is handed back to the store at once. A claim takes for each host
only what it has room for (none for a host whose line is full), so a host with a large backlog
neither fills the deliverer nor hides the other hosts' due deliveries; a host's line is topped
up by one claim once two thirds of it are free, not at every attempt (each claim is a store
write). A sender that keeps the limits itself (the sender process, `depth` 4) is handed `depth`
times them, and makes no more than the limits at once.
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, urlsplit, urlunsplit

import structlog

from service import __version__, schedule
from service.clock import Clock
from service.config import DeliverySettings
from service.errors import StoreError, StoreUnavailable
from service.sender import Sender
from service.signing import sign
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
# A host's waiting line, in multiples of `max_per_host`: long enough that a fast host's line
# is topped up by few, large claims.
LINE = 3
USER_AGENT = f"webhook-bridge/{__version__}"
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


Admission = Literal["run", "wait", "release"]


@dataclass(frozen=True, slots=True)
class ClaimPlan:
    """What the next claim of due deliveries may take (see `Store.claim_deliveries`)."""

    limit: int
    per_host: int  # for a host not in `host_limits`
    host_limits: dict[str, int]  # room left per busy host; 0: claim none


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


@dataclass(slots=True)
class _Host:
    running: int = 0
    waiting: deque[Delivery] = field(default_factory=deque)


class HostSlots:
    """The per-host limit's bookkeeping: how many attempts run per host, and which deliveries
    wait for one of them. Pure: no I/O, no clock.

    At most `per_host` run per host, at most `line * per_host` more wait; a host is only known here
    while it has some of either, so memory follows what is held, not how many hosts exist:
    as only a host whose slots are all taken has some waiting, at most `line` times the global
    concurrency wait in all."""

    def __init__(self, per_host: int, line: int = LINE) -> None:
        self.per_host = per_host
        self.capacity = (1 + line) * per_host
        self._hosts: dict[str, _Host] = {}

    def admit(self, host: str, delivery: Delivery) -> Admission:
        """Take `delivery` for `host`: `run` it now (its slot is taken), `wait` (kept in line),
        or `release` it (the host has enough lined up; give it back to the store)."""
        entry = self._hosts.get(host)
        if entry is None:
            entry = self._hosts[host] = _Host()
        if entry.running < self.per_host:
            entry.running += 1
            return "run"
        if entry.running + len(entry.waiting) < self.capacity:
            entry.waiting.append(delivery)
            return "wait"
        return "release"

    def done(self, host: str) -> Delivery | None:
        """An attempt to `host` ended: the next waiting delivery, which takes its slot, if any."""
        entry = self._hosts.get(host)
        if entry is None:
            return None
        if entry.waiting:
            return entry.waiting.popleft()
        entry.running -= 1
        if entry.running <= 0:
            del self._hosts[host]
        return None

    def room(self, host: str) -> int:
        """How many more deliveries `host` may take, running or waiting."""
        entry = self._hosts.get(host)
        if entry is None:
            return self.capacity
        return self.capacity - entry.running - len(entry.waiting)

    def limits(self) -> dict[str, int]:
        """The room of every host known here (busy ones); others have `capacity`."""
        return {host: self.room(host) for host in self._hosts}

    def running(self, host: str) -> int:
        entry = self._hosts.get(host)
        return entry.running if entry else 0

    def waiting(self, host: str | None = None) -> list[Delivery]:
        """The waiting deliveries, of one host or of all."""
        if host is not None:
            entry = self._hosts.get(host)
            return list(entry.waiting) if entry else []
        return [d for e in self._hosts.values() for d in e.waiting]

    def drop(self, ids: set[str]) -> list[Delivery]:
        """Take the waiting deliveries of `ids` out of line and return them."""
        dropped = []
        for host, entry in list(self._hosts.items()):
            kept = deque(d for d in entry.waiting if d.id not in ids)
            if len(kept) != len(entry.waiting):
                dropped += [d for d in entry.waiting if d.id in ids]
                entry.waiting = kept
            if entry.running <= 0 and not entry.waiting:
                del self._hosts[host]
        return dropped

    def clear_waiting(self) -> list[Delivery]:
        """Forget every waiting delivery (a shutdown) and return them."""
        dropped = self.waiting()
        for host, entry in list(self._hosts.items()):
            entry.waiting.clear()
            if entry.running <= 0:
                del self._hosts[host]
        return dropped


class Deliverer:
    """Attempts the deliveries this process claimed: at most `max_concurrency` requests at
    once, at most `max_per_host` to one host, each outcome committed (in groups) before its
    delivery is let go. Whatever it holds, running, waiting or committing, is in `held()` for
    the lease renewals; `drain` hands back what was not attempted."""

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
        self._slots = asyncio.Semaphore(settings.max_concurrency * self._depth)
        self._hosts = HostSlots(settings.max_per_host * self._depth)
        # One task per running slot of a host: it attempts one delivery, then the host's next
        # waiting one, and so on (not a task per attempt).
        self._tasks: set[asyncio.Task[None]] = set()
        # Attempts whose request is not over yet (the others are committing their outcome).
        self._posting = 0
        # Every delivery held (running, waiting for its host or being released) and the lease
        # token it was claimed with, for renewals.
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
        # What the last claim suggests is left in the store: more for these hosts (each got
        # all it had room for, or none because it had no room), more for anyone (the claim was
        # cut by its limit).
        self._more_for: set[str] = set()
        self._more_due = False
        self._refilling: asyncio.Task[None] | None = None
        # Hosts that freed a slot while a claim was being made: worth another one?
        self._refill_again: set[str] = set()
        self._top_up = LINE * self._hosts.per_host * 2 // 3 or 1
        self._closing = False
        self._targets: dict[str, _Target] = {}
        # Told of each recorded attempt: metrics.
        self.on_outcome: Callable[[Delivery, Attempt, AttemptOutcome, float], None] | None = None

    @property
    def in_flight(self) -> int:
        return self._posting

    def held(self) -> list[tuple[str, int]]:
        """(id, lease token) of every delivery held: being attempted or waiting for its host
        (their leases need renewing)."""
        return list(self._sending.items())

    @property
    def free_slots(self) -> int:
        return max(0, self._settings.max_concurrency * self._depth - self._posting)

    def lost(self, ids: set[str]) -> None:
        """Forget the deliveries of `ids` still waiting for their host: their leases could not
        be renewed. (One already being attempted finds out when its outcome is recorded.)"""
        if not ids:
            return
        for delivery in self._hosts.drop(ids):
            self._sending.pop(delivery.id, None)
            log.info("delivery.lease_lost", webhook_id=delivery.id)

    def claim_plan(self) -> ClaimPlan:
        """The next claim: as many as there are free slots, for each busy host what it has
        room for (running or waiting), `max_per_host` for any other."""
        limit = max(self.free_slots, 0)
        return ClaimPlan(limit, self._hosts.per_host, self._hosts.limits())

    def claimed(self, plan: ClaimPlan, deliveries: list[Delivery]) -> None:
        """Take the deliveries a claim made with `plan` returned."""
        got: dict[str, int] = {}
        for delivery in deliveries:
            host = self._target(delivery.callback_url).host
            got[host] = got.get(host, 0) + 1
        self._more_for = {h for h, room in plan.host_limits.items() if room <= 0}
        self._more_for.update(
            h for h, n in got.items() if n >= plan.host_limits.get(h, plan.per_host)
        )
        self._more_due = plan.limit > 0 and len(deliveries) >= plan.limit
        for delivery in deliveries:
            self.submit(delivery)

    def submit(self, delivery: Delivery) -> None:
        """Attempt `delivery` (claimed by this process) now, or once its host has a free slot."""
        if delivery.id in self._sending or self._closing:
            return
        host = self._target(delivery.callback_url).host
        admission = self._hosts.admit(host, delivery)
        self._sending[delivery.id] = delivery.lease_token
        if admission == "run":
            self._start(delivery, host)
        elif admission == "release":
            self._release(delivery)

    def _target(self, callback_url: str) -> _Target:
        target = self._targets.get(callback_url)
        if target is None:
            if len(self._targets) >= TARGETS:  # the oldest goes
                del self._targets[next(iter(self._targets))]
            target = self._targets[callback_url] = _parse_target(callback_url)
        return target

    def _start(self, delivery: Delivery, host: str) -> None:
        self._posting += 1
        task = asyncio.create_task(self._run(delivery, host), name=f"deliver to {host}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, delivery: Delivery | None, host: str) -> None:
        """A slot of `host`: attempt `delivery`, then each delivery waiting for the host until
        none is left (the slot is then given up). Each attempt is counted in `_posting` from
        the moment its delivery has the slot."""
        while delivery is not None:
            await self._attempt(delivery, host)
            if self._closing:
                return
            # The host's slot passes to its next waiting delivery.
            delivery = self._hosts.done(host)
            if delivery is None:
                self._slot_freed(host)
            else:
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
        waiting = self._hosts.clear_waiting()
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

    async def _attempt(self, delivery: Delivery, host: str) -> None:
        """One attempt: the request in a global slot (the host's is its caller's), then its
        outcome queued for the next commit. The slots are given up as soon as the answer is in
        (the receiver is done with it); the delivery stays held until its outcome is committed
        (a cancelled attempt stays held too: `drain` hands it back)."""
        try:
            async with self._slots:
                sent = await self._post(delivery)
        except Exception:
            log.exception("delivery.crashed", watch_id=delivery.watch_id, webhook_id=delivery.id)
            self._sending.pop(delivery.id, None)
            return
        finally:
            self._posting -= 1
        self._record(delivery, sent)

    def _worth_claiming(self, host: str) -> bool:
        """Whether a claim now would likely find work: the store has more for `host` and it
        has room for half a line of it, or the last claim was cut short by its limit."""
        if host in self._more_for and self._hosts.room(host) >= self._top_up:
            return True
        return self._more_due

    def _slot_freed(self, host: str) -> None:
        """An attempt to `host` ended: claim more if the store may have some worth taking."""
        if self.refill is None or not self._worth_claiming(host):
            return
        if self._refilling is not None and not self._refilling.done():
            self._refill_again.add(host)
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
            if not any(self._worth_claiming(host) for host in self._refill_again):
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
        return await self._sender.send(delivery.callback_method, target.url, headers, delivery.body)


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
