"""SIGTERM with clients connected: the bridge keeps the README's promise (a real process, a
long-poll and an event stream held open across the signal)."""

from __future__ import annotations

import re
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.harness import Receiver, StartBridge, Upstream, free_port, unique, wait_until

pytestmark = pytest.mark.e2e
GRACE_S = 4.0
# What the bridge may take past its grace: the last commit, releasing the leases, closing.
EXIT_MARGIN_S = 2.0
# How soon "at once" must be seen on a loaded machine.
AT_ONCE_S = 1.5


@dataclass
class Client:
    """A request made in a thread: when it ended, and how."""

    answer: Any = None
    error: BaseException | None = None
    ended_at: float | None = None
    frames: list[str] = field(default_factory=list)


def long_poll(url: str, client: Client) -> None:
    try:
        client.answer = httpx.get(url, timeout=120)
    except BaseException as error:  # what the test reports
        client.error = error
    client.ended_at = time.monotonic()


def event_stream(url: str, client: Client) -> None:
    try:
        with httpx.stream("GET", url, timeout=120) as response:
            client.answer = response.status_code
            for line in response.iter_lines():
                client.frames.append(line)
    except BaseException as error:  # what the test reports
        client.error = error
    client.ended_at = time.monotonic()


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found is not None, f"{name} not in /metrics"
    return float(found.group(1))


def leased(db: Path) -> int:
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT (SELECT count(*) FROM watches WHERE lease_owner IS NOT NULL)"
            " + (SELECT count(*) FROM deliveries WHERE lease_owner IS NOT NULL)"
        )
        count: int = rows.fetchone()[0]
        return count


def test_sigterm_answers_waiting_clients_at_once_and_exits_within_the_grace(
    start_bridge: StartBridge, upstream: Upstream, receiver: Receiver, tmp_path: Path
) -> None:
    """On SIGTERM, at once: /readyz is 503, polling stops, the long-poll answers 202 and the
    event stream ends cleanly; the delivery in flight gets the grace and succeeds; the process
    exits 0 within the grace (plus a margin) with no lease held."""
    health_port = free_port()
    db = tmp_path / "shutdown.db"
    bridge = start_bridge(
        db=db,
        BRIDGE_SERVER__SHUTDOWN_GRACE_S=str(GRACE_S),
        BRIDGE_SERVER__HEALTH_PORT=str(health_port),
        BRIDGE_SERVER__HEALTH_HOST="127.0.0.1",
    )
    health = httpx.Client(base_url=f"http://127.0.0.1:{health_port}", timeout=5)
    # A job that stays queued: its watch would be polled every 0.3 s until the end.
    queued = upstream.create_job(queue_positions=10_000)
    waiting = bridge.register(job_id=queued)
    # A delivery in flight at SIGTERM: its receiver takes 2 s, within the grace.
    name = unique("slow")
    job = upstream.create_job(queue_positions=0, processing_s=0.1)
    slow = bridge.register(job_id=job, callback_url=receiver.callback(name, delay_s=2))
    wait_until(lambda: bridge.watch(slow["id"])["status"] == "delivering", what="delivering")

    waiter, streamer = Client(), Client()
    base = f"{bridge.url}/v1/watches/{waiting['id']}"
    threads = [
        threading.Thread(target=long_poll, args=(f"{base}/wait?timeout_s=60", waiter)),
        threading.Thread(target=event_stream, args=(f"{base}/events", streamer)),
    ]
    for thread in threads:
        thread.start()
    wait_until(
        lambda: metric(health.get("/metrics").text, "bridge_open_streams") == 2,
        what="the long-poll and the stream held open",
    )
    wait_until(lambda: upstream.polls(queued) >= 2, what="the queued job polled")

    bridge.process.popen.send_signal(signal.SIGTERM)
    signalled = time.monotonic()

    def unready() -> bool:
        return health.get("/readyz").status_code == 503

    wait_until(unready, AT_ONCE_S, interval=0.02, what="/readyz 503 at once")
    assert time.monotonic() - signalled < AT_ONCE_S
    for thread in threads:
        thread.join(AT_ONCE_S * 2)
    assert waiter.error is None, waiter.error
    assert waiter.answer.status_code == 202, waiter.answer.text
    assert waiter.answer.json()["status"] == "pending"
    assert streamer.error is None, streamer.error
    assert streamer.answer == 200
    for client in (waiter, streamer):
        assert client.ended_at is not None
        assert client.ended_at - signalled < AT_ONCE_S * 2
    polls_after_signal = upstream.polls(queued)

    code = bridge.process.wait(GRACE_S + EXIT_MARGIN_S + 5)
    exited = time.monotonic()
    health.close()
    assert code == 0
    assert exited - signalled <= GRACE_S + EXIT_MARGIN_S, f"exited after {exited - signalled} s"
    # Nothing claimed after SIGTERM: no poll of the queued job, the delivery finished.
    assert upstream.polls(queued) == polls_after_signal
    assert len(receiver.hooks(name)) == 1
    assert leased(db) == 0
    with sqlite3.connect(db) as connection:
        (status,) = connection.execute(
            "SELECT status FROM watches WHERE id = ?", (slow["id"],)
        ).fetchone()
    assert status == "delivered"
