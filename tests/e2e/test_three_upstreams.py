"""Three upstreams in one bridge: two built-in profiles (runway, replicate) and one declared
entirely in the configuration file (`studio`, an API shaped as Luma's is). Watches on all three
run at once, and while one upstream answers only 503, the other two keep polling and
delivering on time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import harness
from tests.e2e.harness import API_KEY, Bridge, Receiver, Upstream, unique

# Upstream name -> the simulator's dialect it is served by.
DIALECTS = {"runway": "runway", "replicate": "replicate", "studio": "luma"}
CONFIG = """
[upstreams.runway]
base_url = "{url}/runway"
api_key = "{key}"
profile = "runway"
{breaker}
[upstreams.replicate]
base_url = "{url}/replicate"
api_key = "{key}"
profile = "replicate"
{breaker}
[upstreams.studio]
base_url = "{url}/luma"
api_key = "{key}"
request_timeout_s = 2
{breaker}
[upstreams.studio.profile.status]
path = "/dream-machine/v1/generations/{{job_id}}"

[upstreams.studio.profile.auth]
scheme = "bearer"

[upstreams.studio.profile.read]
status = "state"
error = "failure_reason"
outputs = "[assets.video, assets.image][?@]"

[upstreams.studio.profile.statuses]
queued = "queued"
dreaming = "processing"
completed = "succeeded"
failed = "failed"
"""
# Each upstream's breaker opens at the third failure in a row and probes after 8 s: were the
# breaker shared, the outage would hold every upstream's polls that long.
BREAKER = "circuit_consecutive_failures = 3\ncircuit_cooldown_s = 8\n"
# A job: one position of 0.5 s in the queue, then a second of processing.
TIMELINE = {"queue_positions": 1, "seconds_per_position": 0.5, "processing_s": 1.0}
JOBS_EACH = 4
# From a job's end to its webhook: the longest wait for the next poll (poll.interval_s, 2.5 s,
# stretched by its 10 % jitter), and time to spare on a loaded machine.
ON_TIME_S = 2.75 + 2.5


@pytest.fixture(scope="module")
def dialects(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    options = [option for dialect in DIALECTS.values() for option in ("--profile", dialect)]
    directory = tmp_path_factory.mktemp("three-dialects")
    with harness.running_upstream("three-dialects", directory, *options) as started:
        yield started


@pytest.fixture(scope="module")
def bridge(
    tmp_path_factory: pytest.TempPathFactory, dialects: Upstream, receiver: Receiver
) -> Iterator[Bridge]:
    directory: Path = tmp_path_factory.mktemp("three-upstreams")
    config = directory / "bridge.toml"
    config.write_text(CONFIG.format(url=dialects.url, key=API_KEY, breaker=BREAKER))
    started = harness.launch_bridge(
        "three-upstreams", directory, dialects.url, directory / "bridge.db",
        BRIDGE_CONFIG=str(config), BRIDGE_POLL__STRATEGY="fixed",
    )  # fmt: skip
    try:
        yield started
    finally:
        harness.close_bridge(started)


def start_jobs(dialects: Upstream, upstream: str) -> list[str]:
    jobs = []
    for _ in range(JOBS_EACH):
        job_id = unique("job")
        answer = dialects.client.post(
            f"/{DIALECTS[upstream]}/_sim/jobs", json={"id": job_id, **TIMELINE}
        )
        assert answer.status_code == 200, answer.text
        jobs.append(job_id)
    return jobs


def ended_at(dialects: Upstream, upstream: str, job_id: str) -> float:
    described = dialects.client.get(f"/{DIALECTS[upstream]}/_sim/jobs/{job_id}").json()
    return float(described["terminal_at"])


@pytest.mark.e2e
def test_three_upstreams_at_once_and_an_outage_of_one(
    bridge: Bridge, dialects: Upstream, receiver: Receiver
) -> None:
    outage = "/replicate/_sim/faults"
    dialects.client.post(outage, json={"error_rate": 1.0}).raise_for_status()
    try:
        watches = {}
        for upstream in DIALECTS:
            for job_id in start_jobs(dialects, upstream):
                path = unique(upstream)
                watch = bridge.register(
                    job_id=job_id, upstream=upstream, callback_url=receiver.callback(path)
                )
                watches[upstream, job_id] = (watch, path)
        harness.wait_until(
            lambda: 'bridge_upstream_circuit_state{upstream="replicate"} 2.0'
            in bridge.client.get("/metrics").text,
            30, what="the replicate upstream's circuit to open",
        )  # fmt: skip
        healthy = [key for key in watches if key[0] != "replicate"]
        bridge.wait_all([watches[key][0]["id"] for key in healthy], "delivered", timeout=60)
        for upstream, job_id in healthy:
            watch, path = watches[upstream, job_id]
            [hook] = receiver.hooks(path)
            body = hook.verify(watch["secret"])
            assert (body["type"], body["upstream"], body["job_id"]) == (
                "job.succeeded", upstream, job_id,
            )  # fmt: skip
            assert body["image_urls"], body
            late = hook.received_at - ended_at(dialects, upstream, job_id)
            assert late < ON_TIME_S, f"{upstream} {job_id}: delivered {late:.2f} s after its end"
        for key in watches:
            if key[0] == "replicate":
                assert bridge.watch(watches[key][0]["id"])["status"] == "active"
    finally:
        dialects.client.post(outage, json={"error_rate": 0.0}).raise_for_status()
    waiting = [watches[key][0]["id"] for key in watches if key[0] == "replicate"]
    bridge.wait_all(waiting, "delivered", timeout=120)
