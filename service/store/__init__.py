"""Durable state behind one contract (`base.Store`); the backend is chosen by URL."""

from __future__ import annotations

from service.config import StoreSettings
from service.errors import ConfigError
from service.store.base import Store
from service.store.health import StoreHealth


def from_url(
    url: str, *, pool_min: int = 1, pool_max: int = 10, health: StoreHealth | None = None
) -> Store:
    """A store for `sqlite:///PATH`, `postgresql://...` (also `postgres://`) or `memory://`;
    the driver is imported only when its backend is chosen. The pool sizes apply to PostgreSQL.
    `health` is told of every call's outcome (a new one when not given)."""
    if url == "memory://":
        from service.store.memory import MemoryStore

        return MemoryStore(health=health)
    if url.startswith("sqlite:///"):
        from service.store.sqlite import SQLiteStore

        return SQLiteStore(url.removeprefix("sqlite:///"), health=health)
    if url.startswith(("postgresql://", "postgres://")):
        from service.store.postgres import PostgresStore

        return PostgresStore(url, pool_min=pool_min, pool_max=pool_max, health=health)
    scheme = url.split(":", 1)[0]
    raise ConfigError(
        f"store.url: no store backend for scheme {scheme!r};"
        " use sqlite:///PATH, postgresql://USER@HOST:PORT/DB or memory://"
    )


def from_settings(settings: StoreSettings, health: StoreHealth | None = None) -> Store:
    """The store the settings describe, not yet opened."""
    return from_url(
        settings.url,
        pool_min=settings.pool_min_size,
        pool_max=settings.pool_max_size,
        health=health,
    )
