"""The dispatcher: holds claimed watches in memory, polls them on time, writes only changes.

Watches are claimed with a lease and renewed in bulk, so a poll that sees nothing new costs no
database write. Watches of the same job and API key form one *target*, polled with one request.
A timer loop pops due targets off a heap; state changes are batched into one transaction per
flush; a final event is committed before its deliveries are first attempted. Every status change
is recorded as an event (the store fans it out to the watch's callback, when it asked for the
type, and to the tenant's subscriptions); `notify` hears of each watch whose events committed.
APScheduler drives the periodic `tick` (claiming new work and due deliveries, renewing leases).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from service import breaker, events, pacing, polling, schedule, throttle
from service.clock import Clock
from service.config import Settings
from service.delivery import Deliverer
from service.errors import LeaseLost, StoreError, StoreUnavailable
from service.ids import new_id
from service.observation import Observation
from service.store.base import Completion, NewDelivery, NewEvent, Progress, Store, Watch
from service.upstream import UpstreamClient
from service.vault import Vault, VaultError

log = structlog.get_logger("service.dispatcher")

TargetKey = tuple[str, str | None]
# Claimed watches held in memory by one process; more stay in the store for other replicas.
MAX_HELD_WATCHES = 200_000
# Claimed per tick: replicas starting together split the backlog, and a restart with many
# active watches spreads their first polls over a few ticks instead of one burst.
CLAIM_BATCH = 1_000
# Distinct polling rules and event sets shared between held watches; past this many (an odd
# registration pattern), sharing starts over rather than grow without bound.
SHARED_CACHE_SIZE = 1_024
# While polls wait (for the rate cap or the circuit breaker), the due ones are checked this often
# for watches whose timeout passed: those end on time even when no request may go.
SWEEP_S = 1.0
# A flush of progress waits this long for more changes to join its transaction: at a few hundred
# polls a second each would otherwise pay a commit (an fsync, a thread hop) of its own. 10 ms
# saved more there but cost the closed-loop registration benchmark 3 % (docs/performance.md).
# Final events do not wait: `_finish` commits them.
PROGRESS_GATHER_S = 0.003


@dataclass(slots=True)
class Tracked:
    """A held watch: only what polling and its events need. The rest of the watch (callback,
    headers, secret) stays in the store, which hands it to the delivery at completion."""

    watch_id: str
    job_id: str
    metadata: dict[str, Any] | None
    payload_format: str
    # The event types its own callback gets (shared instances); empty: it has no callback.
    callback_events: frozenset[str]
    token: int
    state: polling.State
    rules: polling.Rules  # shared by every watch with the same interval and timeout
    next_poll_at: float

    def subject(self) -> events.Subject:
        return events.Subject(self.watch_id, self.job_id, self.metadata, self.payload_format)

    def event(self, event: events.Event, now: float) -> NewEvent:
        """`event` to record: its envelope, and its callback delivery if the watch wants it."""
        subject, event_id = self.subject(), new_id("evt", now)
        body = events.envelope(subject, event, now, event_id)
        final = event.type in events.FINAL_EVENTS
        callback = None
        if event.type in self.callback_events:
            sent = (
                body
                if self.payload_format != "raw"
                else events.render(subject, event, now, event_id)
            )
            callback = NewDelivery(new_id("msg", now), event.type, sent, final)
        return NewEvent(event_id, event.type, final, body, callback)


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
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self._store = store
        # Told the id of each watch whose events were just committed.
        self._notify = notify
        self._vault = vault or Vault([])
        self._upstream = upstream
        self._deliverer = deliverer
        # One delivery claim at a time: each is planned from what the deliverer holds.
        self._claiming = asyncio.Lock()
        deliverer.refill = self.claim_deliveries
        self._settings = settings
        self._clock = clock
        self.owner = owner
        self._rand = rand
        poll = settings.poll
        # Adaptive pacing: one learner for this process's upstream, fed by every poll.
        self._pacing = (
            pacing.Learner(poll.min_interval_s, poll.interval_s)
            if poll.strategy == "adaptive"
            else None
        )
        self._targets: dict[TargetKey, Target] = {}
        self._rules: dict[tuple[float, float], polling.Rules] = {}
        self._event_sets: dict[tuple[str, ...], frozenset[str]] = {}
        self._by_watch: dict[str, TargetKey] = {}
        self._heap: list[tuple[float, int, TargetKey, int]] = []
        self._seq = 0
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.upstream.max_concurrency)
        upstream_settings = settings.upstream
        now = clock.now()
        # Due targets wait here for a slot, a token and their key's turn: (key, generation).
        self._ready: throttle.Throttle[str | None, tuple[TargetKey, int]] = throttle.Throttle(
            upstream_settings.max_requests_per_s,
            upstream_settings.request_burst,
            upstream_settings.max_requests_per_s_per_key,
            upstream_settings.request_burst_per_key,
            now,
        )
        self._capped = (
            upstream_settings.max_requests_per_s > 0
            or upstream_settings.max_requests_per_s_per_key > 0
        )
        self._breaker: breaker.Breaker | None = None
        if upstream_settings.circuit_breaker:
            self._breaker = breaker.Breaker(breaker_rules(settings), now)
        self._next_sweep = now
        self.on_circuit: Callable[[breaker.Transition], None] | None = None
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

    def adopt(self, watch: Watch, not_before: float = 0.0) -> None:
        """Start polling a watch this process holds the lease of (token in `watch`), first when
        it is due and not before `not_before`."""
        if watch.id in self._by_watch:
            return
        state = polling.State(
            created_at=watch.created_at,
            job_status=_intern(watch.job_status),
            queue_position=watch.queue_position,
            last_error=watch.last_error,
        )
        due = max(watch.next_poll_at, watch.created_at, not_before)
        tracked = Tracked(
            watch.id, watch.job_id, watch.metadata, sys.intern(watch.payload_format),
            self._shared(watch.events if watch.callback_url else ()),
            watch.lease_token, state, self._rules_for(watch), due,
        )  # fmt: skip
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

    def _rules_for(self, watch: Watch) -> polling.Rules:
        """The polling rules of `watch`, one instance per interval and timeout."""
        key = (watch.poll_interval_s, watch.timeout_s)
        rules = self._rules.get(key)
        if rules is None:
            if len(self._rules) >= SHARED_CACHE_SIZE:
                self._rules.clear()  # held watches keep theirs; new ones share anew
            poll = self._settings.poll
            rules = self._rules[key] = polling.Rules(
                interval_s=watch.poll_interval_s,
                timeout_s=watch.timeout_s,
                jitter=poll.jitter,
                max_backoff_s=poll.max_backoff_s,
                not_found_grace_s=poll.not_found_grace_s,
            )
        return rules

    def _shared(self, names: tuple[str, ...]) -> frozenset[str]:
        """The set of event names, one instance per distinct set."""
        found = self._event_sets.get(names)
        if found is None:
            if len(self._event_sets) >= SHARED_CACHE_SIZE:
                self._event_sets.clear()
            found = self._event_sets[names] = frozenset(sys.intern(name) for name in names)
        return found

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
            if self._pacing is not None:
                self._pacing.forget(key)

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
        """Move due targets from the heap to the ready queue; start the ones the rate caps and
        the circuit breaker admit, each in a slot; sleep until the next due time or token."""
        ready = self._ready
        while self._running:
            now = self._clock.now()
            self._take_due(now)
            wake_at = self._heap[0][0] if self._heap else now + 3600.0
            if ready:
                blocked_until = self._blocked_until(now)
                if blocked_until is None:
                    token_at = ready.ready_at(now)
                    if token_at is not None and token_at <= now:
                        await self._slots.acquire()
                        if self._start_next():
                            continue
                        self._slots.release()
                        now = self._clock.now()
                        token_at = ready.ready_at(now)
                    if token_at is not None:
                        # Wait at least a little: a token a few nanoseconds away is not a spin.
                        wake_at = min(wake_at, max(token_at, now + 0.0005))
                else:
                    wake_at = min(wake_at, blocked_until)
                if blocked_until is not None or self._capped or ready.holding:
                    if now >= self._next_sweep:
                        self._sweep(now)
                        self._next_sweep = now + SWEEP_S
                    wake_at = min(wake_at, self._next_sweep)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wake_at - now, 0.0)):
                    await self._wake.wait()

    def _take_due(self, now: float) -> None:
        """Move the targets due at `now` from the heap to the ready queue."""
        heap, targets, ready = self._heap, self._targets, self._ready
        while heap and heap[0][0] <= now:
            _, _, key, generation = heapq.heappop(heap)
            target = targets.get(key)
            if target is not None and target.generation == generation and not target.polling:
                ready.push(key[1], (key, generation))

    def _alive(self, entry: tuple[TargetKey, int]) -> bool:
        target = self._targets.get(entry[0])
        return target is not None and target.generation == entry[1] and not target.polling

    def _blocked_until(self, now: float) -> float | None:
        """None when the circuit breaker lets a request go at `now`, else when it may."""
        gate = self._breaker
        if gate is None or gate.state == "closed":
            return None
        if gate.state == "open":
            retry_at = gate.retry_at
            assert retry_at is not None
            return retry_at if now < retry_at else None
        probe_until = gate.probe_until
        return probe_until if probe_until is not None and now < probe_until else None

    def _start_next(self) -> bool:
        """Start the next admitted target's poll in the slot the caller holds; False if none."""
        now = self._clock.now()
        gate = self._breaker
        probing = False
        if gate is not None and gate.state != "closed":
            allowed, change = gate.allow(now)
            self._circuit(change)
            if not allowed:
                return False
            probing = gate.state == "half_open"
        entry = self._ready.pop(now, self._alive)
        if entry is None:
            if probing and gate is not None:
                gate.unprobe()
            return False
        target = self._targets[entry[0]]
        if self.lateness is not None:
            self.lateness(now - target.due)
        target.polling = True
        task = asyncio.create_task(self._poll(target))
        self._polls.add(task)
        task.add_done_callback(self._polls.discard)
        return True

    def _sweep(self, now: float) -> None:
        """End, without a request, the watches of waiting targets whose timeout passed."""
        for entry in list(self._ready):
            if not self._alive(entry):
                continue
            target = self._targets[entry[0]]
            rules_state = ((t.state, t.rules) for t in target.watches.values())
            if any(polling.deadline_passed(st, ru, now) is not None for st, ru in rules_state):
                target.polling = True
                task = asyncio.create_task(self._expire(target))
                self._polls.add(task)
                task.add_done_callback(self._polls.discard)

    async def _end_expired(self, target: Target, now: float) -> None:
        """Finish, with their timeout event, the watches of `target` whose time is up."""
        for tracked in list(target.watches.values()):
            timeout = polling.deadline_passed(tracked.state, tracked.rules, now)
            if timeout is not None:
                await self._finish(tracked, timeout, now)

    async def _expire(self, target: Target) -> None:
        try:
            now = self._clock.now()
            await self._end_expired(target, now)
        except Exception:
            log.exception("poll.crashed", job_id=target.key[0])
        finally:
            target.polling = False
            if target.watches and self._targets.get(target.key) is target:
                # Back in line: its remaining watches are still due.
                self._schedule(target, min(t.next_poll_at for t in target.watches.values()))

    async def _fetch(self, job_id: str, api_key: str | None) -> Observation:
        """One upstream request, its outcome counted by the circuit breaker; a 429 holds its
        key's polls."""
        started = self._clock.now()
        seen = await self._upstream.fetch(job_id, api_key)
        now = self._clock.now()
        if self._breaker is not None:
            self._circuit(self._breaker.record(now, started, breaker.is_failure(seen)))
        if seen.http_status == 429:
            self._rate_limited(api_key, seen, now)
        return seen

    def _rate_limited(self, api_key: str | None, seen: Observation, now: float) -> None:
        """A 429 holds every poll of its key, not only the watches that saw it, until the
        upstream's Retry-After (within poll.max_backoff_s; 1 s without one)."""
        wait = schedule.retry_after(seen.retry_after, now, self._settings.poll.max_backoff_s)
        self._ready.hold(api_key, now + (wait if wait is not None else 1.0))

    def _circuit(self, change: breaker.Transition | None) -> None:
        if change is None:
            return
        fields: dict[str, object] = {"reason": change.reason, "previous": change.before}
        if change.retry_at is not None:
            fields["probe_in_s"] = round(change.retry_at - change.at, 3)
        if change.after == "open":
            log.warning("upstream.circuit_opened", **fields)
        elif change.after == "half_open":
            log.info("upstream.circuit_half_open", **fields)
        else:
            log.info("upstream.circuit_closed", **fields)
        if self.on_circuit is not None:
            self.on_circuit(change)
        if change.after == "closed":
            self._respread(change.at)
        self._wake.set()

    def _respread(self, now: float) -> None:
        """Spread the polls that fell due during a pause over an interval, as at start-up, so
        a recovering upstream is not met with the whole backlog at once."""
        waiting = [self._targets[entry[0]] for entry in list(self._ready) if self._alive(entry)]
        cap = self._settings.upstream.max_requests_per_s
        for rank, target in enumerate(waiting):
            interval = min(t.rules.interval_s for t in target.watches.values())
            self._schedule(target, now + throttle.spread(rank, len(waiting), interval, cap))

    @property
    def throttled(self) -> int:
        """Due targets waiting for a token, a slot or the circuit breaker (at a scrape: it
        walks the queue)."""
        return sum(1 for entry in self._ready if self._alive(entry))

    @property
    def circuit_state(self) -> breaker.State:
        return self._breaker.state if self._breaker is not None else "closed"

    async def _poll(self, target: Target) -> None:
        try:
            now = self._clock.now()
            await self._end_expired(target, now)
            if not target.watches:
                return
            job_id, api_key = target.key
            seen = await self._fetch(job_id, api_key)
            now = self._clock.now()
            outlook = None
            if self._pacing is not None:
                outlook = self._pacing.observe(
                    target.key, seen.job_status, seen.queue_position, now
                )
            for tracked in list(target.watches.values()):
                step = polling.step(tracked.state, seen, tracked.rules, now, self._rand(), outlook)
                if step.final is not None:
                    await self._finish(tracked, step.final, now)
                    continue
                assert step.next_poll_at is not None
                tracked.next_poll_at = step.next_poll_at
                if step.changed or step.progress:
                    self._record(tracked, step.progress, now)
                if seen.kind == "transient":
                    log.info(
                        "poll.failed", watch_id=tracked.watch_id, job_id=job_id,
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
        watch_id, state = tracked.watch_id, tracked.state
        earlier = self._changes.get(watch_id)
        recorded = tuple(earlier.events) if earlier else ()
        recorded += tuple(tracked.event(event, now) for event in progress)
        self._changes[watch_id] = Progress(
            watch_id=watch_id,
            lease_token=tracked.token,
            job_status=state.job_status,
            queue_position=state.queue_position,
            last_error=state.last_error,
            next_poll_at=tracked.next_poll_at,
            events=recorded,
        )
        self._flush_wanted.set()

    async def _finish(self, tracked: Tracked, event: events.Event, now: float) -> None:
        """Commit the final event, stop polling the watch, and attempt its deliveries at once."""
        subject = tracked.subject()
        self._changes.pop(subject.watch_id, None)
        completion = Completion(
            watch_id=subject.watch_id,
            lease_token=tracked.token,
            job_status=tracked.state.job_status,
            last_error=event.error if event.error_code != events.GENERATION_FAILED else None,
            event=tracked.event(event, now),
        )
        lease_until = now + self._delivery_lease_s()
        try:
            deliveries = await self._store.complete_watch(self.owner, now, completion, lease_until)
        except LeaseLost:
            log.info("poll.lease_lost", watch_id=subject.watch_id)
            self.forget(subject.watch_id)
            return
        except StoreError as error:
            # Nothing was committed: keep polling, the next poll sees the same ending. An
            # outage is logged once, by the store's health.
            if not isinstance(error, StoreUnavailable):
                log.error("poll.complete_failed", watch_id=subject.watch_id, error=str(error))
            tracked.next_poll_at = now + tracked.rules.interval_s
            return
        self.forget(subject.watch_id)
        log.info(
            "watch.completed", watch_id=subject.watch_id, job_id=subject.job_id,
            event_type=event.type, error_code=event.error_code,
        )  # fmt: skip
        self._notified(subject.watch_id)
        for delivery in deliveries:
            self._deliverer.submit(delivery)

    def _notified(self, watch_id: str) -> None:
        """Tell `notify` of a watch's committed events; its failure is not polling's."""
        if self._notify is None:
            return
        try:
            self._notify(watch_id)
        except Exception:
            log.exception("dispatcher.notify_failed", watch_id=watch_id)

    def _delivery_lease_s(self) -> float:
        # Renewed with the watch leases while the attempt is in flight.
        return self._settings.store.lease_s

    # Writing changes.

    async def _flush_loop(self) -> None:
        while self._running:
            await self._flush_wanted.wait()
            await asyncio.sleep(PROGRESS_GATHER_S)  # `stop` flushes what this leaves waiting
            self._flush_wanted.clear()
            await self._flush()

    async def _flush(self) -> None:
        if not self._changes:
            return
        batch, self._changes = list(self._changes.values()), {}
        try:
            outcome = await self._store.record_progress(self.owner, self._clock.now(), batch)
        except StoreError as error:
            if not isinstance(error, StoreUnavailable):  # an outage is logged once
                log.error("poll.record_failed", changes=len(batch), error=str(error))
            for change in batch:  # try again with the next flush, unless superseded
                self._changes.setdefault(change.watch_id, change)
            await asyncio.sleep(0.5)
            self._flush_wanted.set()
            return
        lost = outcome.lost
        for watch_id in lost:
            log.info("poll.lease_lost", watch_id=watch_id)
            self.forget(watch_id)
        recorded = [c.watch_id for c in batch if c.events and c.watch_id not in lost]
        for watch_id in recorded:
            self._notified(watch_id)
        if outcome.deliveries:  # the new deliveries (callback or subscriptions) are due now
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
                claimed = await self._store.claim_watches(self.owner, now, lease_until, room)
                self._adopt_claimed(claimed, now)
        except StoreUnavailable:
            pass  # logged once per outage by the store's health; the next tick tries again
        except StoreError as error:
            log.error("dispatcher.tick_failed", error=str(error))

    def _adopt_claimed(self, claimed: list[Watch], now: float) -> None:
        """Adopt claimed watches, spreading the first polls of the overdue ones.

        After a restart (or a replica's death) every claimed watch is overdue, so all would be
        due at once: a burst of a whole batch of requests, and their later polls bunched as
        well. Their first polls are spread evenly over one poll interval instead (over longer
        when a global rate cap needs longer for them), in claim order.
        """
        overdue = sum(1 for w in claimed if max(w.next_poll_at, w.created_at) <= now)
        cap = self._settings.upstream.max_requests_per_s
        rank = 0
        for watch in claimed:
            if max(watch.next_poll_at, watch.created_at) > now:
                self.adopt(watch)
                continue
            delay = throttle.spread(rank, overdue, watch.poll_interval_s, cap)
            self.adopt(watch, not_before=now + delay)
            rank += 1

    async def claim_deliveries(self) -> None:
        """Claim due deliveries now (after a redelivery, say) instead of at the next tick."""
        if not self._running:
            return  # stopping: what is due waits for another process, or the next start
        async with self._claiming:
            plan = self._deliverer.claim_plan()
            if plan.limit <= 0:
                return
            now = self._clock.now()
            lease_until = now + self._delivery_lease_s()
            claimed = await self._store.claim_deliveries(
                self.owner, now, lease_until, plan.limit,
                per_host=plan.per_host, host_limits=plan.host_limits,
                per_tenant=plan.per_tenant, tenant_limits=plan.tenant_limits,
            )  # fmt: skip
            self._deliverer.claimed(plan, claimed)

    async def _renew(self, now: float) -> None:
        self._last_renewal = now
        lease_until = now + self._settings.store.lease_s
        sending = self._deliverer.held()
        if sending:
            # An attempt whose lease was lost finds out when it records its outcome; one still
            # waiting for its host is dropped (another process may be sending it).
            renewed = await self._store.renew_delivery_leases(self.owner, sending, lease_until)
            self._deliverer.lost({d for d, _ in sending} - renewed)
        held = self._held()
        if not held:
            return
        renewed = await self._store.renew_watch_leases(self.owner, held, lease_until)
        for watch_id, _ in held:
            if watch_id not in renewed:
                self.forget(watch_id)


def breaker_rules(settings: Settings) -> breaker.Rules:
    upstream = settings.upstream
    return breaker.Rules(
        window_s=upstream.circuit_window_s,
        min_requests=upstream.circuit_min_requests,
        failure_ratio=upstream.circuit_failure_ratio,
        consecutive_failures=upstream.circuit_consecutive_failures,
        cooldown_s=upstream.circuit_cooldown_s,
        max_cooldown_s=upstream.circuit_max_cooldown_s,
        # A probe reports within the request timeout; past it, it never will.
        probe_timeout_s=upstream.request_timeout_s + 1.0,
    )


def _intern(text: str | None) -> str | None:
    # Statuses repeat across every held watch: one string each instead of one per watch.
    return None if text is None else sys.intern(text)
