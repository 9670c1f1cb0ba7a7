"""Every upstream's poller behind one face (`Pollers`): a watch is let go by the poller that
holds it, on the memory store and a fake clock (nothing is polled: the pollers are not
started)."""

from __future__ import annotations

from collections import Counter

import httpx

from service.clock import FakeClock
from service.poller import Poller
from service.pollers import Pollers
from service.progress import ProgressWriter
from service.store.base import Delivery
from service.store.memory import MemoryStore
from service.upstream import UpstreamClient
from tests.integration.test_store_contract import new_watch
from tests.unit.worker_rig import OWNER, Observed, settings


class Deliveries:
    def submit(self, delivery: Delivery) -> None:
        raise AssertionError("nothing is delivered here")

    async def claim(self) -> None:
        raise AssertionError("nothing is claimed here")


class CountingWriter(ProgressWriter):
    """The progress writer, counting the discards it is asked for."""

    def __init__(self, store: MemoryStore, clock: FakeClock) -> None:
        super().__init__(store, Deliveries(), clock, OWNER, lease_s=15.0)
        self.discards: Counter[str] = Counter()

    def discard(self, watch_id: str) -> None:
        self.discards[watch_id] += 1
        super().discard(watch_id)


async def test_a_watch_is_forgotten_by_the_poller_holding_it_alone() -> None:
    """Forgetting a watch lets its poller go of it and drops what is pending for it once, not
    once per upstream; a watch that no poller holds has its pending writes dropped all the
    same."""
    clock = FakeClock()
    store = MemoryStore(clock)
    writer = CountingWriter(store, clock)
    config = settings(upstreams={"runway": {}, "fal": {}})
    async with httpx.MockTransport(lambda _: httpx.Response(500)) as transport:
        by_name = {}
        for name in config.upstream_names:
            limits, poll = config.upstream_named(name)
            client = UpstreamClient(transport, limits.root, limits.request_timeout_s)
            by_name[name] = Poller(client, writer, limits, poll, clock, Observed(), name=name)
        pollers = Pollers(by_name, writer)
        watch = new_watch(upstream="runway", created_at=clock.now())
        assert pollers.adopt(watch)

        pollers.forget(watch.id)
        pollers.forget("wch_held_by_none")

        assert pollers.held() == []
        assert writer.discards == {watch.id: 1, "wch_held_by_none": 1}
