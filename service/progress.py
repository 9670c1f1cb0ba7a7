"""The progress writer: what polls saw, written under the watches' leases.

Changes (a new status, a queue position, an error, progress events) are batched: each flush
writes what gathered meanwhile in one transaction, so a poll that sees nothing new costs no
write and busy polling costs one commit per flush, not per poll. A final event is not batched:
`complete` commits it (after the watch's events still pending) before its deliveries are
first attempted. Every status change is recorded as an event (the store fans it out to the
watch's callback, when it asked for the type, and to the tenant's subscriptions); `notify`
hears of each watch whose events committed.
Watches whose lease a flush found lost are put on `lost`, for the poller to let go of.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

import structlog

from service import events
from service.clock import Clock
from service.errors import StoreError, StoreUnavailable
from service.store.base import Completion, Delivery, NewEvent, Progress, Store
from service.tracked import Tracked

log = structlog.get_logger("service.progress")
# A flush waits this long for more changes to join its transaction: at a few hundred polls a
# second each would otherwise pay a commit of its own. Final events do not wait.
GATHER_S = 0.003
# After a flush the store refused, the next try waits this long.
RETRY_S = 0.5


class Deliveries(Protocol):
    """Where new deliveries go: the deliverer."""

    def submit(self, delivery: Delivery) -> None:
        """Attempt a delivery claimed by this process."""

    async def claim(self) -> None:
        """Claim the due deliveries there is room for."""


class ProgressWriter:
    def __init__(
        self,
        store: Store,
        deliveries: Deliveries,
        clock: Clock,
        owner: str,
        lease_s: float,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self._store = store
        self._deliveries = deliveries
        self._clock = clock
        self._owner = owner
        # Final deliveries are claimed with their completion, for this long (renewed after).
        self._lease_s = lease_s
        # Told the id of each watch whose events were just committed.
        self._notify = notify
        self._changes: dict[str, Progress] = {}
        self._wanted = asyncio.Event()
        self._running = False
        self._task: asyncio.Task[None] | None = None
        self.lost: asyncio.Queue[str] = asyncio.Queue()

    def start(self) -> None:
        self._running = True
        self._task = asyncio.create_task(self._run(), name="progress writer")

    async def stop(self) -> None:
        """Write what is pending, and stop."""
        self._running = False
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.flush()

    def record(self, tracked: Tracked, progress: tuple[events.Event, ...], now: float) -> None:
        """Write `tracked`'s state, and its `progress` events, with the next flush."""
        earlier = self._changes.get(tracked.watch_id)
        recorded: tuple[NewEvent, ...] = tuple(earlier.events) if earlier else ()
        recorded += tuple(tracked.event(event, now) for event in progress)
        self._changes[tracked.watch_id] = tracked.progress(recorded)
        self._wanted.set()

    def discard(self, watch_id: str) -> None:
        """Drop what is pending for a watch no longer held."""
        self._changes.pop(watch_id, None)

    async def complete(self, tracked: Tracked, event: events.Event, now: float) -> None:
        """Commit the final event, then attempt its deliveries at once. Raises `LeaseLost`,
        or `StoreError` when the final event was not committed."""
        pending = self._changes.pop(tracked.watch_id, None)
        if pending is not None and pending.events:
            # Events a refused flush left come first: after the completion they would be lost.
            try:
                await self._store.record_progress(self._owner, now, [pending])
            except StoreError:
                self._keep(pending)
                raise
        completion = Completion(
            watch_id=tracked.watch_id,
            lease_token=tracked.token,
            job_status=tracked.state.job_status,
            last_error=event.error if event.error_code != events.GENERATION_FAILED else None,
            event=tracked.event(event, now),
        )
        deliveries = await self._store.complete_watch(
            self._owner, now, completion, now + self._lease_s
        )
        log.info(
            "watch.completed", watch_id=tracked.watch_id, job_id=tracked.job_id,
            event_type=event.type, error_code=event.error_code,
        )  # fmt: skip
        self._notified(tracked.watch_id)
        for delivery in deliveries:
            self._deliveries.submit(delivery)

    async def _run(self) -> None:
        while self._running:
            await self._wanted.wait()
            await self._clock.sleep(GATHER_S)  # `stop` flushes what this leaves waiting
            self._wanted.clear()
            if not await self.flush():
                await self._clock.sleep(RETRY_S)
                self._wanted.set()

    async def flush(self) -> bool:
        """Write the pending changes; False when the store refused them (they stay pending:
        a watch's state as last recorded, with all of its events)."""
        if not self._changes:
            return True
        batch, self._changes = list(self._changes.values()), {}
        try:
            outcome = await self._store.record_progress(self._owner, self._clock.now(), batch)
        except StoreError as error:
            if not isinstance(error, StoreUnavailable):  # an outage is logged once
                log.error("poll.record_failed", changes=len(batch), error=str(error))
            for change in batch:
                self._keep(change)
            return False
        lost = outcome.lost
        for watch_id in lost:
            log.info("poll.lease_lost", watch_id=watch_id)
            self.lost.put_nowait(watch_id)
        for change in batch:
            if change.events and change.watch_id not in lost:
                self._notified(change.watch_id)
        if outcome.deliveries:  # the new deliveries (callback or subscriptions) are due now
            await self._deliveries.claim()
        return True

    def _keep(self, change: Progress) -> None:
        """Keep a change not written for the next flush: a later change of its watch supersedes
        its state, not its events, which come first."""
        later = self._changes.get(change.watch_id)
        if later is not None:
            change = replace(later, events=(*change.events, *later.events))
        self._changes[change.watch_id] = change

    def _notified(self, watch_id: str) -> None:
        """Tell `notify` of a watch's committed events; its failure is not polling's."""
        if self._notify is None:
            return
        try:
            self._notify(watch_id)
        except Exception:
            log.exception("progress.notify_failed", watch_id=watch_id)
