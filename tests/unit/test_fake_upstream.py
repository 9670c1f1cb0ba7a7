"""The upstream simulator, driven in-process with a fake clock and a recording sleep."""

from __future__ import annotations

import argparse
import dataclasses
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest

from service.devtools import fake_upstream
from service.devtools.asgi import ConnectionDropped
from service.devtools.fake_upstream import SimulatorConfig
from tests.unit.doubles import Sleeps

AUTH = {"Authorization": "Bearer bw_test_key"}
URL_RE = re.compile(r"^https://images\.betterwaifu\.com/[a-z0-9]+/[a-z0-9]+\.webp$")


class Clock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Make = Callable[..., httpx.AsyncClient]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def make(clock: Clock, sleeps: Sleeps) -> AsyncIterator[Make]:
    clients: list[httpx.AsyncClient] = []

    def factory(**settings: Any) -> httpx.AsyncClient:
        app = fake_upstream.build_app(SimulatorConfig(**settings), clock, sleep=sleeps)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://up")
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.aclose()


@pytest.fixture
def client(make: Make) -> httpx.AsyncClient:
    return make(seed=7)


async def create(client: httpx.AsyncClient, **sim: Any) -> str:
    response = await client.post(
        "/api/v1/generate", json={"prompt": "a cat", "sim": sim}, headers=AUTH
    )
    assert response.status_code == 200
    job_id: str = response.json()["id"]
    return job_id


async def poll(client: httpx.AsyncClient, job_id: str) -> httpx.Response:
    return await client.get(f"/api/v1/generate/{job_id}", headers=AUTH)


async def test_create_answers_a_queued_job_id(client: httpx.AsyncClient) -> None:
    """POST /api/v1/generate answers a job_ id of 12 alphanumerics, status queued."""
    response = await client.post("/api/v1/generate", json={"prompt": "x"}, headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert re.fullmatch(r"job_[a-z0-9]{12}", body["id"])
    assert body == {"id": body["id"], "status": "queued"}


@pytest.mark.parametrize(
    ("elapsed", "expected"),
    [
        (0.0, {"status": "queued", "queue_position": 3}),  # just created
        (0.5, {"status": "queued", "queue_position": 3}),  # ceil(3 - 0.5)
        (1.0, {"status": "queued", "queue_position": 2}),  # one position gone
        (2.99, {"status": "queued", "queue_position": 1}),  # last position, never 0
        (3.0, {"status": "processing"}),  # queue time over
        (5.99, {"status": "processing"}),  # still within processing_s
    ],
)
async def test_timeline_before_the_end(
    client: httpx.AsyncClient, clock: Clock, elapsed: float, expected: dict[str, Any]
) -> None:
    """A job is queued (counting down) then processing, by the injected clock."""
    job_id = await create(client)
    clock.now += elapsed
    response = await poll(client, job_id)
    assert response.status_code == 200
    assert response.json() == {"id": job_id, **expected}


async def test_succeeded_body_is_documented_and_stable(
    client: httpx.AsyncClient, clock: Clock
) -> None:
    """Once terminal, a succeeded job answers the documented output, identically on every poll."""
    job_id = await create(client, images=2)
    clock.now += 6.0
    first = await poll(client, job_id)
    clock.now += 100.0
    second = await poll(client, job_id)
    assert first.content == second.content
    body = first.json()
    assert set(body) == {"id", "status", "output"}
    assert body["status"] == "succeeded"
    assert set(body["output"]) == {"images", "seed"}
    assert isinstance(body["output"]["seed"], int)
    assert len(body["output"]["images"]) == 2
    for image in body["output"]["images"]:
        assert set(image) == {"url", "id"}
        assert URL_RE.match(image["url"])
        assert re.fullmatch(r"[A-Za-z0-9]{16}", image["id"])


async def test_chosen_image_urls_are_answered_as_given(client: httpx.AsyncClient) -> None:
    """sim.image_urls replaces the random CDN URLs, in order, hostile ones included."""
    urls = ["http://images.test:8081/a.png", "javascript:alert(1)"]
    job_id = await create(client, image_urls=urls, processing_s=0, queue_positions=0)
    body = (await poll(client, job_id)).json()
    assert [image["url"] for image in body["output"]["images"]] == urls


async def test_per_job_timing_overrides_the_config(client: httpx.AsyncClient, clock: Clock) -> None:
    """sim.queue_positions, seconds_per_position and processing_s set that job's timeline."""
    job_id = await create(client, queue_positions=2, seconds_per_position=10, processing_s=1)
    clock.now += 10.0
    assert (await poll(client, job_id)).json()["queue_position"] == 1
    clock.now += 10.0
    assert (await poll(client, job_id)).json()["status"] == "processing"
    clock.now += 1.0
    assert (await poll(client, job_id)).json()["status"] == "succeeded"


async def test_failed_outcome_with_default_and_custom_error(
    client: httpx.AsyncClient, clock: Clock
) -> None:
    """sim.outcome=failed ends with the documented error body, or with sim.error."""
    plain = await create(client, outcome="failed")
    custom = await create(client, outcome="failed", error="NSFW filter")
    clock.now += 6.0
    assert (await poll(client, plain)).json() == {
        "id": plain,
        "status": "failed",
        "error": "Generation failed due to an internal error",
    }
    assert (await poll(client, custom)).json()["error"] == "NSFW filter"


async def test_failure_rate_one_fails_every_job(make: Make) -> None:
    """With failure_rate=1 every job ends failed."""
    client = make(failure_rate=1.0, queue_positions=0, processing_s=0)
    job_ids = [await create(client) for _ in range(5)]
    statuses = {(await poll(client, job_id)).json()["status"] for job_id in job_ids}
    assert statuses == {"failed"}


async def test_same_seed_same_ids(make: Make) -> None:
    """Two simulators with the same seed hand out the same job ids."""
    first, second = make(seed=42), make(seed=42)
    assert [await create(first) for _ in range(3)] == [await create(second) for _ in range(3)]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/generate/job_x"),
        ("GET", "/api/v1/generate"),
        ("POST", "/api/v1/generate"),
        ("GET", "/api/v1/other"),
    ],
)
@pytest.mark.parametrize(
    "headers",
    [
        {},  # no header at all
        {"Authorization": "Bearer wrong"},  # unknown key
        {"Authorization": "bw_test_key"},  # no scheme
        {"Authorization": "Basic bw_test_key"},  # wrong scheme
    ],
)
async def test_api_needs_a_known_bearer_key(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]
) -> None:
    """Every /api/v1 endpoint answers 401 with the documented body without a valid key."""
    response = await client.request(method, path, headers=headers, json={})
    assert response.status_code == 401
    assert response.json() == {"error": "Invalid or missing API key"}


