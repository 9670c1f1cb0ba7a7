"""What only the SQLite backend does: one process per file, durability, recovery on open."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.errors import StoreError, StoreLocked
from service.store import migrations
from service.store.base import Idempotency
from service.store.sqlite import SQLiteStore
from tests.integration.test_store_contract import (
    FAR,
    LEASE_S,
    T0,
    TENANT,
    A,
    B,
    attempt,
    new_delivery,
    new_watch,
    progress,
)


@pytest.fixture
def path(tmp_path: Path) -> str:
    """The database file, as an absolute path (the lock message names it resolved)."""
    return str((tmp_path / "bridge.db").resolve())


@contextlib.asynccontextmanager
async def opened(path: str) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(path)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_a_second_store_on_the_same_file_is_refused(path: str) -> None:
    """Opening a file already open raises StoreLocked pointing to PostgreSQL; the first works on."""
    async with opened(path) as first:
        second = SQLiteStore(path)
        try:
            with pytest.raises(StoreLocked, match=r"PostgreSQL.*postgresql://") as refused:
                await second.open()
        finally:
            await second.close()
        assert path in refused.value.message
        await first.ping()


async def test_closing_frees_the_file_for_the_next_process(path: str) -> None:
    """Once the first store is closed, another store opens the same file."""
    async with opened(path) as first:
        watch = await first.insert_watch(new_watch())

    async with opened(path) as second:
        assert await second.get_watch(TENANT, watch.id) == watch


async def test_data_survives_close_and_reopen(path: str) -> None:
    """Watches, idempotency keys, deliveries and attempts are all there after a reopen."""
    key = Idempotency("key-1", "hash-1", b'{"id": "wch"}')
    async with opened(path) as store:
        watch = await store.insert_watch(new_watch(), key, lease_owner=A, lease_until=FAR)
        await store.record_progress(A, T0, [progress(watch, deliveries=[new_delivery()])])
        [delivery] = await store.claim_deliveries(A, T0, T0 + LEASE_S, 10)
        logged = attempt(delivery, "retry", next_attempt_at=T0 + 60)
        await store.record_attempt(A, delivery, logged, "retry", T0 + 1)
        polled = await store.get_watch(TENANT, watch.id)

    async with opened(path) as store:
        assert await store.get_watch(TENANT, watch.id) == polled
        assert await store.find_idempotency(TENANT, "key-1") == key
        assert await store.list_attempts(TENANT, watch.id) == [logged]
        [again] = await store.claim_deliveries(B, T0 + 60, T0 + 60 + LEASE_S, 10)
        assert (again.id, again.body, again.attempts) == (delivery.id, delivery.body, 1)


async def test_open_releases_leases_left_by_a_previous_process(path: str) -> None:
    """Leases held when the last process stopped are free at once, and their holder is fenced."""
    async with opened(path) as store:
        watch = await store.insert_watch(new_watch(), lease_owner=A, lease_until=FAR)
        await store.record_progress(A, T0, [progress(watch, deliveries=[new_delivery()])])
        [delivery] = await store.claim_deliveries(A, T0, FAR, 10)

    async with opened(path) as store:
        [taken] = await store.claim_watches(B, T0 + 1, T0 + 1 + LEASE_S, 10)
        [retaken] = await store.claim_deliveries(B, T0 + 1, T0 + 1 + LEASE_S, 10)
        assert (taken.id, taken.lease_token) == (watch.id, 2)
        assert (retaken.id, retaken.lease_token) == (delivery.id, delivery.lease_token + 1)
        assert await store.record_progress(A, T0 + 2, [progress(watch, token=1)]) == {watch.id}


async def test_open_applies_every_migration_once(path: str) -> None:
    """The first open records every migration; reopening records none again."""
    versions = [version for version, _ in migrations.load("sqlite")]
    async with opened(path):
        pass
    async with opened(path) as store:
        assert await store.migrate() == []

    with contextlib.closing(sqlite3.connect(path)) as db:
        recorded = [row[0] for row in db.execute("SELECT version FROM schema_migrations")]
    assert sorted(recorded) == versions
    assert versions[0] == 1


async def test_calls_before_open_raise_store_error(path: str) -> None:
    """A store not opened yet answers StoreError, as a store that is down would."""
    store = SQLiteStore(path)
    try:
        with pytest.raises(StoreError, match="not open"):
            await store.ping()
    finally:
        await store.close()


async def test_calls_after_close_raise_store_error(path: str) -> None:
    """A closed store answers StoreError, which callers (readiness, dispatcher tick) handle."""
    async with opened(path) as store:
        pass

    with pytest.raises(StoreError):
        await store.ping()
