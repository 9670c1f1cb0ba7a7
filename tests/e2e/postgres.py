"""The PostgreSQL test server, for the end-to-end tests that run bridges on it.

Each such test gets a database of its own (the `database` fixture, in conftest.py) on the test
server (`BRIDGE_TEST_POSTGRES_URL`, by default `postgresql://postgres@127.0.0.1:5432/test`),
created before its bridges start and dropped WITH (FORCE) afterwards. Without a server the
tests are skipped, or fail under CI=true, as the integration suite's PostgreSQL tests are.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

POSTGRES_URL = os.environ.get(
    "BRIDGE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
# Why the PostgreSQL server could not be used, once known: later tests skip (or fail) at once.
_postgres_down: list[str] = []


class _Unreachable(Exception):
    """No connection to the server (down, refusing, or a bad URL)."""


def sql(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    """The rows of one statement, run on a connection of its own."""

    async def run() -> list[asyncpg.Record]:
        try:
            connection = await asyncpg.connect(url, timeout=5)
        except (asyncpg.PostgresError, OSError, ValueError) as error:
            raise _Unreachable(f"{type(error).__name__}: {error}") from error
        try:
            rows: list[asyncpg.Record] = await connection.fetch(query, *args)
            return rows
        finally:
            await connection.close()

    return asyncio.run(run())


def _admin(query: str) -> None:
    """Run `query` on the test server; skip the test without one, or fail it under CI=true
    (where the PostgreSQL tests must run)."""
    if not _postgres_down:
        try:
            sql(POSTGRES_URL, query)
            return
        except _Unreachable as error:
            _postgres_down.append(str(error))
    parts = urlsplit(POSTGRES_URL)
    where = parts.netloc.rpartition("@")[2] + parts.path
    reason = f"PostgreSQL at {where} cannot be used ({_postgres_down[0]})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; PostgreSQL tests must run in CI", pytrace=False)
    pytest.skip(
        f"{reason}: start PostgreSQL there (trust auth, database `test`) or set"
        " BRIDGE_TEST_POSTGRES_URL to the URL of a server to run the PostgreSQL tests"
    )


@contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a fresh, empty database on the test server, dropped afterwards."""
    name = f"e2e_{secrets.token_hex(6)}"
    _admin(f'CREATE DATABASE "{name}"')
    try:
        yield urlsplit(POSTGRES_URL)._replace(path=f"/{name}").geturl()
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