async def test_any_configured_key_is_accepted(make: Make) -> None:
    """Each of several api_keys is accepted."""
    client = make(api_keys=frozenset({"bw_a", "bw_b"}))
    for key in ("bw_a", "bw_b"):
        response = await client.get(
            "/api/v1/generate/nope", headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code == 404


async def test_unknown_id_is_404(client: httpx.AsyncClient) -> None:
    """Polling an id never created answers 404 Generation not found."""
    response = await poll(client, "job_doesnotexist")
    assert response.status_code == 404
    assert response.json() == {"error": "Generation not found"}


@pytest.mark.parametrize("path", ["/api/v1/generate", "/api/v1/generate/"])
async def test_missing_id_is_400(client: httpx.AsyncClient, path: str) -> None:
    """GET without an id answers 400 Generation ID is required."""
    response = await client.get(path, headers=AUTH)
    assert response.status_code == 400
    assert response.json() == {"error": "Generation ID is required"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"sim": 3}', "sim must be a JSON object"),
        (b'{"sim": {"queue_position": 1}}', "sim.queue_position is not a known setting"),
        (b'{"sim": {"queue_positions": -1}}', "sim.queue_positions must be an integer"),
        (b'{"sim": {"processing_s": "soon"}}', "sim.processing_s must be a non-negative number"),
        (b'{"sim": {"outcome": "maybe"}}', "sim.outcome must be one of succeeded, failed"),
        (b'{"sim": {"images": true}}', "sim.images must be an integer"),
        (b'{"sim": {"image_urls": "x"}}', "sim.image_urls must be a list of at most 100"),
        (b'{"sim": {"image_urls": [1]}}', "sim.image_urls must be a list of at most 100"),
        (b'{"sim": {"images": 2, "image_urls": ["x"]}}', "give sim.images (a count of"),
        (b'{"sim": {"faults": {}}}', "sim.faults must be a list"),
        (b'{"sim": {"faults": [{"kind": "boom"}]}}', "sim.faults[0].kind must be one of"),
        (b'{"sim": {"faults": [{"kind": "5xx", "count": 0}]}}', "sim.faults[0].count must be"),
    ],
)
async def test_bad_create_bodies_are_400(
    client: httpx.AsyncClient, body: bytes, message: str
) -> None:
    """A body that is not a JSON object, or a bad sim setting, is a 400 saying what is wrong."""
    response = await client.post("/api/v1/generate", content=body, headers=AUTH)
    assert response.status_code == 400
    assert message in response.json()["error"]


