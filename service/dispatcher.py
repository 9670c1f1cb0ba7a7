"""The dispatcher: holds claimed watches in memory, polls them on time, writes only changes.

Watches are claimed with a lease and renewed in bulk, so a poll that sees nothing new costs no
database write. Watches of the same job and API key form one *target*, polled with one request.
A timer loop pops due targets off a heap; state changes are batched into one transaction per
flush; a final event is committed before its delivery is first attempted. APScheduler drives the
periodic `tick` (claiming new work and due deliveries, renewing leases).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from service import events, polling
from service.clock import Clock
from service.config import Settings
from service.delivery import Deliverer
from service.errors import LeaseLost, StoreError
from service.ids import new_id
from service.store.base import Completion, NewDelivery, Progress, Store, Watch
from service.upstream import UpstreamClient
from service.vault import Vault, VaultError

log = structlog.get_logger("service.dispatcher")

TargetKey = tuple[str, str | None]
# Claimed watches held in memory by one process; more stay in the store for other replicas.
MAX_HELD_WATCHES = 200_000
# Claimed per tick: replicas starting together split the backlog, and a restart with many
# active watches spreads their first polls over a few ticks instead of one burst.
CLAIM_BATCH = 1_000


@dataclass(slots=True)
class Tracked:
    watch: Watch
    token: int
    state: polling.State
    rules: polling.Rules
    next_poll_at: float


@dataclass(slots=True)
class Target:
    key: TargetKey
    watches: dict[str, Tracked] = field(default_factory=dict)
    due: float = 0.0
    generation: int = 0
    polling: bool = False


class Dispatcher:
    def __init__(
        self,
        store: Store,
        upstream: UpstreamClient,
        deliverer: Deliverer,
        settings: Settings,
        clock: Clock,
        owner: str,
        rand: Callable[[], float] = random.random,
        vault: Vault | None = None,
    ) -> None:
        self._store = store
        self._vault = vault or Vault([])
        self._upstream = upstream
        self._deliverer = deliverer
        self._settings = settings
        self._clock = clock
        self.owner = owner
        self._rand = rand
        self._targets: dict[TargetKey, Target] = {}
        self._by_watch: dict[str, TargetKey] = {}
        self._heap: list[tuple[float, int, TargetKey, int]] = []
        self._seq = 0
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.upstream.max_concurrency)
        self._polls: set[asyncio.Task[None]] = set()
        self._changes: dict[str, Progress] = {}
        self._flush_wanted = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._running = False
        self._last_renewal = 0.0
        self.lateness: Callable[[float], None] | None = None

    # Lifecycle.

    async def start(self) -> None:
        self._running = True
        self._last_renewal = self._clock.now()
        self._loops = [
            asyncio.create_task(self._poll_loop(), name="poll loop"),
            asyncio.create_task(self._flush_loop(), name="flush loop"),
        ]
        await self.tick()

    async def stop(self, grace_s: float) -> None:
        """Stop polling, let in-flight requests finish within `grace_s`, write what is pending
        and release every lease so another process can take over at once."""
        self._running = False
        self._wake.set()
        self._flush_wanted.set()
        deadline = asyncio.get_running_loop().time() + grace_s  # one grace for all of it
        if self._polls:
            await asyncio.wait(set(self._polls), timeout=grace_s)
        for task in (*self._polls, *self._loops):
            task.cancel()
        await asyncio.gather(*self._polls, *self._loops, return_exceptions=True)
        await self._flush()
        abandoned = await self._deliverer.drain(deadline - asyncio.get_running_loop().time())
        held = self._held()
        with contextlib.suppress(StoreError):
            await self._store.release_watches(self.owner, held)
            await self._store.release_deliveries(self.owner, abandoned)
        log.info("dispatcher.stopped", released=len(held), abandoned=len(abandoned))

    def due_backlog(self) -> int:
        """Targets whose poll is due and not started: how far behind polling is."""
        now = self._clock.now()
        return sum(
            1 for t in self._targets.values() if not t.polling and t.watches and t.due <= now
        )

    @property
    def held_count(self) -> int:
        return len(self._by_watch)

    @property
    def running(self) -> bool:
        return self._running

    def _held(self) -> list[tuple[str, int]]:
        return [
            (watch_id, tracked.token)
            for target in self._targets.values()
            for watch_id, tracked in target.watches.items()
        ]

    # Holding watches.

    def adopt(self, watch: Watch) -> None:
        """Start polling a watch this process holds the lease of (token in `watch`)."""
        if watch.id in self._by_watch:
            return
        poll = self._settings.poll
        rules = polling.Rules(
            interval_s=watch.poll_interval_s,
            timeout_s=watch.timeout_s,
            jitter=poll.jitter,
            max_backoff_s=poll.max_backoff_s,
            not_found_grace_s=poll.not_found_grace_s,
        )
        state = polling.State(
            created_at=watch.created_at,
            events=frozenset(watch.events),
            job_status=watch.job_status,
            queue_position=watch.queue_position,
            last_error=watch.last_error,
        )
        due = max(watch.next_poll_at, watch.created_at)
        tracked = Tracked(watch, watch.lease_token, state, rules, due)
        try:
            api_key = self._vault.open(watch.upstream_api_key) if watch.upstream_api_key else None
        except VaultError as error:
            # Left unclaimed here; its lease expires for a process that has the key.
            log.error("poll.key_unreadable", watch_id=watch.id, error=error.message)
            return
        key = (watch.job_id, api_key or self._default_key())
        target = self._targets.get(key)
        if target is None:
            target = self._targets[key] = Target(key)
        target.watches[watch.id] = tracked
        self._by_watch[watch.id] = key
        if not target.polling and (len(target.watches) == 1 or due < target.due):
            self._schedule(target, due)

    def forget(self, watch_id: str) -> None:
        """Stop polling a watch (cancelled, completed, or its lease lost)."""
        key = self._by_watch.pop(watch_id, None)
        if key is None:
            return
        target = self._targets[key]
        target.watches.pop(watch_id, None)
        self._changes.pop(watch_id, None)
        if not target.watches:
            del self._targets[key]
            target.generation += 1  # its heap entries are now stale

    def _default_key(self) -> str | None:
        key = self._settings.upstream.api_key
        return key.get_secret_value() if key is not None else None

    def _schedule(self, target: Target, due: float) -> None:
        target.generation += 1
        target.due = due
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, target.key, target.generation))
        if self._heap[0][1] == self._seq:
            self._wake.set()

    # Polling.

    async def _poll_loop(self) -> None:
        while self._running:
            now = self._clock.now()
            while self._heap and self._heap[0][0] <= now:
                due, _, key, generation = heapq.heappop(self._heap)
                target = self._targets.get(key)
                if target is None or target.generation != generation:
                    continue
                await self._slots.acquire()
                if self.lateness is not None:
                    self.lateness(self._clock.now() - due)
                target.polling = True
                task = asyncio.create_task(self._poll(target))
                self._polls.add(task)
                task.add_done_callback(self._polls.discard)
                now = self._clock.now()
            delay = self._heap[0][0] - now if self._heap else 3600.0
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(delay, 0.0)):
                    await self._wake.wait()

    async def _poll(self, target: Target) -> None:
        try:
            now = self._clock.now()
            for tracked in list(target.watches.values()):
                timeout = polling.deadline_passed(tracked.state, tracked.rules, now)
                if timeout is not None:
                    await self._finish(tracked, timeout, now)
            if not target.watches:
                return
            job_id, api_key = target.key
            seen = await self._upstream.fetch(job_id, api_key)
            now = self._clock.now()
            for tracked in list(target.watches.values()):
                step = polling.step(tracked.state, seen, tracked.rules, now, self._rand())
                if step.final is not None:
                    await self._finish(tracked, step.final, now)
                    continue
                assert step.next_poll_at is not None
                tracked.next_poll_at = step.next_poll_at
                if step.changed or step.progress:
                    self._record(tracked, step.progress, now)
                if seen.kind == "transient":
                    log.info(
                        "poll.failed", watch_id=tracked.watch.id, job_id=job_id,
                        error=seen.error, failures=tracked.state.failures,
                    )  # fmt: skip
        except Exception:
            log.exception("poll.crashed", job_id=target.key[0])
            for tracked in target.watches.values():
                tracked.next_poll_at = self._clock.now() + tracked.rules.interval_s
        finally:
            target.polling = False
            self._slots.release()
            if target.watches and self._targets.get(target.key) is target:
                self._schedule(target, min(t.next_poll_at for t in target.watches.values()))

    def _record(self, tracked: Tracked, progress: tuple[events.Event, ...], now: float) -> None:
        watch, state = tracked.watch, tracked.state
        subject = _subject(watch)
        earlier = self._changes.get(watch.id)
        deliveries = tuple(earlier.deliveries) if earlier else ()
        deliveries += tuple(
            NewDelivery(new_id("msg", now), event.type, events.render(subject, event, now), False)
            for event in progress
        )
        self._changes[watch.id] = Progress(
            watch_id=watch.id,
            lease_token=tracked.token,
            job_status=state.job_status,
            queue_position=state.queue_position,
            last_error=state.last_error,
            next_poll_at=tracked.next_poll_at,
            deliveries=deliveries,
        )
        self._flush_wanted.set()

    async def _finish(self, tracked: Tracked, event: events.Event, now: float) -> None:
        """Commit the final event, stop polling the watch, and attempt the delivery at once."""
        watch = tracked.watch
        body = events.render(_subject(watch), event, now)
        self._changes.pop(watch.id, None)
        completion = Completion(
            watch_id=watch.id,
            lease_token=tracked.token,
            job_status=tracked.state.job_status,
            last_error=event.error if event.error_code != events.GENERATION_FAILED else None,
            delivery=NewDelivery(new_id("msg", now), event.type, body, True),
        )
        lease_until = now + self._delivery_lease_s()
        try:
            delivery = await self._store.complete_watch(self.owner, now, completion, lease_until)
        except LeaseLost:
            log.info("poll.lease_lost", watch_id=watch.id)
            self.forget(watch.id)
            return
        except StoreError as error:
            # Nothing was committed: keep polling, the next poll sees the same ending.
            log.error("poll.complete_failed", watch_id=watch.id, error=str(error))
            tracked.next_poll_at = now + tracked.rules.interval_s
            return
        self.forget(watch.id)
        log.info(
            "watch.completed", watch_id=watch.id, job_id=watch.job_id, event_type=event.type,
            error_code=event.error_code,
        )  # fmt: skip
        self._deliverer.submit(delivery)

    def _delivery_lease_s(self) -> float:
        # Renewed with the watch leases while the attempt is in flight.
        return self._settings.store.lease_s

    # Writing changes.

    async def _flush_loop(self) -> None:
        while self._running:
            await self._flush_wanted.wait()
            self._flush_wanted.clear()
            await self._flush()

    async def _flush(self) -> None:
        if not self._changes:
            return
        batch, self._changes = list(self._changes.values()), {}
        try:
            lost = await self._store.record_progress(self.owner, self._clock.now(), batch)
        except StoreError as error:
            log.error("poll.record_failed", changes=len(batch), error=str(error))
            for change in batch:  # try again with the next flush, unless superseded
                self._changes.setdefault(change.watch_id, change)
            await asyncio.sleep(0.5)
            self._flush_wanted.set()
            return
        for watch_id in lost:
            log.info("poll.lease_lost", watch_id=watch_id)
            self.forget(watch_id)
        if any(change.deliveries for change in batch):
            await self.claim_deliveries()

    # Periodic work.

    async def tick(self) -> None:
        """Claim due deliveries and unclaimed watches; renew leases when a third has passed."""
        if not self._running:
            return
        try:
            await self.claim_deliveries()
            now = self._clock.now()
            if now - self._last_renewal >= self._settings.store.lease_s / 3:
                await self._renew(now)
            room = min(MAX_HELD_WATCHES - self.held_count, CLAIM_BATCH)
            if room > 0:
                lease_until = now + self._settings.store.lease_s
                for watch in await self._store.claim_watches(self.owner, now, lease_until, room):
                    self.adopt(watch)
        except StoreError as error:
            log.error("dispatcher.tick_failed", error=str(error))

    async def claim_deliveries(self) -> None:
        """Claim due deliveries now (after a redelivery, say) instead of at the next tick."""
        room = self._deliverer.free_slots
        if room <= 0:
            return
        now = self._clock.now()
        lease_until = now + self._delivery_lease_s()
        for delivery in await self._store.claim_deliveries(self.owner, now, lease_until, room):
            self._deliverer.submit(delivery)

    async def _renew(self, now: float) -> None:
        self._last_renewal = now
        lease_until = now + self._settings.store.lease_s
        sending = self._deliverer.held()
        if sending:
            # An attempt whose lease was lost finds out when it records its outcome.
            await self._store.renew_delivery_leases(self.owner, sending, lease_until)
        held = self._held()
        if not held:
            return
        renewed = await self._store.renew_watch_leases(self.owner, held, lease_until)
        for watch_id, _ in held:
            if watch_id not in renewed:
                self.forget(watch_id)


def _subject(watch: Watch) -> events.Subject:
    return events.Subject(watch.id, watch.job_id, watch.metadata, watch.payload_format)
