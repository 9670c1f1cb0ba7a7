"""What only the SQLite backend does: one process per file, durability, recovery on open."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from service.errors import MigrationError, StoreError, StoreLocked, StoreUnavailable
from service.store import migrations
from service.store.base import DuplicateIdempotencyKey, Idempotency
from service.store.sqlite import RENEWAL_CHUNK, SQLiteStore
from tests.integration.test_store_contract import (
    FAR,
    LEASE_S,
    T0,
    TENANT,
    A,
    B,
    attempt,
    ids,
    new_delivery,
    new_watch,
    progress,
)
from tests.outage import fill, small_disk


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


async def _queued(store: SQLiteStore, count: int) -> None:
    """Wait until exactly `count` registrations wait for the next commit, none being queued
    on the thread when 0 (a condition with a deadline)."""
    deadline = asyncio.get_running_loop().time() + 5
    while len(store._registrations) != count or (count == 0 and store._commit_queued):
        assert asyncio.get_running_loop().time() < deadline, "the registrations never queued"
        await asyncio.sleep(0.001)


async def test_registrations_waiting_for_a_commit_are_committed_together(path: str) -> None:
    """While a commit waits (another connection holds the write lock), the registrations that
    arrive queue up and are all committed by the next one, one refused alone for its reused
    key, the rest on disk for the next process."""
    async with opened(path) as store:
        taken = Idempotency("key-taken", "hash-0", b"first")
        first = await store.insert_watch(new_watch(), taken)
        # The statements the store runs from now on, traced on its thread.
        statements: list[str] = []
        assert store._db is not None
        store._db.set_trace_callback(statements.append)
        watches = [new_watch(job_id=f"job-{i}") for i in range(30)]
        keys = [Idempotency(f"key-{i}", f"hash-{i}", b"%d" % i) for i in range(30)]
        keys[9] = Idempotency("key-taken", "hash-9", b"conflict")
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            blocked = asyncio.ensure_future(store.insert_watch(new_watch()))
            await asyncio.sleep(0)  # it has queued its registration
            await _queued(store, 0)  # its commit is on the thread, waiting for the lock
            pending = asyncio.gather(
                *(store.insert_watch(w, k) for w, k in zip(watches, keys, strict=True)),
                return_exceptions=True,
            )
            await _queued(store, 30)
            other.execute("ROLLBACK")
            outcomes = await pending
            await blocked

        assert statements.count("COMMIT") == 2  # the blocked one, then the 30 together
        assert isinstance(outcomes[9], DuplicateIdempotencyKey)
        assert [o for i, o in enumerate(outcomes) if i != 9] == [
            w for i, w in enumerate(watches) if i != 9
        ]

    async with opened(path) as store:
        for i, watch in enumerate(watches):
            expected = None if i == 9 else watch
            assert await store.get_watch(TENANT, watch.id) == expected
        assert await store.find_idempotency(TENANT, "key-taken") == taken
        assert await store.find_idempotency(TENANT, "key-3") == keys[3]
        assert len(await store.list_watches(TENANT, limit=100)) == 31  # and first, blocked
        assert await store.get_watch(TENANT, first.id) == first


async def test_a_registration_that_fails_in_a_group_fails_alone(path: str) -> None:
    """A registration refused by the database (a watch id already stored) gets StoreError; the
    registrations committed with it are stored."""
    async with opened(path) as store:
        existing = await store.insert_watch(new_watch())
        clash = replace(new_watch(), id=existing.id)
        others = [new_watch() for _ in range(5)]

        outcomes = await asyncio.gather(
            *(store.insert_watch(w) for w in [*others[:2], clash, *others[2:]]),
            return_exceptions=True,
        )

        assert isinstance(outcomes[2], StoreError)
        assert [o for i, o in enumerate(outcomes) if i != 2] == others
        assert await store.get_watch(TENANT, existing.id) == existing
        for watch in others:
            assert await store.get_watch(TENANT, watch.id) == watch


async def test_registrations_queued_when_the_store_closes_are_committed_first(
    path: str,
) -> None:
    """close() lets the registrations already queued commit: none is lost or left waiting."""
    store = SQLiteStore(path)
    await store.open()
    watches = [new_watch() for _ in range(10)]
    pending = asyncio.gather(*(store.insert_watch(w) for w in watches))
    await asyncio.sleep(0)  # every insert_watch has queued its registration
    await store.close()

    assert await pending == watches
    async with opened(path) as reopened:
        assert len(await reopened.list_watches(TENANT)) == 10


async def test_renewal_of_more_leases_than_a_chunk_renews_each_one_held(path: str) -> None:
    """Leases renewed over several transactions: every one still held is renewed; one named
    with a stale token or cancelled is not, wherever it falls among the chunks."""
    async with opened(path) as store:
        watches = await asyncio.gather(
            *(
                store.insert_watch(new_watch(), lease_owner=A, lease_until=T0 + LEASE_S)
                for _ in range(RENEWAL_CHUNK * 2 + 10)
            )
        )
        held = [(w.id, w.lease_token) for w in watches]
        for stale in (5, RENEWAL_CHUNK + 3):
            held[stale] = (watches[stale].id, 7)  # a token this owner never had
        await store.cancel_watch(TENANT, watches[-1].id, T0)

        renewed = await store.renew_watch_leases(A, held, T0 + 10 * LEASE_S)

        lost = {watches[5].id, watches[RENEWAL_CHUNK + 3].id}
        assert renewed == {w.id for w in watches[:-1]} - lost
        # Once the old leases expire, only the two not renewed can be taken.
        later = T0 + LEASE_S + 1
        assert set(ids(await store.claim_watches(B, later, later + LEASE_S, 100))) == lost


async def test_delivery_lease_renewal_over_several_chunks_renews_each_one_held(path: str) -> None:
    """The same for deliveries: every one still held is renewed, one named with a stale token
    is not, wherever it falls among the chunks."""
    async with opened(path) as store:
        watch = await store.insert_watch(new_watch(), lease_owner=A, lease_until=T0 + LEASE_S)
        news = [new_delivery() for _ in range(RENEWAL_CHUNK * 2 + 10)]
        await store.record_progress(A, T0, [progress(watch, deliveries=news)])
        mine = await store.claim_deliveries(A, T0, T0 + LEASE_S, len(news))
        assert len(mine) == len(news)
        held = [(d.id, d.lease_token) for d in mine]
        for stale in (5, RENEWAL_CHUNK + 3):
            held[stale] = (mine[stale].id, 7)  # a token this owner never had

        renewed = await store.renew_delivery_leases(A, held, T0 + 10 * LEASE_S)

        lost = {mine[5].id, mine[RENEWAL_CHUNK + 3].id}
        assert renewed == {d.id for d in mine} - lost
        later = T0 + LEASE_S + 1
        assert set(ids(await store.claim_deliveries(B, later, later + LEASE_S, 100))) == lost


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
        recorded = await store.record_progress(A, T0 + 2, [progress(watch, token=1)])
        assert recorded.lost == {watch.id}


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
    """A closed store answers StoreError, which callers (readiness, the worker) handle."""
    async with opened(path) as store:
        pass

    with pytest.raises(StoreError):
        await store.ping()


async def test_a_full_disk_makes_the_store_unavailable_until_space_is_freed(
    tmp_path: Path,
) -> None:
    """On a full file system a registration raises StoreUnavailable (writes refused) saying
    so, while reads still work and a write probe fails; once space is freed, writes work again,
    and the store's health logged the outage once, then its end."""
    with small_disk(tmp_path / "disk") as disk:
        async with opened(str(disk / "bridge.db")) as store:
            first = await store.insert_watch(new_watch())
            filler = fill(disk)
            with capture_logs() as logs:
                for _ in range(3):
                    with pytest.raises(StoreUnavailable, match="database or disk is full") as full:
                        await store.insert_watch(new_watch())
                assert full.value.refusing_writes
                await store.ping()
                assert await store.get_watch(TENANT, first.id) == first
                with pytest.raises(StoreUnavailable, match="database or disk is full"):
                    await store.ping(write=True)
                down = store.health.reason

                filler.unlink()
                await store.ping(write=True)
                second = await store.insert_watch(new_watch())

            assert down is not None
            assert "database or disk is full" in down
            assert store.health.reason is None
            assert [line["event"] for line in logs] == ["store.unavailable", "store.recovered"]
            assert await store.get_watch(TENANT, second.id) == second


