"""The simulator speaking Black Forest Labs' get_result (`--profile bfl`) on a loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.unit.dialect_rig import KEY, Served, served

HEADERS = {"x-key": KEY}


@pytest.fixture
async def bfl() -> AsyncIterator[Served]:
    async with served("bfl") as sim:
        yield sim


async def result(sim: Served, job_id: str, **headers: str) -> tuple[int, Any]:
    response = await sim.api.get(
        "/v1/get_result", params={"id": job_id}, headers={**HEADERS, **headers}
    )
    return response.status_code, response.json()


@pytest.mark.parametrize(
    ("elapsed", "status"),
    [
        (0.0, "Pending"),  # queued
        (3.0, "Pending"),  # generating: the API does not tell the two apart
    ],
)
async def test_an_unfinished_task_is_pending(bfl: Served, elapsed: float, status: str) -> None:
    """Queued or generating, the task is Pending, with no result yet."""
    await bfl.job("b-1")
    bfl.clock.advance(elapsed)
    body = {"id": "b-1", "status": status, "result": None, "progress": None}
    assert await result(bfl, "b-1") == (200, body)


async def test_a_ready_task_gives_its_sample_url(bfl: Served) -> None:
    """Ready carries result.sample, the image's URL."""
    await bfl.job("b-ok", image_urls=["https://delivery.bfl.ai/x/sample.jpg"])
    bfl.clock.advance(6.0)
    status, body = await result(bfl, "b-ok")
    assert (status, body["status"]) == (200, "Ready")
    assert body["result"] == {"sample": "https://delivery.bfl.ai/x/sample.jpg"}


async def test_a_failed_task_is_an_error_with_its_message(bfl: Served) -> None:
    """A failed task answers status Error and the message in `error`."""
    await bfl.job("b-bad", outcome="failed", error="Generation failed: invalid input image")
    bfl.clock.advance(6.0)
    status, body = await result(bfl, "b-bad")
    assert (status, body["status"], body["result"]) == (200, "Error", None)
    assert body["error"] == "Generation failed: invalid input image"


async def test_an_unknown_task_is_answered_200_task_not_found(bfl: Served) -> None:
    """BFL answers an unknown id with 200 and the status word "Task not found"."""
    status, body = await result(bfl, "no-such-task")
    assert (status, body["id"], body["status"]) == (200, "no-such-task", "Task not found")


@pytest.mark.parametrize(
    "headers",
    [
        {"x-key": "wrong_key"},  # a key the simulator does not accept
        {"x-key": "", "Authorization": f"Bearer {KEY}"},  # the right key, in the wrong header
    ],
)
async def test_a_wrong_key_is_not_authenticated(bfl: Served, headers: dict[str, str]) -> None:
    """Only the `x-key` header with an accepted key is let in; else 401 "Not authenticated"."""
    await bfl.job("b-key")
    assert await result(bfl, "b-key", **headers) == (401, {"detail": "Not authenticated"})


async def test_a_generation_request_answers_the_task_id(bfl: Served) -> None:
    """POST /v1/flux-2-pro answers {"id"}, which get_result then finds Pending."""
    response = await bfl.api.post("/v1/flux-2-pro", json={"prompt": "a cat"}, headers=HEADERS)
    assert response.status_code == 200
    task_id = response.json()["id"]
    assert (await result(bfl, task_id))[1]["status"] == "Pending"


async def test_an_outage_answers_503_until_it_ends(bfl: Served) -> None:
    """The /_sim/faults outage turns get_result into 503s, and lifting it restores them."""
    await bfl.job("b-outage")
    await bfl.faults(error_rate=1.0)
    assert (await result(bfl, "b-outage"))[0] == 503
    await bfl.faults(error_rate=0.0)
    assert (await result(bfl, "b-outage"))[0] == 200
