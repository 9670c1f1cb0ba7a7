"""Integration fixtures: `store` is every backend in turn, each on a fresh, empty database;
`unopened_sql_store` a SQL backend only (for what only they have: a schema and its migrations)."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import asyncpg
import pytest

from service.store.base import Store
from service.store.memory import MemoryStore
from service.store.postgres import PostgresStore
from service.store.sqlite import SQLiteStore

POSTGRES_URL = os.environ.get(
    "BRIDGE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
# Why the PostgreSQL server could not be used, once known: later tests skip (or fail) at once.
_postgres_down: list[str] = []


async def _admin_connection() -> asyncpg.Connection:
    """A connection to the test server; the test is skipped without one, or fails under CI=true
    (where PostgreSQL tests must run)."""
    if not _postgres_down:
        try:
            return await asyncpg.connect(POSTGRES_URL, timeout=5)
        except (asyncpg.PostgresError, OSError, ValueError) as error:
            _postgres_down.append(f"{type(error).__name__}: {error}")
    reason = (
        f"PostgreSQL at {PostgresStore(POSTGRES_URL).where} cannot be used ({_postgres_down[0]})"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; PostgreSQL tests must run in CI", pytrace=False)
    pytest.skip(
        f"{reason}: start PostgreSQL there (trust auth, database `test`) or set"
        " BRIDGE_TEST_POSTGRES_URL to the URL of a server to run the PostgreSQL tests"
    )


@contextlib.asynccontextmanager
async def postgres_schema() -> AsyncIterator[str]:
    """The name of a fresh schema on the test server (stores create it), dropped afterwards."""
    admin = await _admin_connection()
    schema = f"test_{secrets.token_hex(6)}"
    try:
        yield schema
    finally:
        try:
            await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await admin.close()


@contextlib.asynccontextmanager
async def _memory(tmp_path: Path) -> AsyncIterator[Store]:
    yield MemoryStore()


@contextlib.asynccontextmanager
async def _sqlite(tmp_path: Path) -> AsyncIterator[Store]:
    yield SQLiteStore(str(tmp_path / "bridge.db"))


@contextlib.asynccontextmanager
async def _postgres(tmp_path: Path) -> AsyncIterator[Store]:
    async with postgres_schema() as schema:
        yield PostgresStore(POSTGRES_URL, schema=schema)


# One entry per SQL backend, each building an unopened store on a database of its own.
SQL_BACKENDS = [
    pytest.param(_sqlite, id="sqlite"),
    pytest.param(_postgres, id="postgres", marks=pytest.mark.postgres),
]
BACKENDS = [pytest.param(_memory, id="memory"), *SQL_BACKENDS]


@pytest.fixture(params=SQL_BACKENDS)
async def unopened_sql_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Store]:
    """A store of one SQL backend on a fresh database, neither opened nor migrated: the test
    opens (and closes) it."""
    make: Callable[[Path], AbstractAsyncContextManager[Store]] = request.param
    async with make(tmp_path) as backend:
        yield backend


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An open store of one backend on a fresh database, closed after the test."""
    make: Callable[[Path], AbstractAsyncContextManager[Store]] = request.param
    async with make(tmp_path) as backend:
        await backend.open()
        try:
            yield backend
        finally:
            await backend.close()
