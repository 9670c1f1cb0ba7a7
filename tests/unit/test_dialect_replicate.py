"""The simulator's Replicate dialect answers as the HTTP reference documents predictions, and
the built-in `replicate` profile reads those answers."""

from __future__ import annotations

from typing import Any

import pytest

from service.devtools.providers import Phase
from service.devtools.providers.replicate import PROVIDER
from tests.unit.dialect_rig import KEY, Served, served
from tests.unit.dialect_views import URLS, Reading, read, request, view


@pytest.mark.parametrize(
    ("phase", "status"),
    [
        ("queued", "starting"),  # waiting for a worker: the reference's first status
        ("processing", "processing"),
        ("succeeded", "succeeded"),
        ("failed", "failed"),
    ],
)
def test_each_phase_is_the_documented_status(phase: Phase, status: str) -> None:
    """A prediction's `status` is one of the reference's words; its urls lead back to it."""
    prediction = PROVIDER.render(view(phase))
    assert prediction["status"] == status
    assert prediction["id"] == "job-1"
    assert prediction["urls"]["get"] == "https://api.replicate.com/v1/predictions/job-1"
    assert prediction["created_at"] == "2024-06-01T12:00:00.000000Z"


def test_a_succeeded_prediction_outputs_its_urls() -> None:
    """Several files are a list of URLs; one file is the URL itself."""
    assert PROVIDER.render(view("succeeded"))["output"] == list(URLS)
    assert PROVIDER.render(view("succeeded", output_urls=URLS[:1]))["output"] == URLS[0]


def test_a_failed_prediction_has_its_error_and_no_output() -> None:
    """`error` carries the job's error text."""
    prediction = PROVIDER.render(view("failed", error="CUDA out of memory"))
    assert (prediction["error"], prediction["output"]) == ("CUDA out of memory", None)


def test_a_running_prediction_has_no_output() -> None:
    """Nothing in flight looks like an output."""
    prediction = PROVIDER.render(view("processing"))
    assert (prediction["output"], prediction["error"]) == (None, None)


def test_errors_are_problem_details() -> None:
    """An unknown id and a wrong token answer RFC 7807 problem details with their status."""
    status, body = PROVIDER.not_found("nope")
    assert (status, body["status"], set(body)) == (404, 404, {"title", "detail", "status"})
    status, body = PROVIDER.unauthorized
    assert (status, body["title"]) == (401, "Unauthenticated")


@pytest.mark.parametrize(
    ("authorization", "key"),
    [
        ("Bearer r8_abc", "r8_abc"),
        ("Token r8_abc", "r8_abc"),  # the older docs' scheme, still accepted
        ("r8_abc", None),
        ("Bearer ", None),
        ("", None),
    ],
)
def test_the_key_is_a_bearer_or_token(authorization: str, key: str | None) -> None:
    """`Authorization: Bearer <token>` or `Token <token>` presents a key."""
    headers = {"authorization": authorization} if authorization else {}
    assert PROVIDER.presented_key(request("/x", headers)) == key


def test_the_route_is_the_prediction_path() -> None:
    """GET /v1/predictions/{id}: its one group is the id; the cancel path is not a status."""
    match = PROVIDER.status_route.fullmatch("/v1/predictions/gm3qorzdhgbfurvjtvhg6dckhu")
    assert match is not None
    assert match.group(1) == "gm3qorzdhgbfurvjtvhg6dckhu"
    assert PROVIDER.status_route.fullmatch("/v1/predictions/gm3q/cancel") is None


def test_a_created_prediction_is_starting() -> None:
    """The create answer is the prediction, starting, with its id."""
    assert PROVIDER.created is not None
    created = PROVIDER.created("abc")
    assert (created["id"], created["status"]) == ("abc", "starting")


MESSAGE = "The prompt was refused by moderation"


