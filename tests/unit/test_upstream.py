"""The upstream client: requests, and one shared request per job and key."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from service.upstream import UpstreamClient, read_answer


def test_queue_position_must_be_an_integer() -> None:
    """A queue_position that is not an integer is ignored rather than trusted."""
    seen = read_answer(200, {}, b'{"status": "queued", "queue_position": "3"}')
    assert (seen.kind, seen.queue_position) == ("progress", None)
    seen = read_answer(200, {}, b'{"status": "queued", "queue_position": true}')
    assert seen.queue_position is None


def test_refusal_keeps_the_upstream_message() -> None:
    """A 401 becomes `unauthorized` and quotes the upstream's own words."""
    seen = read_answer(401, {}, b'{"error": "Invalid or missing API key"}')
    assert (seen.kind, seen.error_code) == ("refused", "unauthorized")
    assert seen.error is not None
    assert seen.error.endswith("Invalid or missing API key")


async def test_sends_the_key_and_quotes_the_job_id() -> None:
    """The GET goes to /api/v1/generate/{id} with the Bearer key."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "j", "status": "processing"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        upstream = UpstreamClient(client, "https://up.example/", timeout_s=5)
        observation = await upstream.fetch("job:1", "bw_key")
    assert observation.kind == "progress"
    assert str(seen[0].url) == "https://up.example/api/v1/generate/job%3A1"
    assert seen[0].headers["authorization"] == "Bearer bw_key"


async def test_concurrent_fetches_of_one_job_share_a_request() -> None:
    """Several watches of the same job and key cost one upstream request."""
    calls = 0
    release = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        await release.wait()
        return httpx.Response(200, json={"id": "j", "status": "queued", "queue_position": 2})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        upstream = UpstreamClient(client, "https://up.example", timeout_s=5)
        tasks = [asyncio.create_task(upstream.fetch("job_1", "bw_key")) for _ in range(5)]
        other_key = asyncio.create_task(upstream.fetch("job_1", "bw_other"))
        await asyncio.sleep(0)
        release.set()
        results = await asyncio.gather(*tasks, other_key)
    assert calls == 2  # one for bw_key, one for bw_other
    assert all(r.queue_position == 2 for r in results)


@pytest.mark.parametrize(
    "failure",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("eof")],
)
async def test_network_failures_are_transient(failure: Exception) -> None:
    """A request that gets no answer is a transient failure with a readable error."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise failure

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        observation = await UpstreamClient(client, "https://up.example", 5).fetch("j", None)
    assert observation.kind == "transient"
    assert observation.error is not None
    assert observation.error.startswith("upstream")
