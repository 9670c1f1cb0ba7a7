"""Sending webhooks: claim the due ones there is room for, sign, hand to the sender
(service/sender.py), judge the answer, record the attempt.

`judge` and `response_start` are pure. `Deliverer` runs attempts concurrently, up to a global
limit, a per-host one and a per-tenant one (their bookkeeping is service/slots.py; what a claim
may take, service/claims.py), and records each outcome under the delivery's lease
(service/delivery_leases.py).

A delivery whose host already has `max_per_host` attempts in flight, or whose tenant has
`max_per_tenant`, waits in memory (its lease renewed, no global slot taken) in a line of at
most `LINE` times the limit for that host or tenant; past that it is handed back to the store
at once. One tenant's slow receivers so hold at most its share of the slots, and a slow host
only its own. A sender that keeps the limits itself (the sender process) is handed `depth`
times them, and makes no more than the limits at once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

import structlog

from service import claims, schedule
from service.clock import Clock, wait_for_tasks
from service.config import DeliverySettings
from service.delivery_leases import DeliveryLeases
from service.endpoints import Endpoints, endpoint_of
from service.errors import StoreError, StoreUnavailable
from service.sender import Answer, Sender
from service.slots import Slots
from service.store.base import (
    Attempt,
    AttemptOutcome,
    AttemptRecord,
    AttemptVerdict,
    Delivery,
    ResponseStart,
)
from service.vault import Vault

log = structlog.get_logger("service.delivery")
# A host's or a tenant's waiting line, in multiples of its limit: long enough that a fast
# host's line is topped up by few, large claims.
LINE = 3
# At a shutdown, outcomes already sent are worth committing: they get at least this long.
LAST_WRITES_S = 1.0


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: AttemptOutcome
    next_attempt_at: float | None
    # The outcome told apart by why the retries stopped (as the attempt log keeps it).
    verdict: AttemptVerdict


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
        return Verdict("succeeded", None, "succeeded")
    if status_code == 410:
        return Verdict("gone", None, "gone")
    if status_code in final_statuses:
        return Verdict("failed", None, "final_status")
    delay = schedule.next_delivery_delay(
        attempts_made, settings.retry_schedule_s, settings.jitter, rand
    )
    if delay is None:
        return Verdict("failed", None, "exhausted")
    asked = schedule.retry_after(retry_after, now, settings.max_retry_after_s)
    return Verdict("retry", now + max(delay, asked or 0.0), "retry")


def response_start(answer: Answer) -> ResponseStart | None:
    """What is kept of a receiver's answer (None: there was none): the start of its body as
    text when it is UTF-8 (a character the cap cut in two left out) without NUL characters,
    which no store keeps as text; else only its size."""
    if answer.status_code is None:
        return None
    body, text = answer.body, None
    # A character of up to 4 bytes cut by the cap leaves at most 3 of them at the end.
    for cut in range(4 if answer.truncated else 1):
        try:
            text = body[: len(body) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        break
    if not body or (text is not None and "\x00" in text):
        text = None
    return ResponseStart(text, len(body), answer.truncated, answer.content_type)


class Deliverer:
    """Attempts the deliveries this process claimed, each outcome committed (in groups) before
    its delivery is let go. `claim` and `renew` are periodic jobs (service/bridge.py); a claim
    is also made as soon as slots free up for which the store may have more. `stop` hands back
    what was not attempted."""

    def __init__(
        self,
        leases: DeliveryLeases,
        sender: Sender,
        settings: DeliverySettings,
        clock: Clock,
        *,
        vault: Vault | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._leases = leases
        self._sender = sender
        self._settings = settings
        self._clock = clock
        self._rand = rand
        self._endpoints = Endpoints(settings, vault or Vault([]))
        # A sender that queues requests and keeps the limits itself may be handed `depth`
        # times them, so that its next request of a host is there before the last one's answer
        # has come back through this loop (see service/sender.py).
        depth = sender.depth
        self._capacity = settings.max_concurrency * depth
        self._concurrency = asyncio.Semaphore(self._capacity)
        self._limits: Slots[Delivery] = Slots(
            self._keys, settings.max_per_host * depth, settings.per_tenant * depth, LINE
        )
        # One task per running slot: it attempts one delivery, then the next waiting one that
        # the slot passes to, and so on (not a task per attempt).
        self._tasks: set[asyncio.Task[None]] = set()
        # Attempts whose request is not over yet (the others are committing their outcome).
        self._posting = 0
        self._claiming = asyncio.Lock()  # one claim at a time: each is planned from the room
        self._leftovers = claims.Leftovers()
        self._refilling: asyncio.Task[None] | None = None
        # (host, tenant) of the attempts that ended while a claim was being made: worth another?
        self._refill_again: set[tuple[str, str]] = set()
        self._claims_open = True
        self._closing = False

    @property
    def in_flight(self) -> int:
        return self._posting

    @property
    def free_slots(self) -> int:
        return max(0, self._capacity - self._posting)

    def held(self) -> list[tuple[str, int]]:
        """(id, lease token) of every delivery held: being attempted, waiting for its host or
        tenant, or committing its outcome."""
        return self._leases.leases()

    def claim_plan(self) -> claims.ClaimPlan:
        """What the next claim may take: as many as there are free slots, for each busy host
        and tenant what it has room for."""
        return claims.plan(self._limits, self.free_slots)

    # Claims and leases.

    async def claim(self) -> None:
        """Claim the due deliveries there is room for, and attempt them."""
        if not self._claims_open:
            return  # stopping: what is due waits for another process, or the next start
        async with self._claiming:
            plan = self.claim_plan()
            if plan.limit <= 0:
                return
            claimed = await self._leases.claim(plan)
            self._leftovers.claimed(plan, map(self._keys, claimed))
            for delivery in claimed:
                self.submit(delivery)

    async def renew(self) -> None:
        """Renew the leases of the deliveries held. One waiting for its host or tenant whose
        lease was lost is dropped (another process may be sending it); an attempt finds out
        when it records its outcome."""
        lost = await self._leases.renew()
        if lost:
            for delivery in self._limits.drop(lambda waiting: waiting.id in lost):
                self._leases.drop(delivery.id)
                log.info("delivery.lease_lost", webhook_id=delivery.id)

    def stop_claiming(self) -> None:
        self._claims_open = False
        if self._refilling is not None:
            self._refilling.cancel()

    async def stop(self, grace_s: float) -> int:
        """Claim nothing more, give the attempts in flight `grace_s`, and hand back every
        delivery not recorded; how many."""
        abandoned = await self.drain(grace_s)
        try:
            await self._leases.give_back(abandoned)
        except StoreError as error:
            if not isinstance(error, StoreUnavailable):
                log.warning("delivery.release_failed", deliveries=len(abandoned), error=str(error))
        return len(abandoned)

    async def drain(self, grace_s: float) -> list[tuple[str, int]]:
        """Wait up to `grace_s` for attempts in flight, then cancel the rest; the (id, lease
        token) of those abandoned and of those never started, to be handed back."""
        self.stop_claiming()
        self._closing = True
        self._leases.close()
        deadline = self._clock.now() + max(grace_s, 0.0)
        waiting = self._limits.clear_waiting()
        for delivery in waiting:
            self._leases.drop(delivery.id)
        pending = await wait_for_tasks(self._clock, self._tasks, grace_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self._leases.settle(max(deadline - self._clock.now(), LAST_WRITES_S))
        # Cancelled attempts, and outcomes not committed, are still held: handed back.
        abandoned = self._leases.leases()
        for delivery_id, _ in abandoned:
            self._leases.drop(delivery_id)
        return [*((d.id, d.lease_token) for d in waiting), *abandoned]

    # Attempts.

    def submit(self, delivery: Delivery) -> None:
        """Attempt `delivery` (claimed by this process) now, or once its host and its tenant
        have a free slot. One held already is one this process claimed again after its lease
        ran out (a store outage): its attempt goes on, under the token the store kept."""
        if delivery.id in self._leases or self._closing:
            return
        admission = self._limits.admit(delivery)
        self._leases.hold(delivery)
        if admission == "run":
            self._start(delivery)
        elif admission == "release":
            self._leases.release(delivery)

    def _keys(self, delivery: Delivery) -> tuple[str, str]:
        """What the per-host and per-tenant limits count `delivery` under."""
        return endpoint_of(delivery.callback_url).host, delivery.tenant

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
            passed = self._limits.pass_on(delivery, self._start)
            self._slot_freed(*self._keys(delivery))
            if passed is None:
                return
            delivery = passed
            self._posting += 1

    async def _attempt(self, delivery: Delivery) -> None:
        """One attempt: the request in a global slot (the host's and the tenant's are its
        caller's), then its outcome queued for the next commit. The slots are given up as soon
        as the answer is in (the receiver is done with it); the delivery stays held until its
        outcome is committed (a cancelled attempt stays held too: `drain` hands it back)."""
        try:
            async with self._concurrency:
                endpoint = endpoint_of(delivery.callback_url)
                started = self._clock.now()
                began = time.perf_counter()
                headers = self._endpoints.headers(delivery, endpoint, started)
                if isinstance(headers, str):  # it cannot be signed: that is the error
                    answer = Answer(None, None, headers)
                else:
                    answer = await self._sender.send(
                        delivery.callback_method, endpoint.url, headers, delivery.body,
                        delivery.tenant,
                    )  # fmt: skip
                duration = time.perf_counter() - began
        except Exception:
            log.exception("delivery.crashed", watch_id=delivery.watch_id, webhook_id=delivery.id)
            self._leases.drop(delivery.id)
            return
        finally:
            self._posting -= 1
        now = self._clock.now()
        attempts_made = delivery.attempts + 1
        verdict = judge(
            answer.status_code, answer.retry_after, attempts_made, self._settings, now,
            self._rand(), delivery.final_statuses,
        )  # fmt: skip
        attempt = Attempt(
            delivery_id=delivery.id,
            event_type=delivery.event_type,
            number=attempts_made,
            started_at=started,
            duration_s=duration,
            status_code=answer.status_code,
            error=answer.error,
            next_attempt_at=verdict.next_attempt_at,
            verdict=verdict.verdict,
            response=response_start(answer),
        )
        self._leases.record(AttemptRecord(delivery, attempt, verdict.outcome, now))

    # Claims between the periodic ones.

    def _slot_freed(self, host: str, tenant: str) -> None:
        """An attempt to `host` of `tenant` ended: claim more if the store may have some worth
        taking."""
        if not self._claims_open or not self._leftovers.worth_claiming(self._limits, host, tenant):
            return
        if self._refilling is not None and not self._refilling.done():
            self._refill_again.add((host, tenant))
            return
        self._refilling = asyncio.create_task(self._refill(), name="delivery refill")

    async def _refill(self) -> None:
        while self._claims_open:
            self._refill_again.clear()
            try:
                await self.claim()
            except StoreError as error:
                if not isinstance(error, StoreUnavailable):  # an outage is logged once
                    log.warning("delivery.claim_failed", error=str(error))
                return
            worth = self._leftovers.worth_claiming
            if not any(worth(self._limits, *keys) for keys in self._refill_again):
                return
