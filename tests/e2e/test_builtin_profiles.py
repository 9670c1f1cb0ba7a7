"""The built-in profiles runway, fal, bfl, openai-videos, luma, replicate and google-veo end to
end: a bridge with one upstream per profile polls one simulator process that speaks their
dialects (`fake-upstream --profile runway --profile fal ...`, each under /<name>), and delivers
to the receiver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import harness
from tests.e2e.harness import API_KEY, Bridge, Receiver, Upstream, unique

# Upstream name -> its built-in profile (an upstream's name need not be its profile's).
UPSTREAMS = {
    "runway": "runway", "fal": "fal", "bfl": "bfl", "openai": "openai-videos", "luma": "luma",
    "replicate": "replicate", "veo": "google-veo",
}  # fmt: skip
# Where an API's paths start beyond the simulator's prefix: the fixed part of a Veo operation's
# name (its job id is the name's last segment).
BASE_PATHS = {"veo": "/v1beta/models/veo-3.1-generate-preview"}
# A short job: one position of 0.3 s in the queue, then 0.6 s of processing.
TIMELINE = {"queue_positions": 1, "seconds_per_position": 0.3, "processing_s": 0.6}


@pytest.fixture(scope="module")
def dialects(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    """One simulator serving every dialect under test, each under /<profile>."""
    options = [option for profile in UPSTREAMS.values() for option in ("--profile", profile)]
    directory = tmp_path_factory.mktemp("dialects")
    with harness.running_upstream("dialects", directory, *options) as started:
        yield started


@pytest.fixture(scope="module")
def bridge(
    tmp_path_factory: pytest.TempPathFactory, dialects: Upstream, receiver: Receiver
) -> Iterator[Bridge]:
    """A bridge with an upstream per built-in profile, at that profile's prefix, declared in
    its configuration file as an operator would."""
    directory: Path = tmp_path_factory.mktemp("profiles-bridge")
    tables = [
        f'[upstreams.{name}]\nbase_url = "{dialects.url}/{profile}{BASE_PATHS.get(name, "")}"\n'
        f'api_key = "{API_KEY}"\n'
        f'profile = "{profile}"\nrequest_timeout_s = 1\n'
        for name, profile in UPSTREAMS.items()
    ]
    config = directory / "bridge.toml"
    config.write_text("\n".join(tables))
    started = harness.launch_bridge(
        "profiles-bridge", directory, dialects.url, directory / "bridge.db",
        BRIDGE_CONFIG=str(config),
    )  # fmt: skip
    try:
        yield started
    finally:
        harness.close_bridge(started)


def create_job(sim: Upstream, upstream: str, **spec: Any) -> str:
    """A job on `upstream`'s simulator, with the short timeline unless `spec` says otherwise."""
    job_id = unique("job")
    body = {"id": job_id, **TIMELINE, **spec}
    response = sim.client.post(f"/{UPSTREAMS[upstream]}/_sim/jobs", json=body)
    assert response.status_code == 200, response.text
    return job_id


def delivered(bridge: Bridge, receiver: Receiver, upstream: str, job_id: str, **extra: Any) -> Any:
    """Watch `job_id` on `upstream` until its webhook is delivered; the webhook's body."""
    path = unique(upstream)
    watch = bridge.register(
        job_id=job_id, upstream=upstream, callback_url=receiver.callback(path), **extra
    )
    assert watch["upstream"] == upstream
    bridge.wait_for_status(watch["id"], "delivered")
    [hook] = receiver.hooks(path)
    body = hook.verify(watch["secret"])
    assert (body["upstream"], body["job_id"]) == (upstream, job_id)
    return body


def _videos(operation: dict[str, Any]) -> list[str]:
    samples = operation["response"]["generateVideoResponse"]["generatedSamples"]
    return [sample["video"]["uri"] for sample in samples]


def documented_success(upstream: str, data: dict[str, Any], urls: list[str]) -> bool:
    """Whether `data` is `upstream`'s succeeded answer, as its API documents it."""
    if upstream == "runway":
        return bool(data["status"] == "SUCCEEDED" and data["output"] == urls)
    if upstream == "fal":  # the result request's answer
        return [image["url"] for image in data["images"]] == urls
    if upstream == "bfl":
        return bool(data["status"] == "Ready" and data["result"]["sample"] == urls[0])
    if upstream == "luma":
        return bool(data["state"] == "completed" and data["assets"]["video"] == urls[0])
    if upstream == "replicate":
        return bool(data["status"] == "succeeded" and data["output"] == urls)
    if upstream == "veo":
        return data["done"] is True and _videos(data) == urls
    return data["status"] == "completed" and data["error"] is None


def listed(upstream: str, urls: list[str]) -> list[str] | None:
    """The URLs a webhook lists: BFL delivers one image per task and Luma one video per
    generation; OpenAI's video is content at another endpoint, not a URL."""
    return {"bfl": urls[:1], "luma": urls[:1], "openai": None}.get(upstream, urls)


