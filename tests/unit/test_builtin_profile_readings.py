"""The built-in profiles runway, fal, bfl and openai-videos read the answers of the simulator's
dialects, which are written from the same API references independently of the profiles: the
status, queue position, progress, outputs and error text each answer holds."""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import orjson
import pytest

from service import answers, profiles
from service.devtools.providers import Phase, Provider, View
from service.devtools.providers import fal as fal_dialect
from service.observation import Observation
from service.profile import Reader

URLS = ("https://cdn.example.com/a.png", "https://cdn.example.com/b.png")
ERROR = "The prompt was flagged by moderation."
PROFILES = ("runway", "fal", "bfl", "openai-videos")


def provider(profile: str) -> Provider:
    module = importlib.import_module(f"service.devtools.providers.{profile.replace('-', '_')}")
    dialect: Provider = module.PROVIDER
    return dialect


def reader(profile: str) -> Reader:
    return Reader.of(profiles.builtin(profile))


def view(phase: Phase) -> View:
    """A job in `phase`: 2nd in the queue, or a quarter through processing, or ended."""
    return View(
        job_id="job-1", phase=phase, created_at=1_767_225_600.0,
        queue_position=2 if phase == "queued" else None,
        progress=0.25 if phase == "processing" else None,
        eta_s=3.0 if phase == "processing" else None,
        output_urls=URLS if phase == "succeeded" else (),
        error=ERROR if phase == "failed" else None,
    )  # fmt: skip


def read(profile: str, status: int, body: dict[str, Any]) -> Observation:
    return answers.read_answer(status, {}, orjson.dumps(body), reader=reader(profile))


def reading(seen: Observation) -> dict[str, Any]:
    return {
        "kind": seen.kind, "job_status": seen.job_status, "queue_position": seen.queue_position,
        "progress": seen.progress, "outputs": seen.outputs, "message": seen.message,
    }  # fmt: skip


def expect(kind: str, job_status: str, **found: Any) -> dict[str, Any]:
    nothing = {"queue_position": None, "progress": None, "outputs": None, "message": None}
    return {"kind": kind, "job_status": job_status, **nothing, **found}


@pytest.mark.parametrize(
    ("profile", "phase", "expected"),
    [
        # Runway: no queue position; progress a fraction; output URLs; `failure`.
        ("runway", "queued", expect("progress", "queued")),
        ("runway", "processing", expect("progress", "processing", progress=0.25)),
        ("runway", "succeeded", expect("terminal", "succeeded", outputs=URLS)),
        ("runway", "failed", expect("terminal", "failed", message=ERROR)),
        # fal: the requests ahead; COMPLETED either way, the result request tells the rest.
        ("fal", "queued", expect("progress", "queued", queue_position=1)),
        ("fal", "processing", expect("progress", "processing")),
        ("fal", "succeeded", expect("terminal", "succeeded")),
        ("fal", "failed", expect("terminal", "succeeded")),
        # BFL: Pending while queued or generating; one sample URL; `error`.
        ("bfl", "queued", expect("progress", "processing")),
        ("bfl", "processing", expect("progress", "processing")),
        ("bfl", "succeeded", expect("terminal", "succeeded", outputs=URLS[:1])),
        ("bfl", "failed", expect("terminal", "failed", message=ERROR)),
        # OpenAI videos: progress in percent; no output URL (the video is content); error.message.
        ("openai-videos", "queued", expect("progress", "queued", progress=0.0)),
        ("openai-videos", "processing", expect("progress", "processing", progress=0.25)),
        ("openai-videos", "succeeded", expect("terminal", "succeeded")),
        ("openai-videos", "failed", expect("terminal", "failed", message=ERROR)),
    ],
)
def test_a_status_answer_is_read(profile: str, phase: Phase, expected: dict[str, Any]) -> None:
    """Each phase of a job, as the dialect answers it (fal's with a 202 until it completes),
    reads as the same phase."""
    assert reading(read(profile, *provider(profile).answer(view(phase)))) == expected