async def test_wrong_method_is_405(client: httpx.AsyncClient) -> None:
    """DELETE on a job is 405 with an Allow header."""
    response = await client.delete("/api/v1/generate/job_x", headers=AUTH)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"


async def test_job_faults_are_served_in_order_then_the_job(
    client: httpx.AsyncClient, sleeps: Sleeps
) -> None:
    """A job's faults hit its next polls in order, count times each, then it answers normally."""
    job_id = await create(
        client,
        faults=[
            {"kind": "5xx", "count": 2},
            {"kind": "429", "retry_after": 7},
            {"kind": "404"},
            {"kind": "401"},
            {"kind": "400"},
            {"kind": "slow", "delay_s": 2.5},
            {"kind": "malformed"},
        ],
    )
    answers = [await poll(client, job_id) for _ in range(9)]
    assert [a.status_code for a in answers] == [503, 503, 429, 404, 401, 400, 200, 200, 200]
    assert answers[0].json() == {"error": "Service temporarily unavailable"}
    assert answers[2].headers["retry-after"] == "7"
    assert answers[3].json() == {"error": "Generation not found"}
    assert answers[4].json() == {"error": "Invalid or missing API key"}
    assert answers[5].json() == {"error": "Generation ID is required"}
    assert answers[6].json()["status"] == "queued"  # slow, then the normal answer
    assert sleeps.asked == [2.5]
    assert answers[7].content == b'{"id": "job_x", "status": '
    assert answers[7].headers["content-type"] == "application/json"
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(answers[7].content)
    assert answers[8].json()["status"] == "queued"


async def test_drop_fault_closes_without_an_answer(client: httpx.AsyncClient) -> None:
    """In-process a drop raises ConnectionDropped (under uvicorn the connection is closed)."""
    job_id = await create(client, faults=[{"kind": "drop"}])
    with pytest.raises(ConnectionDropped):
        await poll(client, job_id)
    assert (await poll(client, job_id)).status_code == 200


@pytest.mark.parametrize(
    ("settings", "status"),
    [
        ({"error_rate": 1.0}, 503),
        ({"rate_limit_rate": 1.0, "retry_after": 4}, 429),
        ({"malformed_rate": 1.0}, 200),
    ],
)
async def test_global_fault_rates_hit_every_request(
    make: Make, settings: dict[str, Any], status: int
) -> None:
    """A global rate of 1 answers every API request with that fault, before auth."""
    client = make(**settings)
    response = await client.get("/api/v1/generate/job_x")
    assert response.status_code == status
    if status == 429:
        assert response.headers["retry-after"] == "4"
    if status == 200:
        assert response.content == b'{"id": "job_x", "status": '


async def test_global_slow_and_drop(make: Make, sleeps: Sleeps) -> None:
    """slow_rate delays by slow_s then answers normally; drop_rate drops the connection."""
    slow = make(slow_rate=1.0, slow_s=0.25)
    assert (await poll(slow, "job_x")).status_code == 404
    assert sleeps.asked == [0.25]
    with pytest.raises(ConnectionDropped):
        await poll(make(drop_rate=1.0), "job_x")


async def test_global_rates_mix_by_seed(make: Make) -> None:
    """With error_rate 0.5 a seeded run answers both 503s and normal answers."""
    client = make(error_rate=0.5, seed=3)
    codes = [(await poll(client, "job_x")).status_code for _ in range(40)]
    assert set(codes) == {503, 404}


@pytest.mark.parametrize(
    "settings",
    [
        {"error_rate": 1.5},  # a rate above 1
        {"failure_rate": -0.1},  # a rate below 0
        {"error_rate": 0.6, "drop_rate": 0.6},  # rates adding up past 1
        {"processing_s": -1.0},  # a negative duration
    ],
)
def test_invalid_config_is_refused(settings: dict[str, Any]) -> None:
    """SimulatorConfig refuses impossible settings."""
    with pytest.raises(ValueError, match=r"must|add up"):
        SimulatorConfig(**settings)


