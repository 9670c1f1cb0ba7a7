"""The simulator's Luma dialect answers as the Dream Machine reference documents, and the
built-in `luma` profile reads those answers."""

from __future__ import annotations

from typing import Any

import pytest

from service.devtools.providers import Phase
from service.devtools.providers.luma import PROVIDER
from tests.unit.dialect_rig import KEY, Served, served
from tests.unit.dialect_views import URLS, Reading, read, request, view


@pytest.mark.parametrize(
    ("phase", "state"),
    [
        ("queued", "queued"),
        ("processing", "dreaming"),  # the reference's word for a generation being made
        ("succeeded", "completed"),
        ("failed", "failed"),
    ],
)
def test_each_phase_is_the_documented_state(phase: Phase, state: str) -> None:
    """A generation's `state` is one of the reference's four words."""
    generation = PROVIDER.render(view(phase))
    assert generation["state"] == state
    assert generation["id"] == "job-1"
    assert generation["created_at"] == "2024-06-01T12:00:00Z"


def test_a_completed_generation_has_its_video_asset() -> None:
    """The video URL is at assets.video; there is no failure reason."""
    generation = PROVIDER.render(view("succeeded"))
    assert generation["assets"] == {"video": URLS[0]}
    assert generation["failure_reason"] is None


def test_a_failed_generation_says_why_and_has_no_assets() -> None:
    """failure_reason carries the job's error text."""
    generation = PROVIDER.render(view("failed", error="Frame moderation failed"))
    assert generation["failure_reason"] == "Frame moderation failed"
    assert generation["assets"] is None


def test_a_running_generation_has_no_assets() -> None:
    """Nothing in flight looks like an output."""
    assert PROVIDER.render(view("processing"))["assets"] is None


def test_errors_are_a_detail() -> None:
    """An unknown id and a wrong key answer the reference's Error shape."""
    status, body = PROVIDER.not_found("nope")
    assert (status, set(body)) == (404, {"detail"})
    status, body = PROVIDER.unauthorized
    assert (status, body) == (401, {"detail": "Invalid API key is provided"})


@pytest.mark.parametrize(
    ("authorization", "key"),
    [("Bearer luma-xxxx", "luma-xxxx"), ("luma-xxxx", None), ("Key luma-xxxx", None), ("", None)],
)
def test_the_key_is_a_bearer_token(authorization: str, key: str | None) -> None:
    """Only `Authorization: Bearer <key>` presents a key."""
    headers = {"authorization": authorization} if authorization else {}
    assert PROVIDER.presented_key(request("/x", headers)) == key


def test_the_route_is_the_generation_path() -> None:
    """GET /dream-machine/v1/generations/{id}: its one group is the id."""
    match = PROVIDER.status_route.fullmatch("/dream-machine/v1/generations/abc-123")
    assert match is not None
    assert match.group(1) == "abc-123"
    assert PROVIDER.status_route.fullmatch("/dream-machine/v1/generations/a/b") is None


def test_a_created_generation_is_queued() -> None:
    """The create answer is the Generation, queued, with its id."""
    assert PROVIDER.created is not None
    created = PROVIDER.created("abc")
    assert (created["id"], created["state"]) == ("abc", "queued")


MESSAGE = "The prompt was refused by moderation"


@pytest.mark.parametrize(
    ("phase", "reading"),
    [
        ("queued", Reading("progress", "queued", None, None)),
        ("processing", Reading("progress", "processing", None, None)),
        ("succeeded", Reading("terminal", "succeeded", None, URLS[:1])),
        ("failed", Reading("terminal", "failed", MESSAGE, None)),
    ],
)
def test_the_profile_reads_the_dialect(phase: Phase, reading: Reading) -> None:
    """The bridge finds the status, error and video of each answer through the profile."""
    assert read("luma", (200, PROVIDER.render(view(phase)))) == reading


def test_the_profile_reads_an_image_generation() -> None:
    """An image generation's output is assets.image; the progress video is not an output."""
    assets = {"image": "https://cdn.example.com/i.jpg", "progress_video": "https://p.example"}
    answer = {"state": "completed", "assets": assets}
    assert read("luma", (200, answer)).outputs == ("https://cdn.example.com/i.jpg",)


@pytest.mark.parametrize(
    ("answer", "code"),
    [(PROVIDER.not_found("nope"), "not_found"), (PROVIDER.unauthorized, "unauthorized")],
)
def test_the_profile_reads_the_refusals(answer: tuple[int, dict[str, str]], code: str) -> None:
    """An unknown id and a wrong key end the job with their code and Luma's detail."""
    reading = read("luma", answer)
    assert reading[:2] == ("refused", code)
    assert answer[1]["detail"] in str(reading.message)


# Through the simulator (`fake-upstream --profile luma`) on a loopback port.

AUTH = {"Authorization": f"Bearer {KEY}"}


async def generation(sim: Served, job_id: str, **headers: str) -> tuple[int, dict[str, Any]]:
    response = await sim.api.get(
        f"/dream-machine/v1/generations/{job_id}", headers={**AUTH, **headers}
    )
    return response.status_code, response.json()


async def test_the_simulator_serves_a_generation_by_the_clock() -> None:
    """queued, then dreaming, then completed with its video."""
    async with served("luma") as sim:
        await sim.job("g-1", image_urls=list(URLS))
        states = []
        for elapsed in (0.0, 2.5, 3.5):
            sim.clock.advance(elapsed)
            status, body = await generation(sim, "g-1")
            states.append((status, body["state"], body["assets"]))
        assert states == [
            (200, "queued", None),
            (200, "dreaming", None),
            (200, "completed", {"video": URLS[0]}),
        ]


async def test_the_simulator_fails_a_generation_with_its_reason() -> None:
    """A failed job answers failed with the job's error as failure_reason."""
    async with served("luma") as sim:
        await sim.job("g-bad", outcome="failed", error="Prompt processing failed")
        sim.clock.advance(6.0)
        status, body = await generation(sim, "g-bad")
        assert (status, body["state"], body["failure_reason"]) == (
            200, "failed", "Prompt processing failed",
        )  # fmt: skip


async def test_the_simulator_refuses_an_unknown_id_and_a_wrong_key() -> None:
    """An unknown generation is a 404 detail; a wrong key the 401 detail."""
    async with served("luma") as sim:
        await sim.job("g-key")
        assert await generation(sim, "no-such") == PROVIDER.not_found("no-such")
        assert await generation(sim, "g-key", Authorization="Bearer nope") == PROVIDER.unauthorized


async def test_the_simulator_creates_a_generation_that_can_be_polled() -> None:
    """POST /dream-machine/v1/generations/video answers the queued generation and its id."""
    async with served("luma") as sim:
        response = await sim.api.post(
            "/dream-machine/v1/generations/video", json={"prompt": "a tiger"}, headers=AUTH
        )
        created = response.json()
        assert (response.status_code, created["state"]) == (200, "queued")
        assert (await generation(sim, created["id"]))[1]["state"] == "queued"
