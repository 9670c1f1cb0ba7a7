"""The simulator's Google Veo dialect answers long-running operations as the Gemini API
documents them, and the built-in `google-veo` profile reads those answers."""

from __future__ import annotations

from typing import Any

import pytest

from service.devtools.providers import Phase
from service.devtools.providers.google_veo import PROVIDER
from tests.unit.dialect_rig import KEY, Served, served
from tests.unit.dialect_views import URLS, Reading, read, request, view

NAME = "models/veo-3.1-generate-preview/operations/job-1"


@pytest.mark.parametrize("phase", ["queued", "processing"])
def test_a_running_operation_is_not_done(phase: Phase) -> None:
    """While it runs an operation has its name only: no done, response or error."""
    assert PROVIDER.render(view(phase)) == {"name": NAME}


def test_a_done_operation_has_its_videos() -> None:
    """Each video is a generated sample's video.uri."""
    operation = PROVIDER.render(view("succeeded"))
    assert operation["done"] is True
    samples = operation["response"]["generateVideoResponse"]["generatedSamples"]
    assert [sample["video"]["uri"] for sample in samples] == list(URLS)
    assert "error" not in operation


def test_a_failed_operation_has_a_status_error() -> None:
    """A failure is done with a google.rpc.Status error carrying the message."""
    operation = PROVIDER.render(view("failed", error="Video generation failed"))
    assert operation["done"] is True
    assert operation["error"]["message"] == "Video generation failed"
    assert isinstance(operation["error"]["code"], int)
    assert "response" not in operation


def test_errors_are_google_errors() -> None:
    """An unknown operation is NOT_FOUND; a wrong key is 400 API key not valid."""
    status, body = PROVIDER.not_found("zzz")
    assert (status, body["error"]["code"], body["error"]["status"]) == (404, 404, "NOT_FOUND")
    status, body = PROVIDER.unauthorized
    assert (status, body["error"]["status"]) == (400, "INVALID_ARGUMENT")
    assert body["error"]["message"].startswith("API key not valid")


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ({"x-goog-api-key": "AIza123"}, "AIza123"),
        ({"authorization": "Bearer AIza123"}, None),  # an OAuth token is not the API key
        ({"x-goog-api-key": ""}, None),
        ({}, None),
    ],
)
def test_the_key_is_the_goog_api_key_header(headers: dict[str, str], key: str | None) -> None:
    """Only the x-goog-api-key header presents a key."""
    assert PROVIDER.presented_key(request("/x", headers)) == key


@pytest.mark.parametrize("model", ["veo-3.1-generate-preview", "veo-3.0-fast-generate-001"])
def test_the_route_takes_any_model_and_the_operation_id(model: str) -> None:
    """GET /v1beta/models/{model}/operations/{id}: its one group is the operation's last
    segment, the job id."""
    match = PROVIDER.status_route.fullmatch(f"/v1beta/models/{model}/operations/vz341u0pmdlc")
    assert match is not None
    assert match.group(1) == "vz341u0pmdlc"
    assert PROVIDER.status_route.fullmatch("/v1beta/operations/vz341u0pmdlc") is None


def test_a_created_operation_is_named_under_its_model() -> None:
    """predictLongRunning answers the operation's name, ending in the job id."""
    assert PROVIDER.created is not None
    assert PROVIDER.create_path is not None
    assert PROVIDER.create_path.endswith(":predictLongRunning")
    assert PROVIDER.created("abc") == {"name": "models/veo-3.1-generate-preview/operations/abc"}


MESSAGE = "The prompt was refused by moderation"


@pytest.mark.parametrize(
    ("phase", "reading"),
    [
        # no queue in the Gemini API: a queued job is read as running
        ("queued", Reading("progress", "processing", None, None)),
        ("processing", Reading("progress", "processing", None, None)),
        ("succeeded", Reading("terminal", "succeeded", None, URLS)),
        ("failed", Reading("terminal", "failed", MESSAGE, None)),
    ],
)
def test_the_profile_reads_the_dialect(phase: Phase, reading: Reading) -> None:
    """The profile's computed status, and the error and videos, on each answer."""
    assert read("google-veo", (200, PROVIDER.render(view(phase)))) == reading