async def test_a_full_disk_is_an_outage_for_a_write_larger_than_the_cache(
    tmp_path: Path,
) -> None:
    """A transaction whose statement spills to a full disk (SQLite then rolls it back itself)
    raises StoreUnavailable saying the disk is full, as a small one's commit does, not the
    error of a rollback that found nothing to roll back; nothing of it is written."""
    with small_disk(tmp_path / "disk") as disk:
        async with opened(str(disk / "bridge.db")) as store:
            watch = await store.insert_watch(new_watch(), lease_owner=A, lease_until=FAR)
            large = [replace(new_delivery(), body=bytes(4_000_000)) for _ in range(2)]
            filler = fill(disk)
            with pytest.raises(StoreUnavailable, match="database or disk is full"):
                await store.record_progress(A, T0, [progress(watch, deliveries=large)])

            filler.unlink()
            assert await store.watch_events(TENANT, watch.id) == []
            await store.record_progress(A, T0, [progress(watch, deliveries=large[:1])])
            assert len(await store.watch_events(TENANT, watch.id)) == 1


async def test_a_full_disk_is_an_outage_for_a_registration_larger_than_the_cache(
    tmp_path: Path,
) -> None:
    """Registrations whose rows spill to a full disk (a large group of them, or here one large
    one), which SQLite then rolls back itself, raise StoreUnavailable saying the disk is full,
    not the error of the savepoint gone with the transaction."""
    with small_disk(tmp_path / "disk") as disk:
        async with opened(str(disk / "bridge.db")) as store:
            fill(disk)
            with pytest.raises(StoreUnavailable, match="database or disk is full"):
                await store.insert_watch(new_watch(metadata={"note": "x" * 4_000_000}))


async def test_a_store_bug_is_not_an_outage(path: str) -> None:
    """A statement the database refuses (a watch id already stored) is a plain StoreError:
    nothing for a client to wait for, and no outage."""
    async with opened(path) as store:
        watch = await store.insert_watch(new_watch())
        with pytest.raises(StoreError) as refused:
            await store.insert_watch(replace(new_watch(), id=watch.id))

    assert not isinstance(refused.value, StoreUnavailable)
    assert store.health.reason is None


async def test_a_migration_stopped_by_a_full_disk_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration whose writes spill to a full disk (SQLite then rolls it back itself) fails
    naming the full disk, not the rollback that found nothing to roll back."""
    with small_disk(tmp_path / "disk") as disk:
        async with opened(str(disk / "bridge.db")) as store:
            for _ in range(3):
                await store.insert_watch(new_watch())
            every = migrations.load
            spill = "CREATE TABLE spill AS SELECT zeroblob(1000000) FROM watches, watches, watches"
            monkeypatch.setattr(migrations, "load", lambda backend: [*every(backend), (999, spill)])
            fill(disk)
            with pytest.raises(MigrationError, match="migration 0999 failed: database or disk"):
                await store.migrate()