async def test_control_create_with_chosen_id_and_describe(
    client: httpx.AsyncClient, clock: Clock
) -> None:
    """POST /_sim/jobs takes an id; GET /_sim/jobs/{id} reports spec, wall times and polls."""
    before = time.time()
    created = await client.post(
        "/_sim/jobs", json={"id": "job_mine", "queue_positions": 1, "processing_s": 2}
    )
    assert created.json() == {"id": "job_mine"}
    await poll(client, "job_mine")
    clock.now += 3.0
    await poll(client, "job_mine")
    info = (await client.get("/_sim/jobs/job_mine")).json()
    assert before <= info["created_at"] <= time.time()
    assert info["terminal_at"] == pytest.approx(info["created_at"] + 3.0)
    assert info["polls"] == 2
    assert info["poll_times"] == [
        pytest.approx(info["created_at"]),
        pytest.approx(info["created_at"] + 3.0),
    ]
    assert info["status"] == "succeeded"
    assert (info["queue_positions"], info["processing_s"], info["outcome"]) == (1, 2.0, "succeeded")
    assert info["output"] == (await poll(client, "job_mine")).json()["output"]


async def test_control_create_refusals(client: httpx.AsyncClient) -> None:
    """A taken id is 409, a bad id or setting is 400, an unknown job is 404."""
    assert (await client.post("/_sim/jobs", json={"id": "job_a"})).status_code == 200
    assert (await client.post("/_sim/jobs", json={"id": "job_a"})).status_code == 409
    assert (await client.post("/_sim/jobs", json={"id": "a/b"})).status_code == 400
    bad = await client.post("/_sim/jobs", json={"images": "two"})
    assert bad.status_code == 400
    assert bad.json()["error"].startswith("images must be")
    assert (await client.get("/_sim/jobs/job_none")).status_code == 404


async def test_stats_count_api_requests_and_reset_clears(client: httpx.AsyncClient) -> None:
    """/_sim/stats counts /api/v1 requests by method and status; /_sim/reset clears it all."""
    job_id = await create(client)
    await poll(client, job_id)
    await poll(client, "job_none")
    await client.get("/api/v1/generate/job_none")  # no key
    stats = (await client.get("/_sim/stats")).json()
    assert stats["requests_total"] == 4
    assert (stats["gets_total"], stats["posts_total"]) == (3, 1)
    assert stats["by_status_code"] == {"200": 2, "401": 1, "404": 1}
    assert (await client.post("/_sim/reset")).json() == {"ok": True}
    assert (await poll(client, job_id)).status_code == 404
    stats = (await client.get("/_sim/stats")).json()
    assert stats["requests_total"] == 1
    assert stats["by_status_code"] == {"404": 1}


async def test_unknown_paths_are_404(client: httpx.AsyncClient) -> None:
    """Paths outside /api/v1 and /_sim answer 404."""
    assert (await client.get("/")).status_code == 404
    assert (await client.get("/_sim/nothing")).status_code == 404


def test_every_setting_has_a_flag() -> None:
    """configure_parser offers one flag per SimulatorConfig field, and they build the config."""
    parser = argparse.ArgumentParser()
    fake_upstream.configure_parser(parser)
    flags = "--api-key bw_a --api-key bw_b --queue-positions 5 --error-rate 0.25 --seed 9 --port 0"
    args = parser.parse_args(flags.split())
    config = fake_upstream.config_from_args(args)
    assert config.api_keys == frozenset({"bw_a", "bw_b"})
    assert (config.queue_positions, config.error_rate, config.seed) == (5, 0.25, 9)
    assert (args.host, args.port) == ("127.0.0.1", 0)
    defaults = fake_upstream.config_from_args(parser.parse_args([]))
    assert defaults == SimulatorConfig()
    for setting in dataclasses.fields(SimulatorConfig):
        if setting.name != "api_keys":
            assert hasattr(args, setting.name), setting.name


