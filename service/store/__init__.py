"""Durable state behind one contract (`base.Store`); the backend is chosen by URL."""

from __future__ import annotations

from service.errors import ConfigError
from service.store.base import Store


def from_url(url: str) -> Store:
    """A store for `sqlite:///PATH`; the driver is imported only when its backend is chosen."""
    if url.startswith("sqlite:///"):
        from service.store.sqlite import SQLiteStore

        return SQLiteStore(url.removeprefix("sqlite:///"))
    scheme = url.split(":", 1)[0]
    raise ConfigError(f"store.url: no store backend for scheme {scheme!r}; use sqlite:///PATH")
