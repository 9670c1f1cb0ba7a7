"""`fake-upstream --profile ...`: one provider's dialect at the root, several side by side under
their own prefixes, each a simulator of its own; the default stays BetterWaifu's API."""

from __future__ import annotations

import argparse

import pytest

from service.devtools import fake_upstream
from tests.unit.dialect_rig import KEY, served

RUNWAY = {"Authorization": f"Bearer {KEY}", "X-Runway-Version": "2024-11-06"}
FAL = {"Authorization": f"Key {KEY}"}


async def test_several_profiles_each_live_under_their_name() -> None:
    """Under /runway and /fal two simulators answer in their dialects, each with its own jobs."""
    async with served("runway", "fal") as sim:
        created = await sim.api.post("/runway/_sim/jobs", json={"id": "shared-id"})
        assert created.status_code == 200
        runway = await sim.api.get("/runway/v1/tasks/shared-id", headers=RUNWAY)
        assert (runway.status_code, runway.json()["status"]) == (200, "PENDING")
        fal = await sim.api.get("/fal/requests/shared-id/status", headers=FAL)
        assert fal.status_code == 404  # fal's simulator holds no such job


async def test_an_outage_of_one_profile_leaves_the_others_answering() -> None:
    """Faults are per simulator: /runway answering 503 does not touch /fal."""
    async with served("runway", "fal") as sim:
        for name in ("runway", "fal"):
            await sim.api.post(f"/{name}/_sim/jobs", json={"id": "j"})
        await sim.api.post("/runway/_sim/faults", json={"error_rate": 1.0})
        assert (await sim.api.get("/runway/v1/tasks/j", headers=RUNWAY)).status_code == 503
        assert (await sim.api.get("/fal/requests/j/status", headers=FAL)).status_code == 202
        stats = (await sim.api.get("/fal/_sim/stats")).json()
        assert stats["by_status_code"] == {"202": 1}


async def test_betterwaifu_can_be_served_beside_a_dialect() -> None:
    """`--profile betterwaifu` is today's simulator, under /betterwaifu when beside others."""
    async with served("betterwaifu", "runway") as sim:
        await sim.api.post("/betterwaifu/_sim/jobs", json={"id": "bw-1"})
        answer = await sim.api.get(
            "/betterwaifu/api/v1/generate/bw-1", headers={"Authorization": f"Bearer {KEY}"}
        )
        assert answer.json() == {"id": "bw-1", "status": "queued", "queue_position": 3}


async def test_an_unknown_prefix_names_the_served_ones() -> None:
    """A path under no profile's prefix is a 404 that lists the prefixes served."""
    async with served("runway", "fal") as sim:
        response = await sim.api.get("/luma/v1/generations/x")
        assert response.status_code == 404
        assert response.json() == {"error": "no simulator at /luma (serving /runway, /fal)"}


async def test_one_profile_is_served_at_the_root() -> None:
    """With a single profile its API is at the root: the base URL is the server's."""
    async with served("fal") as sim:
        await sim.api.post("/_sim/jobs", json={"id": "r"})
        response = await sim.api.get("/requests/r/status", headers=FAL)
        assert (response.status_code, response.json()["status"]) == (202, "IN_QUEUE")


@pytest.mark.parametrize(
    ("kind", "status", "body"),
    [
        ("404", 404, {"error": "Task not found"}),  # as Runway answers an unknown task
        ("401", 401, {"error": "The provided API key is not valid."}),  # a refused key
    ],
)
async def test_job_faults_answer_in_the_dialect(
    kind: str, status: int, body: dict[str, str]
) -> None:
    """A job's 404 or 401 fault is answered as the provider answers those, then the job."""
    async with served("runway") as sim:
        await sim.api.post("/_sim/jobs", json={"id": "f", "faults": [{"kind": kind}]})
        first = await sim.api.get("/v1/tasks/f", headers=RUNWAY)
        assert (first.status_code, first.json()) == (status, body)
        assert (await sim.api.get("/v1/tasks/f", headers=RUNWAY)).status_code == 200


async def test_polls_are_counted_per_job_and_key() -> None:
    """A dialect's polls count on the job and in the stats, by the key as the dialect reads it."""
    async with served("bfl") as sim:
        await sim.api.post("/_sim/jobs", json={"id": "b"})
        for _ in range(2):
            await sim.api.get("/v1/get_result", params={"id": "b"}, headers={"x-key": KEY})
        assert (await sim.api.get("/_sim/jobs/b")).json()["polls"] == 2
        assert (await sim.api.get("/_sim/stats")).json()["gets_by_key"] == {KEY: 2}


def test_the_profile_flag_offers_every_dialect() -> None:
    """--profile accepts betterwaifu and the four dialects, and refuses an unknown name."""
    names = fake_upstream.profile_names()
    assert {"betterwaifu", "runway", "fal", "bfl", "openai-videos"} <= set(names)
    parser = argparse.ArgumentParser(exit_on_error=False)
    fake_upstream.configure_parser(parser)
    assert parser.parse_args(["--profile", "runway", "--profile", "fal"]).profile == [
        "runway",
        "fal",
    ]
    with pytest.raises(argparse.ArgumentError, match="invalid choice: 'nope'"):
        parser.parse_args(["--profile", "nope"])


def test_a_profile_given_twice_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """The same --profile twice stops the command with a message, before serving."""
    parser = argparse.ArgumentParser()
    fake_upstream.configure_parser(parser)
    args = parser.parse_args(["--profile", "fal", "--profile", "fal"])
    assert fake_upstream.command(args) == 2
    assert "--profile is given twice" in capsys.readouterr().err
