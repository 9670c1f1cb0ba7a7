"""Migration 0011 on a database written before series were kept, where a redelivery restarted
the numbering at 1: each attempt gets the series it was made in, each delivery its latest."""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
from collections import defaultdict

import asyncpg
import pytest

from service.store import migrations
from service.store.base import Store
from service.store.postgres import PostgresStore
from service.store.sqlite import SQLiteStore
from tests.integration.conftest import POSTGRES_URL
from tests.integration.test_store_contract import T0, TENANT, register

# Each old delivery: its attempt count (of its latest series) and status, the numbers of its
# attempts oldest first; then the series the migration gives them and the delivery.
OLD: list[tuple[str, int, str, list[int], list[int], int]] = [
    ("msg_never", 2, "failed", [1, 2], [1, 1], 1),  # never redelivered
    ("msg_once", 1, "succeeded", [1, 2, 1], [1, 1, 2], 2),
    ("msg_waiting", 0, "pending", [1], [1], 2),  # redelivered, not attempted since
    ("msg_twice", 1, "failed", [1, 1, 1], [1, 2, 3], 3),
    ("msg_quiet", 0, "pending", [], [], 1),  # not attempted yet
]


def _rows(watch_id: str) -> list[tuple[str, tuple[object, ...]]]:
    """The statements (`?` parameters) that write OLD as a store before 0011 did."""
    at = itertools.count(1)
    found: list[tuple[str, tuple[object, ...]]] = []
    for delivery_id, count, status, numbers, _, _ in OLD:
        found.append((
            "INSERT INTO deliveries (id, watch_id, event_type, body, final, status, attempts,"
            " created_at, host, tenant) VALUES (?, ?, 'job.failed', ?, ?, ?, ?, ?, ?, ?)",
            (delivery_id, watch_id, b"{}", True, status, count, T0, "http://x", TENANT),
        ))  # fmt: skip
        found += [
            ("INSERT INTO attempts (delivery_id, number, event_type, started_at, duration_s)"
             " VALUES (?, ?, 'job.failed', ?, 0.1)", (delivery_id, number, T0 + next(at)))
            for number in numbers
        ]  # fmt: skip
    return found


async def _write_old(store: Store, watch_id: str) -> None:
    if isinstance(store, SQLiteStore):
        with contextlib.closing(sqlite3.connect(store.path)) as db, db:
            for sql, values in _rows(watch_id):
                db.execute(sql, values)
        return
    assert isinstance(store, PostgresStore)
    db = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": str(store.schema)})
    try:
        for sql, values in _rows(watch_id):
            numbered = iter(range(1, 100))
            await db.execute("".join(f"${next(numbered)}" if c == "?" else c for c in sql), *values)
    finally:
        await db.close()


async def test_attempts_of_an_older_database_get_their_series_once_migrated(
    unopened_sql_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each attempt numbered 1 began a series; a delivery is in its latest, or in the next one
    when it was redelivered since its last attempt."""
    every = migrations.load
    monkeypatch.setattr(
        migrations, "load", lambda backend: [m for m in every(backend) if m[0] < 11]
    )
    old = unopened_sql_store
    await old.open()
    watch = await register(old)
    await old.close()
    await _write_old(old, watch.id)
    monkeypatch.undo()
    store = (
        SQLiteStore(old.path)
        if isinstance(old, SQLiteStore)
        else PostgresStore(POSTGRES_URL, schema=old.schema if isinstance(old, PostgresStore)
                           else None)
    )  # fmt: skip
    await store.open(migrate=False)
    try:
        assert (await store.migrate())[:1] == [11]
        attempts = await store.list_attempts(TENANT, watch.id)
        deliveries = await store.watch_deliveries(TENANT, watch.id)
    finally:
        await store.close()
    series: defaultdict[str, list[int]] = defaultdict(list)
    for attempt in attempts:
        series[attempt.delivery_id].append(attempt.series)
    assert {d: series[d] for d, *_ in OLD} == {d: expected for d, *_, expected, _ in OLD}
    assert {d.id: d.series for d in deliveries} == {d: latest for d, *_, latest in OLD}
