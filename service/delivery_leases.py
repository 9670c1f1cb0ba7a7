"""The deliveries this process holds, and every store write about their leases: claims,
renewals, hand-backs, and the outcomes of attempts (which end the lease).

A delivery is held from its claim until its outcome is committed or it is handed back, and its
lease is renewed meanwhile. Outcomes are committed in groups: those that arrive while one
commit runs go into the next (one transaction for many attempts); an attempt whose outcome was
not committed (a crash) is made again later with the same `webhook-id`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

import structlog

from service.claims import ClaimPlan
from service.clock import Clock, wait_for_tasks
from service.errors import StoreError, StoreUnavailable
from service.store.base import Attempt, AttemptOutcome, AttemptRecord, Delivery, Store

log = structlog.get_logger("service.delivery")
# Under load, the least time between two commits of outcomes: what arrives meanwhile goes into
# one transaction. A lone outcome is committed at once.
COMMIT_GAP_S = 0.01


class DeliveryObserver(Protocol):
    """Told of each attempt recorded: the metrics."""

    def attempted(
        self, delivery: Delivery, attempt: Attempt, outcome: AttemptOutcome, now: float
    ) -> None: ...


class DeliveryLeases:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        owner: str,
        lease_s: float,
        observer: DeliveryObserver,
    ) -> None:
        self._store = store
        self._clock = clock
        self._owner = owner
        self._lease_s = lease_s
        self._observer = observer
        # Every delivery held and the lease token it was claimed with.
        self._held: dict[str, int] = {}
        # Outcomes waiting for the next commit, hand-backs for the next release, and the one
        # task that writes each.
        self._records: list[AttemptRecord] = []
        self._releases: list[tuple[str, int]] = []
        self._recorder: asyncio.Task[None] | None = None
        self._releaser: asyncio.Task[None] | None = None
        self._closing = False

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, delivery_id: str) -> bool:
        return delivery_id in self._held

    def leases(self) -> list[tuple[str, int]]:
        """(id, lease token) of every delivery held."""
        return list(self._held.items())

    def hold(self, delivery: Delivery) -> None:
        self._held[delivery.id] = delivery.lease_token

    def drop(self, delivery_id: str) -> None:
        """Let go of a delivery without a write: its lease runs out (or is already lost)."""
        self._held.pop(delivery_id, None)

    async def claim(self, plan: ClaimPlan) -> list[Delivery]:
        """Claim due deliveries within `plan` (held once submitted)."""
        now = self._clock.now()
        return await self._store.claim_deliveries(
            self._owner, now, now + self._lease_s, plan.limit,
            per_host=plan.per_host, host_limits=plan.host_limits,
            per_tenant=plan.per_tenant, tenant_limits=plan.tenant_limits,
        )  # fmt: skip

    async def renew(self) -> set[str]:
        """Extend the leases of the deliveries held; the ids of those whose lease was lost."""
        held = self.leases()
        if not held:
            return set()
        lease_until = self._clock.now() + self._lease_s
        renewed = await self._store.renew_delivery_leases(self._owner, held, lease_until)
        return {delivery_id for delivery_id, _ in held} - renewed

    async def give_back(self, held: Sequence[tuple[str, int]]) -> None:
        """Release the leases of `held` (id, token) deliveries no longer held (a shutdown)."""
        await self._store.release_deliveries(self._owner, held)

    def release(self, delivery: Delivery) -> None:
        """Hand a delivery back so any process may attempt it at once (with the next write)."""
        self._releases.append((delivery.id, delivery.lease_token))
        if self._releaser is None or self._releaser.done():
            self._releaser = asyncio.create_task(self._release_all(), name="delivery release")

    def record(self, record: AttemptRecord) -> None:
        """Commit an attempt's outcome with the next group, then let go of its delivery."""
        self._records.append(record)
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.create_task(self._record_all(), name="delivery records")

    def close(self) -> None:
        """A shutdown: commit what comes without waiting for more to join it."""
        self._closing = True

    async def settle(self, seconds: float) -> None:
        """Wait up to `seconds` for the writes under way."""
        writers = {task for task in (self._recorder, self._releaser) if task is not None}
        await wait_for_tasks(self._clock, writers, seconds)

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
                self._held.pop(delivery_id, None)

    async def _record_all(self) -> None:
        while self._records:
            batch, self._records = self._records, []
            try:
                lost = await self._store.record_attempts(self._owner, batch)
            except StoreError as failure:
                self._not_recorded(batch, failure)
            else:
                for record in batch:
                    self._recorded(record, record.delivery.id in lost)
            if self._records and not self._closing:
                await self._clock.sleep(COMMIT_GAP_S)

    def _not_recorded(self, batch: Sequence[AttemptRecord], failure: StoreError) -> None:
        for record in batch:
            self._held.pop(record.delivery.id, None)
            # Not recorded: the lease expires and the attempt is made again, same webhook-id.
            # An outage is logged once, not per attempt.
            if isinstance(failure, StoreUnavailable):
                continue
            log.error(
                "delivery.record_failed", watch_id=record.delivery.watch_id,
                webhook_id=record.delivery.id, error=f"store: {failure}",
            )  # fmt: skip

    def _recorded(self, record: AttemptRecord, lost: bool) -> None:
        delivery, attempt = record.delivery, record.attempt
        self._held.pop(delivery.id, None)
        if lost:
            log.info("delivery.lease_lost", watch_id=delivery.watch_id, webhook_id=delivery.id)
            return
        log.info(
            "delivery.attempted", watch_id=delivery.watch_id, webhook_id=delivery.id,
            event_type=delivery.event_type, attempt=attempt.number,
            status_code=attempt.status_code, error=attempt.error, outcome=record.outcome,
            duration_s=round(attempt.duration_s, 4),
        )  # fmt: skip
        self._observer.attempted(delivery, attempt, record.outcome, record.now)
