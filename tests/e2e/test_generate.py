"""`POST /v1/generate` against the simulator: one call starts the job and watches it; an
upstream that refuses or fails leaves nothing registered; an Idempotency-Key starts one job."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.e2e import harness
from tests.e2e.harness import API_KEY, Bridge, Receiver, StartBridge, Upstream, unique

PROBLEM = "application/problem+json"
# A job that ends about a second after it starts.
QUICK = {"queue_positions": 0, "processing_s": 1.0}


def jobs(upstream: Upstream) -> int:
    """How many jobs the simulator holds (it never forgets one without a reset)."""
    count: int = upstream.client.get("/_sim/stats").json()["jobs_total"]
    return count


def posts(upstream: Upstream) -> int:
    count: int = upstream.client.get("/_sim/stats").json()["posts_total"]
    return count


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def watched_jobs(bridge: Bridge) -> set[str]:
    return {w["job_id"] for w in bridge.watches()}


@pytest.mark.e2e
def test_one_call_starts_the_job_and_the_webhook_arrives(
    bridge: Bridge, upstream: Upstream, receiver: Receiver
) -> None:
    """The answer carries the job id, the upstream's answer and the watch with its secret; the
    job runs upstream and its signed final webhook arrives."""
    path = unique("generate")
    before = jobs(upstream)
    response = bridge.client.post(
        "/v1/generate",
        json={
            "input": {"prompt": "a lighthouse", "sim": QUICK},
            "callback_url": receiver.callback(path),
            "metadata": {"order": 42},
        },
    )
    assert response.status_code == 201, response.text
    answer = response.json()
    job_id = answer["job_id"]
    assert answer["upstream"] == {"id": job_id, "status": "queued"}
    watch = answer["watch"]
    assert (watch["job_id"], watch["status"]) == (job_id, "active")
    assert watch["secret"].startswith("whsec_")
    assert jobs(upstream) == before + 1
    assert upstream.job(job_id)["id"] == job_id  # the upstream runs the very job answered

    hook = receiver.wait_for(path, 1)[0]
    event = hook.verify(watch["secret"])
    assert (event["type"], event["job_id"], event["watch_id"]) == (
        "job.succeeded", job_id, watch["id"],
    )  # fmt: skip
    assert event["metadata"] == {"order": 42}
    assert event["image_urls"]
    assert bridge.watch(watch["id"])["status"] == "delivered"
    assert "secret" not in bridge.watch(watch["id"])


@pytest.mark.e2e
def test_the_upstream_refusal_is_passed_through_and_nothing_registered(
    bridge: Bridge, upstream: Upstream, receiver: Receiver
) -> None:
    """An upstream 4xx becomes a problem with its status and its message; no watch exists."""
    before = watched_jobs(bridge), jobs(upstream)
    # The simulator refuses a job description it cannot read with 400 and a message.
    refused = bridge.client.post(
        "/v1/generate",
        json={"input": {"sim": {"images": "many"}}, "callback_url": receiver.callback("x")},
    )
    body = problem(refused, 400)
    assert body["type"] == "/problems/upstream-refused"
    assert body["detail"].startswith("the upstream refused the generation: ")
    assert "images" in body["detail"]  # the simulator's own words

    # The upstream refuses a key it does not know: 401, said to come from the upstream.
    unknown_key = bridge.client.post(
        "/v1/generate", json={"input": {"prompt": "x"}, "upstream_api_key": "bw_unknown"}
    )
    body = problem(unknown_key, 401)
    assert body["detail"] == "the upstream refused the generation: Invalid or missing API key"
    assert (watched_jobs(bridge), jobs(upstream)) == before


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("change", "field"),
    [
        # The checks against the settings (the SSRF guard's: tests/integration/test_api.py).
        ({"poll_interval_s": 0.01}, "poll_interval_s"),  # below poll.min_interval_s
        ({"timeout_s": 10**9}, "timeout_s"),  # above poll.max_timeout_s
        ({"secret": "whsec_short"}, "secret"),  # the model refuses it
        ({"job_id": "job_1"}, "job_id"),  # the upstream names the job, not the caller
        ({"input": ["not", "an", "object"]}, "input"),
    ],
)
def test_an_invalid_request_never_reaches_the_upstream(
    bridge: Bridge, upstream: Upstream, change: dict[str, Any], field: str
) -> None:
    """Every check runs before the upstream is called: a 422 naming the field, no request."""
    before = posts(upstream)
    response = bridge.client.post("/v1/generate", json={"input": {"prompt": "x"}, **change})
    body = problem(response, 422)
    assert field in {error["field"] for error in body["errors"]}, body
    assert posts(upstream) == before


@pytest.mark.e2e
def test_an_idempotency_key_starts_one_job(
    bridge: Bridge, upstream: Upstream, receiver: Receiver
) -> None:
    """Concurrent and later retries with one key start one upstream job and answer alike;
    another body under the key is a conflict, and so is the key on POST /v1/watches."""
    key = unique("step")
    body = {"input": {"prompt": "a cat", "sim": QUICK}, "callback_url": receiver.callback(key)}
    before = jobs(upstream)

    def call(_: int) -> httpx.Response:
        return bridge.client.post("/v1/generate", json=body, headers={"Idempotency-Key": key})

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(call, range(6)))
    assert sorted(a.status_code for a in answers) == [200] * 5 + [201], [a.text for a in answers]
    assert len({a.content for a in answers}) == 1  # the very same answer, secret included
    later = call(0)
    assert (later.status_code, later.content) == (200, answers[0].content)
    assert jobs(upstream) == before + 1
    job_id = later.json()["job_id"]
    assert [w["job_id"] for w in bridge.watches(job_id=job_id)] == [job_id]

    other = bridge.client.post(
        "/v1/generate", json={**body, "metadata": {"n": 2}}, headers={"Idempotency-Key": key}
    )
    problem(other, 409)
    on_watches = bridge.client.post(
        "/v1/watches",
        json={"job_id": job_id, "callback_url": receiver.callback(key)},
        headers={"Idempotency-Key": key},
    )
    problem(on_watches, 409)
    assert jobs(upstream) == before + 1


@pytest.mark.e2e
def test_a_generated_job_is_watched_only_by_its_tenant_with_the_shared_key(
    start_bridge: StartBridge, upstream: Upstream
) -> None:
    """With the configured upstream key, a job alpha started through the bridge is a 404 for
    beta's watches (even naming that key) and a 201 for alpha's; beta's own key, and a job
    started outside the bridge, are not refused."""
    tokens = json.dumps([{"name": name, "token": f"{name}-token"} for name in ("alpha", "beta")])
    bridge = start_bridge(BRIDGE_AUTH__TOKENS=tokens)
    alpha = {"Authorization": "Bearer alpha-token"}
    beta = {"Authorization": "Bearer beta-token"}
    started = bridge.client.post(
        "/v1/generate", json={"input": {"prompt": "a lighthouse", "sim": QUICK}}, headers=alpha
    )
    assert started.status_code == 201, started.text
    job_id = started.json()["job_id"]

    for key in ({}, {"upstream_api_key": API_KEY}):
        refused = bridge.client.post("/v1/watches", json={"job_id": job_id, **key}, headers=beta)
        body = problem(refused, 404)
        assert body["detail"].startswith(f"no job {job_id} for this token: "), body
    assert bridge.client.get("/v1/watches", headers=beta).json()["data"] == []

    again = bridge.client.post("/v1/watches", json={"job_id": job_id}, headers=alpha)
    assert again.status_code == 201, again.text
    own_key = {"job_id": job_id, "upstream_api_key": "bw_beta_own"}
    assert bridge.client.post("/v1/watches", json=own_key, headers=beta).status_code == 201
    elsewhere = upstream.create_job(queue_positions=0, processing_s=1.0)
    for tenant in (alpha, beta):
        outside = bridge.client.post("/v1/watches", json={"job_id": elsewhere}, headers=tenant)
        assert outside.status_code == 201, outside.text


# An upstream of its own for failures: its faults must not touch the shared simulator.


@pytest.fixture(scope="module")
def failing(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Bridge, Upstream]]:
    """A bridge on a simulator of its own, whose faults the tests set."""
    directory = tmp_path_factory.mktemp("failing")
    with harness.running_upstream("failing-upstream", directory, "--slow-s", "5") as upstream:
        started = harness.launch_bridge(
            "failing-bridge", directory, upstream.url, directory / "b.db"
        )
        try:
            yield started, upstream
        finally:
            harness.close_bridge(started)


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ({"error_rate": 1.0}, "upstream answered HTTP 503"),
        ({"malformed_rate": 1.0}, "upstream answered a body that is not JSON"),
        ({"drop_rate": 1.0}, "upstream request failed"),
        # 5 s late, past the bridge's 1 s upstream timeout.
        ({"slow_rate": 1.0}, "upstream did not answer in time"),
    ],
)
def test_an_upstream_failure_is_a_502_and_nothing_registered(
    failing: tuple[Bridge, Upstream], fault: dict[str, float], words: str
) -> None:
    """A 5xx, an unreadable answer, a dropped connection or a timeout: 502, no watch."""
    bridge, upstream = failing
    key = unique("retried")
    before = {w["id"] for w in bridge.watches()}
    cleared = dict.fromkeys(("error_rate", "malformed_rate", "drop_rate", "slow_rate"), 0.0)
    assert upstream.client.post("/_sim/faults", json={**cleared, **fault}).status_code == 200
    try:
        response = bridge.client.post(
            "/v1/generate", json={"input": {"prompt": "x"}}, headers={"Idempotency-Key": key}
        )
    finally:
        assert upstream.client.post("/_sim/faults", json=cleared).status_code == 200
    body = problem(response, 502)
    assert body["type"] == "/problems/upstream-failed"
    assert body["detail"].startswith(words), body
    assert body["detail"].endswith("nothing was registered")
    assert {w["id"] for w in bridge.watches()} == before
    # The key was not used up: its retry, with the upstream back, starts the job.
    retried = bridge.client.post(
        "/v1/generate", json={"input": {"prompt": "x"}}, headers={"Idempotency-Key": key}
    )
    assert retried.status_code == 201, retried.text
