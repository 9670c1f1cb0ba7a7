"""The store's health: one log line when an outage begins, one when it ends, whatever fails."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from structlog.testing import capture_logs

from service.clock import FakeClock
from service.errors import StoreUnavailable
from service.store.health import StoreHealth

UNREACHABLE = StoreUnavailable("PostgreSQL at db:5432/bridge: connection refused")
FULL = StoreUnavailable(
    "SQLite database /data/bridge.db: database or disk is full", refusing_writes=True
)


def events(logs: list[MutableMapping[str, Any]]) -> list[tuple[str, Any]]:
    return [(line["event"], line.get("reason", line.get("after_s"))) for line in logs]


def test_a_healthy_store_logs_nothing() -> None:
    """Successes alone change nothing and log nothing."""
    health = StoreHealth(FakeClock())

    with capture_logs() as logs:
        health.succeeded(wrote=False)
        health.succeeded(wrote=True)

    assert (health.reason, logs) == (None, [])


def test_an_outage_is_one_line_when_it_begins_and_one_when_it_ends() -> None:
    """Thousands of failures in an outage log one line with the reason; the first success after
    them logs one more, with the outage's duration."""
    clock = FakeClock()
    health = StoreHealth(clock)

    with capture_logs() as logs:
        for _ in range(1000):
            health.failed(UNREACHABLE)
        down = health.reason
        clock.advance(42.5)
        health.succeeded(wrote=False)
        health.succeeded(wrote=True)

    assert down == UNREACHABLE.message
    assert health.reason is None
    assert events(logs) == [
        ("store.unavailable", UNREACHABLE.message),
        ("store.recovered", 42.5),
    ]
    assert logs[0]["log_level"] == "error"


def test_while_writes_are_refused_only_a_write_ends_the_outage() -> None:
    """A full disk still answers reads: a read that works keeps the outage on (no flapping
    between lines), a write that works ends it."""
    clock = FakeClock()
    health = StoreHealth(clock)

    with capture_logs() as logs:
        health.failed(FULL)
        health.succeeded(wrote=False)
        health.failed(FULL)
        held = (health.reason, health.refusing_writes)
        clock.advance(3)
        health.succeeded(wrote=True)

    assert held == (FULL.message, True)
    assert (health.reason, health.refusing_writes) == (None, False)
    assert events(logs) == [("store.unavailable", FULL.message), ("store.recovered", 3.0)]


def test_writes_refused_once_in_an_outage_need_a_write_to_end_it() -> None:
    """An outage that began unreachable and then refused writes is not ended by a read; the
    latest reason is the one shown."""
    health = StoreHealth(FakeClock())

    with capture_logs() as logs:
        health.failed(UNREACHABLE)
        health.failed(FULL)
        health.failed(UNREACHABLE)
        health.succeeded(wrote=False)

    assert (health.reason, health.refusing_writes) == (UNREACHABLE.message, True)
    assert events(logs) == [("store.unavailable", UNREACHABLE.message)]


def test_each_outage_has_its_own_lines() -> None:
    """Two outages, two pairs of lines."""
    health = StoreHealth(FakeClock())

    with capture_logs() as logs:
        health.failed(UNREACHABLE)
        health.succeeded(wrote=False)
        health.failed(FULL)
        health.succeeded(wrote=True)

    assert [line["event"] for line in logs] == [
        "store.unavailable", "store.recovered", "store.unavailable", "store.recovered",
    ]  # fmt: skip
