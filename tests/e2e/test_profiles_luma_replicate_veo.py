"""The built-in profiles luma, replicate and google-veo end to end: a bridge with one upstream of
each, declared in its config file, polls a simulator speaking the three dialects
(`fake-upstream --profile luma --profile replicate --profile google-veo`, each under /NAME).

For each: a job that succeeds delivers its outputs, one that fails delivers the API's own error
text, an id the API does not know ends `not_found`, and a wrong key ends `unauthorized`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e import harness
from tests.e2e.harness import API_KEY, Bridge, Receiver, Upstream, unique

URLS = ["https://cdn.example.com/out/a.mp4", "https://cdn.example.com/out/b.mp4"]


@dataclass(frozen=True)
class Case:
    """One profile under test: its upstream's name in the bridge, where the simulator serves
    its dialect beyond the prefix, what its answer says of a success, and the outputs the
    envelope carries."""

    upstream: str
    profile: str
    base_path: str
    succeeded: dict[str, Any]
    outputs: list[str]


CASES = [
    # A Luma generation is one video: the job's first URL.
    Case("luma", "luma", "", {"state": "completed"}, URLS[:1]),
    Case("replicate", "replicate", "", {"status": "succeeded"}, URLS),
    # The fixed part of a Veo operation's name, in the base URL; the job id is its last segment.
    Case("veo", "google-veo", "/v1beta/models/veo-3.1-generate-preview", {"done": True}, URLS),
]


@pytest.fixture(scope="module")
def dialects(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    """One simulator serving the three dialects, each under /<profile>."""
    directory = tmp_path_factory.mktemp("dialects")
    options = [option for case in CASES for option in ("--profile", case.profile)]
    with harness.running_upstream("dialects", directory, *options) as started:
        yield started


@pytest.fixture(scope="module")
def profiled(
    tmp_path_factory: pytest.TempPathFactory, dialects: Upstream, receiver: Receiver
) -> Iterator[Bridge]:
    """A bridge whose config file declares an upstream of each profile on the simulator."""
    directory = tmp_path_factory.mktemp("bridge_profiles")
    config = directory / "bridge.toml"
    config.write_text(
        "".join(
            f'[upstreams.{case.upstream}]\nbase_url = "{dialects.url}/{case.profile}'
            f'{case.base_path}"\nprofile = "{case.profile}"\napi_key = "{API_KEY}"\n\n'
            for case in CASES
        )
    )
    started = harness.launch_bridge(
        "bridge_profiles", directory, dialects.url, directory / "bridge.db",
        BRIDGE_CONFIG=str(config),
    )  # fmt: skip
    try:
        yield started
    finally:
        harness.close_bridge(started)


def simulate(dialects: Upstream, case: Case, **spec: Any) -> str:
    """A job of the simulator's `case.profile` dialect that ends after a short processing."""
    body = {"id": unique("job"), "queue_positions": 1, "seconds_per_position": 0.3}
    response = dialects.client.post(
        f"/{case.profile}/_sim/jobs", json={**body, "processing_s": 0.3, **spec}
    )
    assert response.status_code == 200, response.text
    job_id: str = response.json()["id"]
    return job_id


@pytest.mark.e2e
@pytest.mark.parametrize("case", CASES, ids=[case.profile for case in CASES])
def test_a_profile_succeeds_fails_and_refuses_end_to_end(
    case: Case, profiled: Bridge, dialects: Upstream, receiver: Receiver
) -> None:
    """Success with the outputs, failure with the API's words, not found and a wrong key."""
    error = f"{case.profile} could not render this prompt"
    jobs = {
        "succeeded": {"job_id": simulate(dialects, case, image_urls=URLS)},
        "failed": {"job_id": simulate(dialects, case, outcome="failed", error=error)},
        "not_found": {"job_id": unique("unknown")},
        "unauthorized": {
            "job_id": simulate(dialects, case, image_urls=URLS),
            "upstream_api_key": "wrong_key_of_the_tenant",
        },
    }
    watches, paths = {}, {}
    for outcome, fields in jobs.items():
        paths[outcome] = unique(f"{case.upstream}_{outcome}")
        watches[outcome] = profiled.register(
            callback_url=receiver.callback(paths[outcome]), upstream=case.upstream, **fields
        )
    bodies = {}
    for outcome, watch in watches.items():
        assert watch["upstream"] == case.upstream
        profiled.wait_for_status(watch["id"], "delivered")
        [hook] = receiver.hooks(paths[outcome])
        bodies[outcome] = hook.verify(watch["secret"])
        assert bodies[outcome]["upstream"] == case.upstream
        assert bodies[outcome]["job_id"] == jobs[outcome]["job_id"]

    succeeded = bodies["succeeded"]
    assert (succeeded["type"], succeeded["image_urls"]) == ("job.succeeded", case.outputs)
    assert case.succeeded.items() <= succeeded["data"].items()  # the API's answer, verbatim

    failed = bodies["failed"]
    assert (failed["type"], failed["error_code"], failed["error"]) == (
        "job.failed", "generation_failed", error,
    )  # fmt: skip
    assert failed["image_urls"] is None

    for code in ("not_found", "unauthorized"):
        assert (bodies[code]["type"], bodies[code]["error_code"]) == ("job.failed", code)
    assert "wrong_key_of_the_tenant" not in str(bodies["unauthorized"])
