"""Integration fixtures: `store` is every backend in turn, each on a fresh, empty database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from service.store.base import Store
from service.store.sqlite import SQLiteStore


def _sqlite(tmp_path: Path) -> Store:
    return SQLiteStore(str(tmp_path / "bridge.db"))


# One entry per backend, each building an unopened store on a database of its own. PostgreSQL
# joins as `pytest.param(..., id="postgres", marks=pytest.mark.postgres)`.
BACKENDS = [pytest.param(_sqlite, id="sqlite")]


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An open store of one backend on a fresh database, closed after the test."""
    make: Callable[[Path], Store] = request.param
    backend = make(tmp_path)
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()