@pytest.mark.e2e
@pytest.mark.parametrize("upstream", list(UPSTREAMS))
def test_a_succeeded_job_delivers_its_outputs(
    bridge: Bridge, dialects: Upstream, receiver: Receiver, upstream: str
) -> None:
    """job.succeeded lists the output URLs the profile reads, with the upstream's answer as
    `data` (fal's from its result request). Runway's polls carry its version header, or the
    simulator would refuse them."""
    urls = ["https://cdn.example.com/out/1.mp4", "https://cdn.example.com/out/2.mp4"]
    job_id = create_job(dialects, upstream, image_urls=urls)
    body = delivered(bridge, receiver, upstream, job_id)
    assert (body["type"], body["error"], body["error_code"]) == ("job.succeeded", None, None)
    assert body["image_urls"] == listed(upstream, urls)
    assert documented_success(upstream, body["data"], urls), body["data"]


@pytest.mark.e2e
@pytest.mark.parametrize("upstream", list(UPSTREAMS))
def test_a_failed_job_delivers_the_apis_own_error(
    bridge: Bridge, dialects: Upstream, receiver: Receiver, upstream: str
) -> None:
    """job.failed carries the error text the API gave (Runway's `failure`, fal's result
    `detail[].msg`, BFL's `error`, OpenAI's `error.message`, Luma's `failure_reason`,
    Replicate's `error`, a Veo operation's `error.message`)."""
    text = f"The {upstream} model refused the prompt ({unique('why')})."
    job_id = create_job(dialects, upstream, outcome="failed", error=text)
    body = delivered(bridge, receiver, upstream, job_id)
    assert body["type"] == "job.failed"
    assert (body["error"], body["error_code"]) == (text, "generation_failed")
    assert body["image_urls"] is None
    assert body["data"] is not None


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("error_type", "detail"),
    [("request_timeout", "Request timed out"),  # answered 504
     ("runner_disconnected", "Runner disconnected during processing")],  # answered 503
)  # fmt: skip
def test_a_fal_request_error_on_the_result_request_fails_the_job_with_fals_words(
    bridge: Bridge, dialects: Upstream, receiver: Receiver, error_type: str, detail: str
) -> None:
    """A fal request that completed with a request error, which its result request answers as
    a 5xx with the error's `detail`, ends job.failed with those words at once (not `timeout`
    once the poll's time is over)."""
    job_id = create_job(dialects, "fal", outcome="failed", error=error_type)
    body = delivered(bridge, receiver, "fal", job_id)
    assert (body["type"], body["error"], body["error_code"]) == (
        "job.failed", detail, "generation_failed"
    )  # fmt: skip
    assert body["data"]["status"] == "COMPLETED"  # the status answer: the result has no body


@pytest.mark.e2e
@pytest.mark.parametrize("upstream", list(UPSTREAMS))
def test_a_job_the_api_does_not_know_fails_not_found(
    bridge: Bridge, receiver: Receiver, upstream: str
) -> None:
    """A job id the API does not know (a 404, or BFL's 200 "Task not found") ends in
    job.failed `not_found` once the grace is over."""
    body = delivered(bridge, receiver, upstream, unique("job_unknown"))
    assert (body["type"], body["error_code"]) == ("job.failed", "not_found")


@pytest.mark.e2e
@pytest.mark.parametrize("upstream", list(UPSTREAMS))
def test_a_wrong_key_fails_unauthorized(
    bridge: Bridge, dialects: Upstream, receiver: Receiver, upstream: str
) -> None:
    """A key the API refuses, sent in the profile's scheme, ends in job.failed `unauthorized`."""
    job_id = create_job(dialects, upstream)
    body = delivered(bridge, receiver, upstream, job_id, upstream_api_key="not-a-valid-key")
    assert (body["type"], body["error_code"]) == ("job.failed", "unauthorized")
    assert "not-a-valid-key" not in str(body)


@pytest.mark.e2e
def test_an_outage_of_one_upstream_leaves_the_others_delivering(
    bridge: Bridge, dialects: Upstream, receiver: Receiver
) -> None:
    """While Runway's simulator answers 503 to everything, fal's and BFL's jobs are delivered;
    Runway's is delivered once its outage ends."""
    dialects.client.post("/runway/_sim/faults", json={"error_rate": 1.0}).raise_for_status()
    try:
        jobs = {name: create_job(dialects, name) for name in ("runway", "fal", "bfl")}
        paths = {name: unique(name) for name in jobs}
        watches = {
            name: bridge.register(
                job_id=job_id, upstream=name, callback_url=receiver.callback(paths[name])
            )
            for name, job_id in jobs.items()
        }
        for name in ("fal", "bfl"):
            bridge.wait_for_status(watches[name]["id"], "delivered")
        assert bridge.watch(watches["runway"]["id"])["status"] not in ("delivered", "failed")
        assert receiver.hooks(paths["runway"]) == []
    finally:
        dialects.client.post("/runway/_sim/faults", json={"error_rate": 0.0}).raise_for_status()
    bridge.wait_for_status(watches["runway"]["id"], "delivered")
    [hook] = receiver.hooks(paths["runway"])
    assert hook.verify(watches["runway"]["secret"])["type"] == "job.succeeded"