@pytest.mark.parametrize(
    ("elapsed", "expected"),
    [
        (0.0, {"status": "queued", "queue_position": 2}),  # a quarter of the first step gone
        (2.99, {"status": "queued", "queue_position": 2}),  # 3 s left of its first step
        (3.0, {"status": "queued", "queue_position": 1}),
        (6.99, {"status": "queued", "queue_position": 1}),
        (7.0, {"status": "processing"}),  # (2 - 0.25) * 4 s of queue
    ],
)
async def test_queue_phase_shortens_the_first_step(
    client: httpx.AsyncClient, clock: Clock, elapsed: float, expected: dict[str, Any]
) -> None:
    """sim.queue_phase is the share of the first position's time already gone at creation."""
    job_id = await create(client, queue_positions=2, seconds_per_position=4, queue_phase=0.25)
    clock.now += elapsed
    assert (await poll(client, job_id)).json() == {"id": job_id, **expected}


@pytest.mark.parametrize("phase", [1, 1.5, -0.1, "half", True])
async def test_queue_phase_must_be_a_fraction(client: httpx.AsyncClient, phase: object) -> None:
    """queue_phase outside [0, 1) is refused with the field named."""
    response = await client.post("/_sim/jobs", json={"queue_phase": phase})
    assert response.status_code == 400
    assert response.json()["error"].startswith("queue_phase must be")


async def test_realistic_workload_draws_each_job(make: Make) -> None:
    """--workload realistic draws queue positions, steps, phases and processing times per job,
    from the documented ranges, and a job's own sim settings still win."""
    client = make(seed=3, workload="realistic")
    infos = []
    for index in range(200):
        await client.post("/_sim/jobs", json={"id": f"job_{index}"})
        infos.append((await client.get(f"/_sim/jobs/job_{index}")).json())
    positions = {info["queue_positions"] for info in infos}
    assert positions == set(range(1, 9))
    steps = [info["seconds_per_position"] for info in infos]
    assert 2.9 < sum(steps) / len(steps) < 3.1
    assert len(set(steps)) == len(steps)
    assert all(0 <= info["queue_phase"] < 1 for info in infos)
    processing = sorted(info["processing_s"] for info in infos)
    assert 11.8 < processing[len(processing) // 2] < 12.2
    assert 10.0 < processing[0] <= processing[-1] < 14.0
    await client.post("/_sim/jobs", json={"id": "job_mine", "processing_s": 1})
    assert (await client.get("/_sim/jobs/job_mine")).json()["processing_s"] == 1.0


@pytest.mark.parametrize(("sigma", "lowest", "highest"), [(0.0, 12.0, 12.0), (0.15, 6.0, 24.0)])
async def test_realistic_processing_spread_is_configurable(
    make: Make, sigma: float, lowest: float, highest: float
) -> None:
    """--processing-sigma sets the log-normal spread of the realistic processing times: none
    at 0, several seconds either side of the 12 s median at 0.15."""
    client = make(seed=5, workload="realistic", processing_sigma=sigma)
    processing = []
    for index in range(200):
        await client.post("/_sim/jobs", json={"id": f"job_{index}"})
        processing.append((await client.get(f"/_sim/jobs/job_{index}")).json()["processing_s"])
    assert lowest <= min(processing) <= max(processing) <= highest
    if sigma:
        assert max(processing) - min(processing) > 6.0


def test_unknown_workload_is_refused() -> None:
    """Only the documented workloads exist."""
    with pytest.raises(ValueError, match="workload must be one of fixed, realistic"):
        SimulatorConfig(workload="busy")


@pytest.mark.parametrize(
    ("elapsed", "expected"),
    [
        (3.0, {"progress": 0.0, "eta": 3}),  # processing just began
        (4.0, {"progress": 0.33, "eta": 2}),  # a third done: hundredths, rounded down
        (5.99, {"progress": 0.99, "eta": 0}),
    ],
)
async def test_readings_tell_progress_while_processing(
    make: Make, clock: Clock, elapsed: float, expected: dict[str, Any]
) -> None:
    """--readings progress adds the fraction done and the seconds left to a processing answer,
    and to no other."""
    client = make(seed=7, readings="progress")
    job_id = await create(client)
    assert "progress" not in (await poll(client, job_id)).json()
    clock.now += elapsed
    assert (await poll(client, job_id)).json() == {"id": job_id, "status": "processing", **expected}
    clock.now += 3.0
    assert set((await poll(client, job_id)).json()) == {"id", "status", "output"}


def test_unknown_readings_are_refused() -> None:
    """Only the documented readings exist."""
    with pytest.raises(ValueError, match="readings must be one of none, progress"):
        SimulatorConfig(readings="percent")
