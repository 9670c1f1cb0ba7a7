"""The simulator speaking fal's queue (`--profile fal`) on a loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.unit.dialect_rig import KEY, Served, served

HEADERS = {"Authorization": f"Key {KEY}"}


@pytest.fixture
async def fal() -> AsyncIterator[Served]:
    async with served("fal") as sim:
        yield sim


async def get(sim: Served, path: str, **headers: str) -> tuple[int, Any]:
    response = await sim.api.get(path, headers={**HEADERS, **headers})
    return response.status_code, response.json()


@pytest.mark.parametrize(
    ("elapsed", "code", "expected"),
    [
        (0.0, 202, {"status": "IN_QUEUE", "queue_position": 1}),  # one request ahead
        (1.5, 202, {"status": "IN_QUEUE", "queue_position": 0}),  # next in line
        (3.0, 202, {"status": "IN_PROGRESS", "logs": None}),  # running, logs not asked for
        (6.0, 200, {"status": "COMPLETED", "logs": None}),  # done
    ],
)
async def test_a_request_queues_runs_and_completes(
    fal: Served, elapsed: float, code: int, expected: dict[str, Any]
) -> None:
    """IN_QUEUE counts the requests ahead down to 0, then IN_PROGRESS, then COMPLETED; the
    answer is a 202 until the request completes, then a 200."""
    await fal.job("r-1")
    fal.clock.advance(elapsed)
    assert await get(fal, "/requests/r-1/status") == (code, {"request_id": "r-1", **expected})


async def test_the_model_id_may_precede_requests(fal: Served) -> None:
    """A base URL that names the model (queue.fal.run/fal-ai/flux) reaches the same request."""
    await fal.job("r-model")
    status, body = await get(fal, "/fal-ai/flux/requests/r-model/status")
    assert (status, body["status"]) == (202, "IN_QUEUE")


async def test_a_succeeded_request_answers_its_output(fal: Served) -> None:
    """The result of a completed request is the model's output, images[].url."""
    urls = ["https://v3.fal.media/files/a.jpg", "https://v3.fal.media/files/b.jpg"]
    await fal.job("r-ok", image_urls=urls)
    fal.clock.advance(6.0)
    status, body = await get(fal, "/requests/r-ok")
    assert status == 200
    assert [image["url"] for image in body["images"]] == urls


async def test_a_failed_request_completes_and_its_result_is_the_error(fal: Served) -> None:
    """A failed request's status is COMPLETED as well; its result is a 422 whose detail holds
    the model's message."""
    await fal.job("r-bad", outcome="failed", error="The content was flagged by a checker.")
    fal.clock.advance(6.0)
    assert (await get(fal, "/requests/r-bad/status"))[1]["status"] == "COMPLETED"
    status, body = await get(fal, "/requests/r-bad")
    assert status == 422
    [error] = body["detail"]
    assert error["msg"] == "The content was flagged by a checker."
    assert (error["type"], error["loc"]) == ("content_policy_violation", ["body"])
    assert error["url"].startswith("https://docs.fal.ai/errors")


@pytest.mark.parametrize(
    ("error_type", "code"),
    [
        ("request_timeout", 504),
        ("startup_timeout", 504),
        ("runner_disconnected", 503),
        ("runner_incomplete_response", 502),
        ("internal_error", 500),
    ],
)
async def test_a_request_error_is_its_status_with_a_detail_and_error_type(
    fal: Served, error_type: str, code: int
) -> None:
    """A request that failed on the platform completes too; its result is the error's typical
    status with a sentence in `detail` and the machine-readable `error_type`."""
    await fal.job("r-lost", outcome="failed", error=error_type)
    fal.clock.advance(6.0)
    assert await get(fal, "/requests/r-lost/status") == (
        200, {"request_id": "r-lost", "status": "COMPLETED", "logs": None}
    )  # fmt: skip
    status, body = await get(fal, "/requests/r-lost")
    assert status == code
    assert set(body) == {"detail", "error_type"}
    assert isinstance(body["detail"], str)
    assert body["error_type"] == error_type


async def test_the_result_of_an_unfinished_request_is_refused(fal: Served) -> None:
    """Asking for the result while the request is in progress is a client error."""
    await fal.job("r-early")
    fal.clock.advance(3.0)
    status, body = await get(fal, "/requests/r-early")
    assert status == 400
    assert isinstance(body["detail"], str)


@pytest.mark.parametrize("path", ["/requests/nope/status", "/requests/nope"])
async def test_an_unknown_request_is_a_404(fal: Served, path: str) -> None:
    """An unknown request id answers 404 with a detail, on its status and on its result."""
    status, body = await get(fal, path)
    assert status == 404
    assert "detail" in body


@pytest.mark.parametrize(
    "authorization",
    [
        "Key wrong_key",  # a key the simulator does not accept
        f"Bearer {KEY}",  # the right key in the bearer scheme
        "",  # none
    ],
)
async def test_a_wrong_key_is_a_401(fal: Served, authorization: str) -> None:
    """Only `Authorization: Key <key>` with an accepted key is let in."""
    await fal.job("r-key")
    status, _ = await get(fal, "/requests/r-key/status", Authorization=authorization)
    assert status == 401


async def test_an_outage_answers_503_until_it_ends(fal: Served) -> None:
    """The /_sim/faults outage turns status requests into 503s, and lifting it restores them."""
    await fal.job("r-outage")
    await fal.faults(error_rate=1.0)
    assert (await get(fal, "/requests/r-outage/status"))[0] == 503
    await fal.faults(error_rate=0.0)
    assert (await get(fal, "/requests/r-outage/status"))[0] == 202
