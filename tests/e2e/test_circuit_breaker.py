"""Kindness to the upstream in a real run: the circuit breaker (pause on sustained 503s, probe,
resume) and the per-key request-rate cap."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e import harness
from tests.e2e.harness import Receiver, Upstream, wait_until

OTHER_KEY = "bw_other_key"
KEY_ARGS = ("--api-key", harness.API_KEY, "--api-key", OTHER_KEY)


@pytest.fixture
def own_upstream(tmp_path: Path) -> Iterator[Upstream]:
    """A simulator of this test's own: its global fault rates change during the test."""
    process = harness.start_process(
        "breaker-upstream",
        tmp_path / "upstream",
        ["fake-upstream", "--port", "0", "--seed", "3", *KEY_ARGS],
        {},
    )
    try:
        url = harness.banner_url(process)
        with httpx.Client(base_url=url, timeout=10) as client:
            yield Upstream(process, url, client)
    finally:
        process.stop()


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} not in the metrics"
    return float(found.group(1))


def circuit_logs(output: str) -> list[dict[str, object]]:
    found = []
    for line in output.splitlines():
        if '"upstream.circuit_' in line:
            found.append(json.loads(line))
    return found


@pytest.mark.e2e
def test_breaker_pauses_probes_and_resumes(
    own_upstream: Upstream, receiver: Receiver, tmp_path: Path
) -> None:
    """All-503 upstream: the circuit opens, requests stop but for probes, a watch whose timeout
    passes meanwhile still ends with its timeout event; after recovery polling resumes."""
    upstream = own_upstream
    bridge = harness.launch_bridge(
        "breaker-bridge",
        tmp_path,
        upstream.url,
        tmp_path / "bridge.db",
        BRIDGE_UPSTREAM__CIRCUIT_MIN_REQUESTS="5",
        BRIDGE_UPSTREAM__CIRCUIT_COOLDOWN_S="1",
        BRIDGE_UPSTREAM__CIRCUIT_MAX_COOLDOWN_S="2",
    )
    try:
        jobs = [upstream.create_job(queue_positions=100_000) for _ in range(6)]
        for job in jobs:
            bridge.register(job_id=job, callback_url=receiver.callback(harness.unique("cb")))
        wait_until(lambda: all(upstream.polls(job) >= 2 for job in jobs), what="polling")

        assert upstream.client.post("/_sim/faults", json={"error_rate": 1.0}).status_code == 200
        wait_until(
            lambda: (
                metric(
                    bridge.client.get("/metrics").text,
                    'bridge_upstream_circuit_state{upstream="default"}',
                )
                == 2
            ),
            what="the circuit to open",
        )
        # Registered while the circuit is open: it must still end when its timeout passes.
        expiring_path = harness.unique("expiring")
        expiring = bridge.register(
            job_id=upstream.create_job(queue_positions=100_000),
            callback_url=receiver.callback(expiring_path),
            timeout_s=2,
        )
        gets_at_open = upstream.client.get("/_sim/stats").json()["gets_total"]

        def half_opens() -> float:
            text = bridge.client.get("/metrics").text
            return metric(
                text,
                'bridge_upstream_circuit_transitions_total{state="half_open",upstream="default"}',
            )

        before = half_opens()
        wait_until(lambda: half_opens() >= before + 3, what="three probes")
        probes = half_opens() - before
        gets = upstream.client.get("/_sim/stats").json()["gets_total"] - gets_at_open
        # Requests in flight when it opened may land after; otherwise only the probes go
        # (without the breaker, 7 watches at 0.3 s backing off to 3 s would make dozens).
        assert gets <= probes + len(jobs) + 1, (gets, probes)

        bridge.wait_for_status(expiring["id"], "delivered")
        [hook] = receiver.hooks(expiring_path)
        assert hook.json()["error_code"] == "timeout"

        assert upstream.client.post("/_sim/faults", json={"error_rate": 0.0}).status_code == 200
        wait_until(
            lambda: (
                metric(
                    bridge.client.get("/metrics").text,
                    'bridge_upstream_circuit_state{upstream="default"}',
                )
                == 0
            ),
            what="the circuit to close",
        )
        polls = {job: upstream.polls(job) for job in jobs}
        wait_until(
            lambda: all(upstream.polls(job) > polls[job] for job in jobs),
            what="polling to resume",
        )

        logged = circuit_logs(bridge.process.stdout() + bridge.process.stderr())
        events = [entry["event"] for entry in logged]
        assert "upstream.circuit_opened" in events
        assert "upstream.circuit_half_open" in events
        assert events[-1] == "upstream.circuit_closed"
        opened = next(entry for entry in logged if entry["event"] == "upstream.circuit_opened")
        assert "failed" in str(opened["reason"])
    finally:
        harness.close_bridge(bridge)


@pytest.mark.e2e
def test_key_at_its_cap_does_not_hold_up_another(
    own_upstream: Upstream, receiver: Receiver, tmp_path: Path
) -> None:
    """A key with many jobs stays under its per-key cap while another key's job is polled at
    its own pace."""
    upstream = own_upstream
    per_key, burst = 5.0, 2
    bridge = harness.launch_bridge(
        "cap-bridge",
        tmp_path,
        upstream.url,
        tmp_path / "bridge.db",
        BRIDGE_UPSTREAM__MAX_REQUESTS_PER_S_PER_KEY=str(per_key),
        BRIDGE_UPSTREAM__REQUEST_BURST_PER_KEY=str(burst),
        BRIDGE_POLL__STRATEGY="fixed",
    )
    try:
        busy = [upstream.create_job(queue_positions=100_000) for _ in range(30)]
        for job in busy:  # 30 jobs at 0.3 s ask 100 requests a second
            bridge.register(job_id=job, callback_url=receiver.callback(harness.unique("cb")))
        wait_until(lambda: upstream.polls(busy[-1]) >= 1, what="the busy key polling")
        started = time.monotonic()
        before = upstream.client.get("/_sim/stats").json()["gets_by_key"][harness.API_KEY]

        quiet = upstream.create_job(queue_positions=100_000)
        bridge.register(
            job_id=quiet,
            callback_url=receiver.callback(harness.unique("cb")),
            upstream_api_key=OTHER_KEY,
        )
        # 0.3 s apart on its own: ten polls would take 30 s behind the busy key's queue.
        wait_until(lambda: upstream.polls(quiet) >= 10, timeout=20, what="the quiet key")

        elapsed = time.monotonic() - started
        after = upstream.client.get("/_sim/stats").json()["gets_by_key"][harness.API_KEY]
        # A token bucket's promise, whatever the machine's speed: rate x time + burst, plus the
        # requests in flight at either end.
        assert after - before <= per_key * elapsed + burst + 2, (after - before, elapsed)
    finally:
        harness.close_bridge(bridge)
