"""Versioned schema migrations: `NNNN_name.sql` files per backend, applied in order."""

from __future__ import annotations

from importlib import resources


def load(backend: str) -> list[tuple[int, str]]:
    """(version, SQL) of every migration of `backend`, in order."""
    folder = resources.files(__package__).joinpath(backend)
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text("utf-8")))
    return sorted(found)
