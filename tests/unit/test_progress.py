"""The progress writer, driven by hand (not started) on the memory store and a fake clock: what
it keeps of the changes a store outage refused."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from service.clock import FakeClock
from service.config import PollSettings
from service.errors import StoreUnavailable
from service.events import Event
from service.progress import ProgressWriter
from service.store.base import Delivery, Progress, Recorded, Watch
from service.store.memory import MemoryStore
from service.tracked import Holdings, Tracked
from tests.integration.test_store_contract import new_watch
from tests.unit.fake_time import settle

OWNER = "me"
EVERY = ("job.queued", "job.processing", "job.succeeded", "job.failed")


class Deliveries:
    """The deliverer: keeps what it is handed."""

    def __init__(self) -> None:
        self.submitted: list[Delivery] = []

    def submit(self, delivery: Delivery) -> None:
        self.submitted.append(delivery)

    async def claim(self) -> None:
        pass


class SlowStore(MemoryStore):
    """The memory store whose progress writes wait for `gate`, as a store going away answers
    late."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.gate = asyncio.Event()
        self.gate.set()

    async def record_progress(
        self, owner: str, now: float, changes: Sequence[Progress]
    ) -> Recorded:
        await self.gate.wait()
        return await super().record_progress(owner, now, changes)


async def held_watch(store: MemoryStore, clock: FakeClock) -> tuple[Watch, Tracked]:
    """A watch registered with OWNER's lease, asking for every event, as its poller holds it."""
    watch = new_watch(created_at=clock.now(), events=EVERY)
    stored = await store.insert_watch(watch, lease_owner=OWNER, lease_until=clock.now() + 15)
    target = Holdings(PollSettings()).add(stored, (stored.job_id, None), clock.now())
    return stored, target.watches[stored.id]


async def recorded_types(store: MemoryStore, watch: Watch) -> list[str]:
    return [event.type for event in await store.watch_events(watch.tenant, watch.id)]


async def test_a_refused_flush_keeps_its_events_when_the_watch_changed_meanwhile() -> None:
    """The events of a flush the store refused are written with a later one, also when the
    watch recorded another change while the refused flush was under way."""
    clock = FakeClock()
    store = SlowStore(clock)
    writer = ProgressWriter(store, Deliveries(), clock, OWNER, 15.0)
    watch, tracked = await held_watch(store, clock)
    writer.record(tracked, (Event("job.queued", "queued"),), clock.now())
    store.gate.clear()
    store.outage = StoreUnavailable("the server is restarting")
    flushing = asyncio.ensure_future(writer.flush())
    await settle()

    writer.record(tracked, (Event("job.processing", "processing"),), clock.now())
    store.gate.set()
    assert not await flushing
    store.outage = None

    assert await writer.flush()
    assert await recorded_types(store, watch) == ["job.queued", "job.processing"]


async def test_a_job_ending_during_an_outage_keeps_the_events_not_yet_written() -> None:
    """A job that ends while its earlier events wait for the store to come back has them
    recorded before its final event, once its completion is committed after the outage."""
    clock = FakeClock()
    store = SlowStore(clock)
    deliveries = Deliveries()
    writer = ProgressWriter(store, deliveries, clock, OWNER, 15.0)
    watch, tracked = await held_watch(store, clock)
    store.outage = StoreUnavailable("the server is restarting")
    writer.record(tracked, (Event("job.processing", "processing"),), clock.now())
    assert not await writer.flush()
    succeeded = Event("job.succeeded", "succeeded")
    with pytest.raises(StoreUnavailable):
        await writer.complete(tracked, succeeded, clock.now())

    store.outage = None
    await writer.complete(tracked, succeeded, clock.now())

    assert await recorded_types(store, watch) == ["job.processing", "job.succeeded"]
    assert [d.event_type for d in deliveries.submitted] == ["job.succeeded"]