@pytest.mark.parametrize("profile", PROFILES)
def test_an_unknown_job_reads_as_not_found(profile: str) -> None:
    """The dialect's answer to an unknown job (BFL's is a 200) refuses it as not_found."""
    status, body = provider(profile).not_found("job-x")
    seen = read(profile, status, body)
    assert (seen.kind, seen.error_code) == ("refused", "not_found")


@pytest.mark.parametrize("profile", PROFILES)
def test_a_refused_key_reads_as_unauthorized_with_the_apis_words(profile: str) -> None:
    """The dialect's refusal of a key ends the job unauthorized, quoting the API's message."""
    status, body = provider(profile).unauthorized
    seen = read(profile, status, body)
    assert (seen.kind, seen.error_code) == ("refused", "unauthorized")
    assert seen.error is not None
    assert seen.error.startswith(f"the upstream refused the API key ({status}): ")


def read_fal_result(failed: View) -> Observation:
    """fal's result request's answer for a request seen `failed`, read by the fal profile."""
    fal, ended = provider("fal"), Observation("terminal", job_status="succeeded")
    assert fal.result_error is not None
    refusal = fal.result_error(failed)
    assert refusal is not None
    status, body = refusal
    return answers.read_result(
        status, {}, orjson.dumps(body), answers.NO_SECRETS, reader("fal"), ended
    )


def test_fals_result_gives_the_outputs_or_the_models_error() -> None:
    """fal's result request: the output URLs of a succeeded request, the model's message of a
    failed one (a 422)."""
    fal, ended = provider("fal"), Observation("terminal", job_status="succeeded")
    assert fal.render_result is not None
    ok = orjson.dumps(fal.render_result(view("succeeded")))
    seen = answers.read_result(200, {}, ok, answers.NO_SECRETS, reader("fal"), ended)
    assert (seen.job_status, seen.outputs) == ("succeeded", URLS)
    seen = read_fal_result(view("failed"))
    assert (seen.job_status, seen.message) == ("failed", ERROR)


@pytest.mark.parametrize("error_type", sorted(fal_dialect.REQUEST_ERRORS))
def test_fals_request_errors_fail_the_job_with_their_detail(error_type: str) -> None:
    """Each documented request error (a 504 timeout, a 503 lost runner, ...) answered by the
    result request ends the job failed at once, with its `detail`; one of the bad_request
    status is refused as malformed, as the status request's would be."""
    seen = read_fal_result(dataclasses.replace(view("failed"), error=error_type))
    status, detail = fal_dialect.REQUEST_ERRORS[error_type]
    if status == 400:
        assert (seen.kind, seen.error_code) == ("refused", "bad_request")
    else:
        assert (seen.kind, seen.job_status, seen.message) == ("terminal", "failed", detail)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_fal_5xx_that_names_no_request_error_is_asked_again(status: int) -> None:
    """A 5xx of fal's queue service itself (a `detail` but no `error_type`) says nothing of the
    request, which may well have succeeded: transient, so the result is asked for again."""
    ended = Observation("terminal", job_status="succeeded")
    body = orjson.dumps({"detail": "Internal Server Error"})
    seen = answers.read_result(status, {}, body, answers.NO_SECRETS, reader("fal"), ended)
    assert seen.kind == "transient"


@pytest.mark.parametrize(
    ("profile", "answer", "expected"),
    [
        # Runway's documented examples of a throttled and a cancelled task.
        ("runway", {"id": "t", "status": "THROTTLED", "createdAt": "2024-06-27T19:49:32.335Z"},
         expect("progress", "queued")),
        ("runway", {"id": "t", "status": "CANCELLED", "createdAt": "2024-06-27T19:49:32.335Z"},
         expect("terminal", "failed")),
        # BFL's moderation: the status words are the only message.
        ("bfl", {"id": "b", "status": "Content Moderated", "result": None},
         expect("terminal", "failed", message="Content Moderated")),
        ("bfl", {"id": "b", "status": "Request Moderated", "result": None},
         expect("terminal", "failed", message="Request Moderated")),
    ],
)  # fmt: skip
def test_status_words_the_simulator_never_answers(
    profile: str, answer: dict[str, Any], expected: dict[str, Any]
) -> None:
    """The documented words no simulated job reaches read as the reference says."""
    assert reading(read(profile, 200, answer)) == expected
