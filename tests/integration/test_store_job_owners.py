"""Migration 0012: the owners of started jobs, recorded before jobs were owned per upstream,
keep their jobs, at the default upstream."""

from __future__ import annotations

import contextlib
import sqlite3

import asyncpg
import pytest

from service.store import migrations
from service.store.base import JobOfAnotherTenant, Store
from service.store.postgres import PostgresStore
from service.store.sqlite import SQLiteStore
from tests.integration.conftest import POSTGRES_URL
from tests.integration.test_store_contract import OTHER_TENANT, T0, TENANT, new_watch, old_schema


async def _insert_old_owner(store: Store, job_id: str) -> None:
    """A started job's owner, written as the store wrote it before migration 0012."""
    sql = "INSERT INTO job_owners (job_id, tenant, created_at) VALUES"
    if isinstance(store, SQLiteStore):
        with contextlib.closing(sqlite3.connect(store.path)) as db, db:
            db.execute(f"{sql} (?, ?, ?)", (job_id, TENANT, T0))
        return
    assert isinstance(store, PostgresStore)
    db = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": str(store.schema)})
    try:
        await db.execute(f"{sql} ($1, $2, $3)", job_id, TENANT, T0)
    finally:
        await db.close()


def _reopened(old: Store) -> Store:
    if isinstance(old, SQLiteStore):
        return SQLiteStore(old.path)
    assert isinstance(old, PostgresStore)
    return PostgresStore(POSTGRES_URL, schema=old.schema)


async def test_owners_of_a_0011_database_keep_their_jobs_at_the_default_upstream(
    unopened_sql_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migrations, "load", old_schema(12))
    old = unopened_sql_store
    await old.open()
    await old.close()
    await _insert_old_owner(old, "job_started")
    monkeypatch.undo()
    store = _reopened(old)
    await store.open()
    try:
        with pytest.raises(JobOfAnotherTenant):
            await store.insert_watch(
                new_watch(tenant=OTHER_TENANT, job_id="job_started"), shared_key=True
            )
        elsewhere = await store.insert_watch(
            new_watch(tenant=OTHER_TENANT, job_id="job_started", upstream="runway"),
            shared_key=True,
        )
        assert elsewhere.upstream == "runway"
        mine = await store.insert_watch(new_watch(job_id="job_started"), shared_key=True)
        assert mine.tenant == TENANT
    finally:
        await store.close()
