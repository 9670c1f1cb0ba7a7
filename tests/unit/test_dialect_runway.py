"""The simulator speaking Runway's task API (`--profile runway`) on a loopback port."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.unit.dialect_rig import KEY, Served, served

HEADERS = {"Authorization": f"Bearer {KEY}", "X-Runway-Version": "2024-11-06"}
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture
async def runway() -> AsyncIterator[Served]:
    async with served("runway") as sim:
        yield sim


async def task(sim: Served, job_id: str, **headers: str) -> tuple[int, dict[str, Any]]:
    response = await sim.api.get(f"/v1/tasks/{job_id}", headers={**HEADERS, **headers})
    return response.status_code, response.json()


@pytest.mark.parametrize(
    ("elapsed", "expected"),
    [
        (0.0, {"status": "PENDING"}),  # in the queue: no progress
        (1.5, {"status": "PENDING"}),  # still queued, one position left
        (2.0, {"status": "RUNNING", "progress": 0.0}),  # processing starts
        (3.0, {"status": "RUNNING", "progress": 0.25}),  # 1 s of 4 s
        (5.0, {"status": "RUNNING", "progress": 0.75}),  # 3 s of 4 s
    ],
)
async def test_a_task_waits_then_runs_with_progress(
    runway: Served, elapsed: float, expected: dict[str, Any]
) -> None:
    """PENDING, then RUNNING with progress from 0 to 1 as processing goes."""
    await runway.job("t-1")
    runway.clock.advance(elapsed)
    status, body = await task(runway, "t-1")
    assert status == 200
    assert ISO.fullmatch(body.pop("createdAt"))
    assert body == {"id": "t-1", **expected}


async def test_a_succeeded_task_lists_its_output_urls(runway: Served) -> None:
    """SUCCEEDED carries `output`, the URLs, and nothing of failure or progress."""
    urls = ["https://cdn.example/a.mp4", "https://cdn.example/b.mp4"]
    await runway.job("t-ok", image_urls=urls)
    runway.clock.advance(6.0)
    status, body = await task(runway, "t-ok")
    assert (status, body["status"], body["output"]) == (200, "SUCCEEDED", urls)
    assert set(body) == {"id", "status", "createdAt", "output"}


async def test_a_failed_task_gives_its_failure_and_code(runway: Served) -> None:
    """FAILED carries the failure sentence and a documented failureCode."""
    await runway.job("t-bad", outcome="failed", error="The prompt was flagged by moderation.")
    runway.clock.advance(6.0)
    status, body = await task(runway, "t-bad")
    assert status == 200
    assert body["status"] == "FAILED"
    assert body["failure"] == "The prompt was flagged by moderation."
    assert body["failureCode"] == "INPUT_PREPROCESSING.INTERNAL"


async def test_an_unknown_task_is_a_404_with_an_error(runway: Served) -> None:
    """An unknown id answers 404 with the documented {"error": string}."""
    status, body = await task(runway, "no-such-task")
    assert status == 404
    assert set(body) == {"error"}
    assert isinstance(body["error"], str)


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer wrong_key",  # a key the simulator does not accept
        f"Key {KEY}",  # the right key in fal's scheme
        "",  # none
    ],
)
async def test_a_wrong_key_is_a_401(runway: Served, authorization: str) -> None:
    """Only `Authorization: Bearer <key>` with an accepted key is let in."""
    await runway.job("t-key")
    status, body = await task(runway, "t-key", Authorization=authorization)
    assert status == 401
    assert "error" in body


@pytest.mark.parametrize("version", ["", "2024-09-13"])
async def test_the_version_header_is_required(runway: Served, version: str) -> None:
    """Without X-Runway-Version 2024-11-06 the request is refused with a 400 and an error."""
    await runway.job("t-version")
    status, body = await task(runway, "t-version", **{"X-Runway-Version": version})
    assert status == 400
    assert "2024-11-06" in body["error"]


async def test_image_to_video_starts_a_task_that_can_be_polled(runway: Served) -> None:
    """POST /v1/image_to_video answers {"id"}, and that task is PENDING at once."""
    response = await runway.api.post(
        "/v1/image_to_video", json={"promptImage": "https://x/y.png"}, headers=HEADERS
    )
    assert response.status_code == 200
    created = response.json()
    assert set(created) == {"id"}
    status, body = await task(runway, created["id"])
    assert (status, body["status"]) == (200, "PENDING")


async def test_an_outage_answers_503_until_it_ends(runway: Served) -> None:
    """The /_sim/faults outage turns every API request into a 503, and lifting it restores them."""
    await runway.job("t-outage")
    await runway.faults(error_rate=1.0)
    assert (await task(runway, "t-outage"))[0] == 503
    await runway.faults(error_rate=0.0)
    assert (await task(runway, "t-outage"))[0] == 200
