"""The simulator speaking OpenAI's videos API (`--profile openai-videos`) on a loopback port."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.unit.dialect_rig import KEY, Served, served

HEADERS = {"Authorization": f"Bearer {KEY}"}
VIDEO_KEYS = {
    "id", "object", "model", "status", "progress", "created_at", "completed_at", "expires_at",
    "prompt", "size", "seconds", "remixed_from_video_id", "error",
}  # fmt: skip


@pytest.fixture
async def videos() -> AsyncIterator[Served]:
    async with served("openai-videos") as sim:
        yield sim


async def video(sim: Served, job_id: str, **headers: str) -> tuple[int, Any]:
    response = await sim.api.get(f"/v1/videos/{job_id}", headers={**HEADERS, **headers})
    return response.status_code, response.json()


@pytest.mark.parametrize(
    ("elapsed", "status", "progress"),
    [
        (0.0, "queued", 0),  # waiting
        (3.0, "in_progress", 25),  # 1 s of 4 s of processing
        (5.0, "in_progress", 75),  # 3 s of 4 s
        (6.0, "completed", 100),  # done
    ],
)
async def test_a_video_is_queued_then_in_progress_then_completed(
    videos: Served, elapsed: float, status: str, progress: int
) -> None:
    """The video object's status and its percentage of progress follow the job."""
    await videos.job("video_1")
    videos.clock.advance(elapsed)
    code, body = await video(videos, "video_1")
    assert code == 200
    assert set(body) == VIDEO_KEYS
    assert (body["object"], body["status"], body["progress"]) == ("video", status, progress)
    assert body["error"] is None


async def test_a_completed_video_names_no_url(videos: Served) -> None:
    """The finished video is binary content elsewhere: the object holds no output URL."""
    await videos.job("video_ok", image_urls=["https://cdn.example/never-shown.mp4"])
    videos.clock.advance(6.0)
    code, body = await video(videos, "video_ok")
    assert (code, body["status"]) == (200, "completed")
    assert "https://cdn.example/never-shown.mp4" not in str(body)


async def test_a_failed_video_carries_its_error(videos: Served) -> None:
    """A failed video's `error` holds a code and the message."""
    await videos.job("video_bad", outcome="failed", error="Your request was blocked.")
    videos.clock.advance(6.0)
    code, body = await video(videos, "video_bad")
    assert (code, body["status"]) == (200, "failed")
    assert body["error"]["message"] == "Your request was blocked."
    assert isinstance(body["error"]["code"], str)


async def test_an_unknown_video_is_a_404_error_object(videos: Served) -> None:
    """An unknown id answers 404 with OpenAI's error object."""
    code, body = await video(videos, "video_missing")
    assert code == 404
    assert set(body["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer sk-wrong",  # a key the simulator does not accept
        f"Key {KEY}",  # the right key in fal's scheme
        "",  # none
    ],
)
async def test_a_wrong_key_is_a_401(videos: Served, authorization: str) -> None:
    """Only `Authorization: Bearer <key>` with an accepted key is let in."""
    await videos.job("video_key")
    code, body = await video(videos, "video_key", Authorization=authorization)
    assert code == 401
    assert body["error"]["code"] == "invalid_api_key"
    assert body["error"]["message"].startswith("Incorrect API key provided")


async def test_creating_a_video_answers_the_queued_object(videos: Served) -> None:
    """POST /v1/videos answers the new video object, queued, created now."""
    response = await videos.api.post("/v1/videos", json={"prompt": "a cat"}, headers=HEADERS)
    assert response.status_code == 200
    body = response.json()
    assert (body["object"], body["status"], body["progress"]) == ("video", "queued", 0)
    assert abs(body["created_at"] - time.time()) < 60
    assert (await video(videos, body["id"]))[0] == 200


async def test_an_outage_answers_503_until_it_ends(videos: Served) -> None:
    """The /_sim/faults outage turns the status request into 503s, and lifting it restores them."""
    await videos.job("video_outage")
    await videos.faults(error_rate=1.0)
    assert (await video(videos, "video_outage"))[0] == 503
    await videos.faults(error_rate=0.0)
    assert (await video(videos, "video_outage"))[0] == 200