def test_the_profile_reads_done_false_as_running() -> None:
    """An answer that spells out done: false is still running."""
    assert read("google-veo", (200, {"name": NAME, "done": False})).status == "processing"


def test_the_profile_fails_a_generation_filtered_by_safety_checks() -> None:
    """Done without videos, with the filter's reasons: a failure that says why."""
    filtered = {"raiMediaFilteredCount": 1, "raiMediaFilteredReasons": ["Could not submit."]}
    answer = {"name": NAME, "done": True, "response": {"generateVideoResponse": filtered}}
    reading = read("google-veo", (200, answer))
    assert (reading.status, reading.message) == ("failed", "Could not submit.")


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (PROVIDER.not_found("nope"), "not_found"),
        (PROVIDER.unauthorized, "unauthorized"),  # a 400: the key, on this bodiless GET
        ((403, {"error": {"code": 403, "message": "no key", "status": "PERMISSION_DENIED"}}),
         "unauthorized"),
    ],
)  # fmt: skip
def test_the_profile_reads_the_refusals(answer: tuple[int, dict[str, Any]], code: str) -> None:
    """An unknown operation and a wrong or missing key end the job with their code and
    Google's message."""
    reading = read("google-veo", answer)
    assert reading[:2] == ("refused", code)
    assert answer[1]["error"]["message"] in str(reading.message)


# Through the simulator (`fake-upstream --profile google-veo`) on a loopback port.

BASE = "/v1beta/models/veo-3.1-generate-preview"


async def operation(sim: Served, op_id: str, key: str = KEY) -> tuple[int, dict[str, Any]]:
    response = await sim.api.get(f"{BASE}/operations/{op_id}", headers={"x-goog-api-key": key})
    return response.status_code, response.json()


async def test_the_simulator_serves_an_operation_by_the_clock() -> None:
    """Not done while queued or running, then done with its videos."""
    async with served("google-veo") as sim:
        await sim.job("op1", image_urls=list(URLS))
        seen = []
        for elapsed in (0.0, 2.5, 3.5):
            sim.clock.advance(elapsed)
            status, body = await operation(sim, "op1")
            seen.append((status, body.get("done"), "response" in body))
        assert seen == [(200, None, False), (200, None, False), (200, True, True)]


async def test_the_simulator_fails_an_operation_with_its_error() -> None:
    """A failed job is a done operation with the job's error as error.message."""
    async with served("google-veo") as sim:
        await sim.job("op-bad", outcome="failed", error="Video generation failed")
        sim.clock.advance(6.0)
        status, body = await operation(sim, "op-bad")
        assert (status, body["done"], body["error"]["message"]) == (
            200, True, "Video generation failed",
        )  # fmt: skip


async def test_the_simulator_refuses_an_unknown_operation_and_a_wrong_key() -> None:
    """An unknown operation is NOT_FOUND; a wrong key the 400 API_KEY_INVALID answer."""
    async with served("google-veo") as sim:
        await sim.job("op-key")
        assert await operation(sim, "no-such") == PROVIDER.not_found("no-such")
        assert await operation(sim, "op-key", key="AIza-wrong") == PROVIDER.unauthorized


async def test_the_simulator_starts_an_operation_that_can_be_polled() -> None:
    """predictLongRunning answers the operation's name; its last segment polls it."""
    async with served("google-veo") as sim:
        response = await sim.api.post(
            f"{BASE}:predictLongRunning",
            json={"instances": [{"prompt": "a cat"}]},
            headers={"x-goog-api-key": KEY},
        )
        name = response.json()["name"]
        assert name.startswith("models/veo-3.1-generate-preview/operations/")
        status, body = await operation(sim, name.rsplit("/", 1)[1])
        assert (status, body) == (200, {"name": name})
