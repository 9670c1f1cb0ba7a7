"""What the memory store has beyond the contract suite (which runs on it with the SQL backends):
it is chosen by `memory://`, needs nothing to start, shows what it holds, and plays outages."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from service import config
from service import store as stores
from service.clock import FakeClock
from service.errors import StoreError, StoreUnavailable
from service.store.health import StoreHealth
from service.store.memory import MemoryStore
from tests.integration.test_store_contract import (
    LEASE_S,
    T0,
    TENANT,
    A,
    completion,
    new_watch,
)

FULL = StoreUnavailable("the disk is full", refusing_writes=True)


def test_memory_url_is_a_setting_and_chooses_the_memory_store(tmp_path: Path) -> None:
    """`store.url = "memory://"` loads, and the store built from it is a memory store reporting
    to the health it is given."""
    (tmp_path / "bridge.toml").write_text('[store]\nurl = "memory://"\n')
    settings = config.load(tmp_path / "bridge.toml", environ={})
    health = StoreHealth(FakeClock())

    chosen = stores.from_settings(settings.store, health)

    assert isinstance(chosen, MemoryStore)
    assert chosen.health is health


async def test_it_works_at_once_and_holds_what_it_was_given() -> None:
    """Built without arguments and unopened, it stores a watch and its final event; its state
    shows the delivery addressed to the callback, held by the completing owner."""
    store = MemoryStore()
    watch = await store.insert_watch(new_watch(), lease_owner=A, lease_until=T0 + LEASE_S)

    done = completion(watch)
    [delivery] = await store.complete_watch(A, T0, done, T0 + LEASE_S)

    assert store.watches[watch.id].status == "delivering"
    row = store.deliveries[delivery.id]
    assert (row.watch_id, row.host, row.tenant, row.status) == (
        watch.id, "https://receiver.example", TENANT, "pending",
    )  # fmt: skip
    assert (row.lease.owner, row.lease.token) == (A, 1)
    assert [(e.id, e.watch_id) for e in store.events] == [(done.event.id, watch.id)]


async def test_an_outage_fails_every_call_and_is_logged_once() -> None:
    """With `outage` set, reads and writes raise StoreUnavailable and health logs the outage
    once; cleared, the next call succeeds and logs the recovery."""
    clock = FakeClock()
    store = MemoryStore(clock)
    store.outage = StoreUnavailable("the server is restarting")

    with capture_logs() as logs:
        with pytest.raises(StoreUnavailable, match="restarting"):
            await store.get_watch(TENANT, "wch_1")
        with pytest.raises(StoreUnavailable):
            await store.insert_watch(new_watch())
        clock.advance(3)
        store.outage = None
        await store.count_watches()

    assert [line["event"] for line in logs] == ["store.unavailable", "store.recovered"]
    assert store.watches == {}


async def test_a_store_refusing_writes_still_answers_reads() -> None:
    """An outage refusing writes fails writes only, and only a write that succeeds ends it."""
    store = MemoryStore(FakeClock())
    watch = await store.insert_watch(new_watch())
    store.outage = FULL

    with pytest.raises(StoreUnavailable):
        await store.cancel_watch(TENANT, watch.id, T0)
    assert await store.get_watch(TENANT, watch.id) == watch
    store.outage = None
    await store.ping()
    assert store.health.reason == FULL.message
    await store.ping(write=True)
    assert store.health.reason is None


async def test_a_closed_store_refuses_calls() -> None:
    """After close, every call raises StoreError, as the SQL backends' do."""
    store = MemoryStore()
    await store.close()

    with pytest.raises(StoreError, match="closed"):
        await store.list_watches(TENANT)
