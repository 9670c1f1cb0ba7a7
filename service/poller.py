"""The poller: polls the watches this process holds on time, within the upstream's limits.

A loop moves due targets (`service.tracked`) from a heap to a ready queue (`throttle.Throttle`:
the request-rate caps, API keys taking turns), and starts the polls that the circuit breaker
admits, each in one of `upstream.max_concurrency` slots; then it waits, on the clock, for the
next due time or token. Each answer goes through the polling rules (`polling.step`): changes
go to the progress writer, and a final event is committed through it before the watch is let
go. While polls wait for the rate cap or the breaker, the watches whose timeout passed are
ended anyway (the sweep), so that they end on time.
"""

from __future__ import annotations

import asyncio
import heapq
import random
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import structlog

from service import breaker, events, pacing, polling, schedule, throttle
from service.clock import Clock, wait_for_tasks
from service.config import DEFAULT_UPSTREAM, PollSettings, UpstreamSettings
from service.errors import LeaseLost, StoreError, StoreUnavailable
from service.observation import Observation
from service.progress import ProgressWriter
from service.store.base import Watch
from service.tracked import Holdings, Target, TargetKey, Tracked
from service.upstream import UpstreamClient
from service.vault import Vault, VaultError

log = structlog.get_logger("service.poller")
# While polls wait (for the rate cap or the circuit breaker), the due ones are checked this often
# for watches whose timeout passed: those end on time even when no request may go.
SWEEP_S = 1.0
# With nothing held, the loop still looks again this often (it is woken sooner by new work).
IDLE_S = 3600.0
# A token a few nanoseconds away is waited for this long at least: not a spin.
MIN_WAIT_S = 0.0005


class PollObserver(Protocol):
    """Told how polling goes: the metrics."""

    def poll_started(self, upstream: str, lateness_s: float) -> None:
        """A poll of `upstream` started, this long after it was due."""

    def circuit_changed(self, upstream: str, change: breaker.Transition) -> None:
        """The circuit breaker of `upstream` changed state."""