@pytest.mark.parametrize(
    ("phase", "reading"),
    [
        ("queued", Reading("progress", "queued", None, None)),
        ("processing", Reading("progress", "processing", None, None)),
        ("succeeded", Reading("terminal", "succeeded", None, URLS)),
        ("failed", Reading("terminal", "failed", MESSAGE, None)),
    ],
)
def test_the_profile_reads_the_dialect(phase: Phase, reading: Reading) -> None:
    """The bridge finds the status, error and outputs of each answer through the profile."""
    assert read("replicate", (200, PROVIDER.render(view(phase)))) == reading


@pytest.mark.parametrize(
    ("output", "outputs"),
    [
        ("https://replicate.delivery/a.webp", ("https://replicate.delivery/a.webp",)),
        (["https://replicate.delivery/a.png"], ("https://replicate.delivery/a.png",)),
        # a model whose output is an object of files
        ({"video": "https://replicate.delivery/v.mp4"}, ("https://replicate.delivery/v.mp4",)),
    ],
)
def test_the_profile_reads_every_output_shape(output: object, outputs: object) -> None:
    """A string, a list and an object of URLs are all read as the outputs."""
    answer = {"status": "succeeded", "output": output}
    assert read("replicate", (200, answer)).outputs == outputs


@pytest.mark.parametrize("word", ["canceled", "aborted"])
def test_the_profile_ends_stopped_predictions_as_failed(word: str) -> None:
    """A prediction canceled by its creator or aborted before it ran has failed."""
    assert read("replicate", (200, {"status": word})).status == "failed"


@pytest.mark.parametrize(
    ("answer", "code"),
    [(PROVIDER.not_found("nope"), "not_found"), (PROVIDER.unauthorized, "unauthorized")],
)
def test_the_profile_reads_the_refusals(answer: tuple[int, dict[str, object]], code: str) -> None:
    """An unknown id and a wrong token end the job with their code and Replicate's detail."""
    reading = read("replicate", answer)
    assert reading[:2] == ("refused", code)
    assert str(answer[1]["detail"]) in str(reading.message)


# Through the simulator (`fake-upstream --profile replicate`) on a loopback port.


async def prediction(sim: Served, job_id: str, token: str = KEY) -> tuple[int, dict[str, Any]]:
    response = await sim.api.get(
        f"/v1/predictions/{job_id}", headers={"Authorization": f"Bearer {token}"}
    )
    return response.status_code, response.json()


async def test_the_simulator_serves_a_prediction_by_the_clock() -> None:
    """starting, then processing, then succeeded with its output."""
    async with served("replicate") as sim:
        await sim.job("p-1", image_urls=list(URLS))
        seen = []
        for elapsed in (0.0, 2.5, 3.5):
            sim.clock.advance(elapsed)
            status, body = await prediction(sim, "p-1")
            seen.append((status, body["status"], body["output"]))
        assert seen == [
            (200, "starting", None),
            (200, "processing", None),
            (200, "succeeded", list(URLS)),
        ]


async def test_the_simulator_fails_a_prediction_with_its_error() -> None:
    """A failed job answers failed with the job's error."""
    async with served("replicate") as sim:
        await sim.job("p-bad", outcome="failed", error="CUDA out of memory")
        sim.clock.advance(6.0)
        status, body = await prediction(sim, "p-bad")
        assert (status, body["status"], body["error"]) == (200, "failed", "CUDA out of memory")


async def test_the_simulator_refuses_an_unknown_id_and_a_wrong_token() -> None:
    """An unknown prediction is a 404 problem; a wrong token the 401 problem."""
    async with served("replicate") as sim:
        await sim.job("p-key")
        assert await prediction(sim, "no-such") == PROVIDER.not_found("no-such")
        assert await prediction(sim, "p-key", token="r8_wrong") == PROVIDER.unauthorized


async def test_the_simulator_creates_a_prediction_that_can_be_polled() -> None:
    """POST /v1/predictions answers the starting prediction and its id."""
    async with served("replicate") as sim:
        response = await sim.api.post(
            "/v1/predictions",
            json={"version": "5c7d5dc6", "input": {"text": "Alice"}},
            headers={"Authorization": f"Token {KEY}"},
        )
        created = response.json()
        assert (response.status_code, created["status"]) == (200, "starting")
        assert (await prediction(sim, created["id"]))[1]["status"] == "starting"
