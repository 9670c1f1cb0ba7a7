"""Store outages seen from outside: a PostgreSQL database cut off, a SQLite disk full.

While the store is unavailable, a request that needs it answers 503 with Retry-After and the
problem `/problems/store-unavailable`, `/readyz` answers 503 saying why, `bridge_store_up` is 0,
and the log has one line for the outage, not a traceback per request. Once the store is back,
the bridge goes on by itself: the job that ended during the outage and the registration refused
during it and sent again are both delivered.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e import harness
from tests.e2e.harness import Bridge, Receiver, StartBridge, Upstream, unique, wait_until
from tests.outage import TcpProxy, fill, small_disk

pytestmark = pytest.mark.e2e

# Short leases, so that nothing waits long for a lease that ran out during the outage.
OUTAGE_ENV = {"BRIDGE_STORE__LEASE_S": "3"}
# Registrations sent during an outage: each would have logged a traceback.
REFUSED = 20


@pytest.fixture
def proxy(database: str) -> Iterator[TcpProxy]:
    """A TCP proxy to the test database's server, stopped after the test's bridges."""
    target = urlsplit(database)
    started = TcpProxy((target.hostname or "127.0.0.1", target.port or 5432))
    started.start()
    try:
        yield started
    finally:
        started.stop()


def assert_store_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert (problem["type"], problem["status"]) == ("/problems/store-unavailable", 503)
    assert "retry in 5 s" in problem["detail"]


def store_up(bridge: Bridge) -> float:
    text = bridge.client.get("/metrics").text
    found = re.search(r"^bridge_store_up (\S+)$", text, re.MULTILINE)
    assert found, "bridge_store_up is not in the metrics"
    return float(found.group(1))


def logged(bridge: Bridge) -> list[dict[str, Any]]:
    return [json.loads(line) for line in bridge.process.stdout().splitlines() if line]


def assert_one_line_per_outage(bridge: Bridge, reason: str) -> None:
    """One `store.unavailable` line naming `reason`, one `store.recovered`, and no other error
    or warning, nor any traceback."""
    lines = logged(bridge)
    down = [line for line in lines if line["event"] == "store.unavailable"]
    assert len(down) == 1, down
    assert reason in down[0]["reason"]
    assert len([line for line in lines if line["event"] == "store.recovered"]) == 1
    others = [
        line for line in lines
        if line["level"] in ("error", "warning", "critical") and line is not down[0]
        and line["event"] != "bridge.secrets_in_clear"
    ]  # fmt: skip
    assert others == []
    assert "Traceback" not in bridge.process.stdout() + bridge.process.stderr()


def upstream_posts(upstream: Upstream) -> int:
    count: int = upstream.client.get("/_sim/stats").json()["posts_total"]
    return count


def wait_for_the_end_seen(upstream: Upstream, job_id: str) -> None:
    """Until the bridge has polled `job_id` after it ended (and could not record it)."""

    def seen() -> bool:
        job = upstream.job(job_id)
        return any(at > job["terminal_at"] for at in job["poll_times"])

    wait_until(seen, 20, what=f"a poll of {job_id} after its end")


@pytest.mark.postgres
def test_a_postgresql_outage_answers_503_until_the_database_is_back(
    proxy: TcpProxy, database: str, start_bridge: StartBridge, upstream: Upstream,
    receiver: Receiver,
) -> None:  # fmt: skip
    """With the bridge's connections to PostgreSQL cut and new ones refused: registrations,
    reads and the dashboard answer 503 with Retry-After (a page's live updates stay open),
    /readyz says the database is unreachable, bridge_store_up is 0, the log has one line; once
    the database is reachable again the bridge is ready by itself, the refused registration
    sent again is accepted, and both jobs are delivered."""
    target = urlsplit(database)
    via_proxy = target._replace(netloc=f"{target.username}@127.0.0.1:{proxy.port}").geturl()
    bridge = start_bridge(BRIDGE_STORE__URL=via_proxy, **OUTAGE_ENV)
    early_job = upstream.create_job(queue_positions=0, processing_s=1.5)
    early_name = unique("outage_early")
    early = bridge.register(job_id=early_job, callback_url=receiver.callback(early_name))
    late_job = upstream.create_job(queue_positions=0, processing_s=0)
    late_name = unique("outage_late")
    late = {"job_id": late_job, "callback_url": receiver.callback(late_name)}
    key = {"Idempotency-Key": unique("outage")}
    # A dashboard page's live updates, open across the outage. It says it saw a page no list
    # has: the stream answers `changed` at once, and has the list's state to compare with.
    since = "0" * 32
    with httpx.stream("GET", f"{bridge.url}/ui/live?since={since}", timeout=10) as live:
        updates = live.iter_lines()
        assert "event: changed" in updates

        proxy.stop()
        for _ in range(REFUSED):
            assert_store_unavailable(bridge.client.post("/v1/watches", json=late, headers=key))
        assert_store_unavailable(bridge.client.get(f"/v1/watches/{early['id']}"))
        assert_store_unavailable(bridge.client.get("/v1/watches"))
        dashboard = bridge.client.get("/ui/")
        assert (dashboard.status_code, dashboard.headers["retry-after"]) == (503, "5")
        assert "Try again in 5 seconds" in dashboard.text
        unready = bridge.client.get("/readyz")
        assert unready.status_code == 503
        assert unready.json()["reason"].startswith(
            f"the store is unavailable: PostgreSQL at 127.0.0.1:{proxy.port}/"
        )
        assert store_up(bridge) == 0
        wait_for_the_end_seen(upstream, early_job)

        proxy.start()
        wait_until(lambda: bridge.client.get("/readyz").status_code == 200, 30, what="ready")
        accepted = bridge.client.post("/v1/watches", json=late, headers=key)
        assert accepted.status_code == 201, accepted.text
        assert store_up(bridge) == 1
        assert "event: changed" in updates  # the page is told of the new watch
    bridge.wait_for_status(early["id"], "delivered")
    bridge.wait_for_status(accepted.json()["id"], "delivered")
    assert receiver.wait_for(early_name)[0].verify(early["secret"])["job_id"] == early_job
    assert receiver.wait_for(late_name)[0].verify(accepted.json()["secret"])["job_id"] == late_job
    assert_one_line_per_outage(bridge, f"PostgreSQL at 127.0.0.1:{proxy.port}/")


def test_a_full_disk_answers_503_until_space_is_freed(
    start_bridge: StartBridge, upstream: Upstream, receiver: Receiver, tmp_path: Path
) -> None:
    """With the SQLite database's file system full: registrations, cancellations and
    generations (without starting an upstream job) answer 503 with Retry-After while reads
    still work, /readyz on both ports says the disk is full,
    bridge_store_up is 0, the log has one line; once space is freed the bridge is ready by
    itself, the refused registration sent again is accepted, and both jobs are delivered."""
    health_port = harness.free_port()
    with small_disk(tmp_path / "disk") as disk:
        bridge = start_bridge(
            db=disk / "bridge.db",
            BRIDGE_SERVER__HEALTH_PORT=str(health_port),
            BRIDGE_SERVER__HEALTH_HOST="127.0.0.1",
            **OUTAGE_ENV,
        )
        health = httpx.Client(base_url=f"http://127.0.0.1:{health_port}", timeout=10)
        early_job = upstream.create_job(queue_positions=0, processing_s=1.5)
        early_name = unique("full_early")
        early = bridge.register(job_id=early_job, callback_url=receiver.callback(early_name))
        other = bridge.register(job_id=upstream.create_job(queue_positions=5))
        late_job = upstream.create_job(queue_positions=0, processing_s=0)
        late_name = unique("full_late")
        late = {"job_id": late_job, "callback_url": receiver.callback(late_name)}
        key = {"Idempotency-Key": unique("full")}

        filler = fill(disk)
        for _ in range(REFUSED):
            assert_store_unavailable(bridge.client.post("/v1/watches", json=late, headers=key))
        assert_store_unavailable(bridge.client.delete(f"/v1/watches/{other['id']}"))
        assert bridge.watch(other["id"])["status"] == "active"
        posts = upstream_posts(upstream)
        generation = {"input": {"prompt": "a lighthouse"}, "callback_url": late["callback_url"]}
        assert_store_unavailable(bridge.client.post("/v1/generate", json=generation))
        assert upstream_posts(upstream) == posts  # no job started that could not be watched
        for client in (bridge.client, health):
            unready = client.get("/readyz")
            assert unready.status_code == 503
            assert unready.json()["reason"] == (
                f"the store is unavailable: SQLite database {disk / 'bridge.db'}:"
                " database or disk is full"
            )
        assert store_up(bridge) == 0
        wait_for_the_end_seen(upstream, early_job)

        filler.unlink()
        wait_until(lambda: health.get("/readyz").status_code == 200, 30, what="ready again")
        accepted = bridge.client.post("/v1/watches", json=late, headers=key)
        assert accepted.status_code == 201, accepted.text
        assert store_up(bridge) == 1
        bridge.wait_for_status(early["id"], "delivered")
        bridge.wait_for_status(accepted.json()["id"], "delivered")
        hooks = receiver.wait_for(early_name)
        assert hooks[0].verify(early["secret"])["job_id"] == early_job
        hooks = receiver.wait_for(late_name)
        assert hooks[0].verify(accepted.json()["secret"])["job_id"] == late_job
        assert_one_line_per_outage(bridge, "database or disk is full")
        health.close()
        harness.close_bridge(bridge)  # before the file system goes