class Poller:
    """Polls the watches of one upstream: its own slots, rate caps, breaker and pacing, so that
    one upstream's limits and outages never slow another's watches (`service.pollers`)."""

    def __init__(
        self,
        upstream: UpstreamClient,
        writer: ProgressWriter,
        limits: UpstreamSettings,
        poll: PollSettings,
        clock: Clock,
        observer: PollObserver,
        *,
        name: str = DEFAULT_UPSTREAM,
        vault: Vault | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.name = name
        self._upstream = upstream
        self._writer = writer
        self._limits = limits
        self._poll_settings = poll
        self._clock = clock
        self._vault = vault or Vault([])
        self._observer = observer
        self._rand = rand
        self._held = Holdings(poll)
        # Adaptive pacing: one learner for this upstream, fed by every poll.
        self._pacing = (
            pacing.Learner(poll.min_interval_s, poll.interval_s)
            if poll.strategy == "adaptive"
            else None
        )
        self._heap: list[tuple[float, int, TargetKey, int]] = []
        self._seq = 0
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(limits.max_concurrency)
        now = clock.now()
        # Due targets wait here for a slot, a token and their key's turn: (key, generation).
        self._ready: throttle.Throttle[str | None, tuple[TargetKey, int]] = throttle.Throttle(
            limits.max_requests_per_s, limits.request_burst,
            limits.max_requests_per_s_per_key, limits.request_burst_per_key, now,
        )  # fmt: skip
        self._capped = limits.max_requests_per_s > 0 or limits.max_requests_per_s_per_key > 0
        self._breaker = (
            breaker.Breaker(breaker_rules(limits), now) if limits.circuit_breaker else None
        )
        self._next_sweep = now
        self._polls: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._running = False

    # Lifecycle.

    def start(self) -> None:
        self._running = True
        self._loops = [asyncio.create_task(self._loop(), name=f"poll loop {self.name}")]

    async def stop(self, grace_s: float) -> None:
        """Start no more polls; give those in flight `grace_s` to finish, then cancel them."""
        self._running = False
        self._wake.set()
        await wait_for_tasks(self._clock, self._polls, grace_s)
        for task in (*self._polls, *self._loops):
            task.cancel()
        await asyncio.gather(*self._polls, *self._loops, return_exceptions=True)

    @property
    def running(self) -> bool:
        return self._running

    # Holding watches.

    def adopt(self, watch: Watch, not_before: float = 0.0) -> None:
        """Start polling a watch this process holds the lease of (token in `watch`), first when
        it is due and not before `not_before`. One held already is one this process claimed
        again after its lease ran out (a store outage): the store kept its token."""
        if watch.id in self._held:
            return
        try:
            api_key = self._vault.open(watch.upstream_api_key) if watch.upstream_api_key else None
        except VaultError as error:
            # Left unclaimed here; its lease expires for a process that has the key.
            log.error("poll.key_unreadable", watch_id=watch.id, error=error.message)
            return
        due = max(watch.next_poll_at, watch.created_at, not_before)
        target = self._held.add(watch, (watch.job_id, api_key or self._limits.bridge_key), due)
        if not target.polling and (len(target.watches) == 1 or due < target.due):
            self._schedule(target, due)

    def forget(self, watch_id: str) -> None:
        """Stop polling a watch (cancelled, completed, or its lease lost)."""
        self._writer.discard(watch_id)
        emptied = self._held.remove(watch_id)
        if emptied is not None and self._pacing is not None:
            self._pacing.forget(emptied.key)

    def holds(self, watch_id: str) -> bool:
        return watch_id in self._held

    def held(self) -> list[tuple[str, int]]:
        """(id, lease token) of every watch held, for the lease renewals."""
        return self._held.leases()

    @property
    def held_count(self) -> int:
        return len(self._held)

    def due_backlog(self) -> int:
        """Targets whose poll is due and not started: how far behind polling is."""
        now = self._clock.now()
        return sum(
            1 for t in self._held.targets.values() if not t.polling and t.watches and t.due <= now
        )

    @property
    def throttled(self) -> int:
        """Due targets waiting for a token, a slot or the circuit breaker (at a scrape: it
        walks the queue)."""
        return len(self._waiting())

    @property
    def circuit_state(self) -> breaker.State:
        return self._breaker.state if self._breaker is not None else "closed"

    def _schedule(self, target: Target, due: float) -> None:
        target.generation += 1
        target.due = due
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, target.key, target.generation))
        if self._heap[0][1] == self._seq:
            self._wake.set()

    # The loop.

    async def _loop(self) -> None:
        """Move due targets from the heap to the ready queue; start the ones the rate caps and
        the circuit breaker admit, each in a slot; wait until the next due time or token."""
        ready = self._ready
        while self._running:
            now = self._clock.now()
            self._take_due(now)
            wake_at = self._heap[0][0] if self._heap else now + IDLE_S
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
                        wake_at = min(wake_at, max(token_at, now + MIN_WAIT_S))
                else:
                    wake_at = min(wake_at, blocked_until)
                if blocked_until is not None or self._capped or ready.holding:
                    if now >= self._next_sweep:
                        self._sweep(now)
                        self._next_sweep = now + SWEEP_S
                    wake_at = min(wake_at, self._next_sweep)
            self._wake.clear()
            await self._clock.wait(self._wake, wake_at - now)

    def _take_due(self, now: float) -> None:
        """Move the targets due at `now` from the heap to the ready queue."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, key, generation = heapq.heappop(heap)
            if self._alive((key, generation)):
                self._ready.push(key[1], (key, generation))

    def _alive(self, entry: tuple[TargetKey, int]) -> bool:
        """Whether a heap or queue entry still stands for its target's next poll."""
        target = self._held.targets.get(entry[0])
        return target is not None and target.generation == entry[1] and not target.polling

    def _waiting(self) -> list[Target]:
        """The targets in the ready queue: waiting for a token, a slot or the breaker."""
        return [self._held.targets[entry[0]] for entry in list(self._ready) if self._alive(entry)]

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
        target = self._held.targets[entry[0]]
        self._observer.poll_started(self.name, now - target.due)
        self._launch(target, self._poll(target))
        return True

    def _launch(self, target: Target, work: Coroutine[Any, Any, None]) -> None:
        target.polling = True
        task = asyncio.create_task(work)
        self._polls.add(task)
        task.add_done_callback(self._polls.discard)

    def _sweep(self, now: float) -> None:
        """End, without a request, the watches of waiting targets whose timeout passed."""
        for target in self._waiting():
            rules_state = ((t.state, t.rules) for t in target.watches.values())
            if any(polling.deadline_passed(st, ru, now) is not None for st, ru in rules_state):
                self._launch(target, self._expire(target))

    # The circuit breaker.

    def _circuit(self, change: breaker.Transition | None) -> None:
        if change is None:
            return
        fields: dict[str, object] = {
            "upstream": self.name, "reason": change.reason, "previous": change.before,
        }  # fmt: skip
        if change.retry_at is not None:
            fields["probe_in_s"] = round(change.retry_at - change.at, 3)
        if change.after == "open":
            log.warning("upstream.circuit_opened", **fields)
        elif change.after == "half_open":
            log.info("upstream.circuit_half_open", **fields)
        else:
            log.info("upstream.circuit_closed", **fields)
        self._observer.circuit_changed(self.name, change)
        if change.after == "closed":
            self._respread(change.at)
        self._wake.set()

    def _respread(self, now: float) -> None:
        """Spread the polls that fell due during a pause over an interval, as at start-up, so
        a recovering upstream is not met with the whole backlog at once."""
        waiting = self._waiting()
        cap = self._limits.max_requests_per_s
        for rank, target in enumerate(waiting):
            interval = min(t.rules.interval_s for t in target.watches.values())
            self._schedule(target, now + throttle.spread(rank, len(waiting), interval, cap))

    # One poll.

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
        wait = schedule.retry_after(seen.retry_after, now, self._poll_settings.max_backoff_s)
        self._ready.hold(api_key, now + (wait if wait is not None else 1.0))

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
                    target.key, seen.job_status, seen.queue_position, now,
                    progress=seen.progress, eta_s=seen.eta_s,
                )  # fmt: skip
            for tracked in list(target.watches.values()):
                step = polling.step(tracked.state, seen, tracked.rules, now, self._rand(), outlook)
                if step.final is not None:
                    await self._finish(tracked, step.final, now)
                    continue
                assert step.next_poll_at is not None
                tracked.next_poll_at = step.next_poll_at
                if step.changed or step.progress:
                    self._writer.record(tracked, step.progress, now)
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
            self._slots.release()
            self._requeue(target)

    async def _expire(self, target: Target) -> None:
        try:
            await self._end_expired(target, self._clock.now())
        except Exception:
            log.exception("poll.crashed", job_id=target.key[0])
        finally:
            self._requeue(target)

    def _requeue(self, target: Target) -> None:
        """A poll of `target` ended: back in line for its remaining watches' next poll."""
        target.polling = False
        if target.watches and self._held.targets.get(target.key) is target:
            self._schedule(target, target.next_poll_at())

    async def _end_expired(self, target: Target, now: float) -> None:
        """Finish, with their timeout event, the watches of `target` whose time is up."""
        for tracked in list(target.watches.values()):
            timeout = polling.deadline_passed(tracked.state, tracked.rules, now)
            if timeout is not None:
                await self._finish(tracked, timeout, now)

    async def _finish(self, tracked: Tracked, event: events.Event, now: float) -> None:
        """Commit the final event (its deliveries then start), and stop polling the watch."""
        try:
            await self._writer.complete(tracked, event, now)
        except LeaseLost:
            log.info("poll.lease_lost", watch_id=tracked.watch_id)
        except StoreError as error:
            # Nothing was committed: keep polling, the next poll sees the same ending. An
            # outage is logged once, by the store's health.
            if not isinstance(error, StoreUnavailable):
                log.error("poll.complete_failed", watch_id=tracked.watch_id, error=str(error))
            tracked.next_poll_at = now + tracked.rules.interval_s
            return
        self.forget(tracked.watch_id)


def breaker_rules(upstream: UpstreamSettings) -> breaker.Rules:
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
