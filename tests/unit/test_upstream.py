"""The upstream client: requests, and one shared request per job and key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

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


async def test_requests_carry_the_clients_headers_and_never_a_cookie() -> None:
    """Each GET has the client's default headers, and a cookie the upstream set, or one in the
    client's jar, is never sent back."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json={"id": "j", "status": "queued"}, headers={"Set-Cookie": "session=up"}
        )

    async with httpx.AsyncClient(
        transport=httpx.MockTransport(handler),
        headers={"User-Agent": "bridge-test"},
        cookies={"jar": "kept"},
    ) as client:
        upstream = UpstreamClient(client, "https://up.example", timeout_s=5)
        await upstream.fetch("job_1", "bw_key")
        await upstream.fetch("job_1", None)
    assert [r.headers.get("user-agent") for r in seen] == ["bridge-test", "bridge-test"]
    assert [r.headers.get("cookie") for r in seen] == [None, None]
    assert "authorization" not in seen[1].headers  # no key, no header


@pytest.mark.parametrize(
    ("size", "error"),
    [
        # Exactly the cap: read, then judged on what it says ("{}" and spaces).
        (10, "upstream answered no status"),
        # One byte past it: not read.
        (11, "upstream answered more than 10 bytes (HTTP 200); the rest was not read"),
    ],
)
@pytest.mark.parametrize("announced", [True, False])
async def test_the_body_cap_is_exact(size: int, error: str, announced: bool) -> None:
    """A body of the cap's size is read; one byte more is a transient failure, whether its
    length was announced or it was streamed in chunks."""
    body = b"{}".ljust(size)

    async def chunks() -> AsyncIterator[bytes]:
        yield body[:4]
        yield body[4:]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body if announced else chunks())

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        upstream = UpstreamClient(client, "https://up.example", 5, max_body_bytes=10)
        seen = await upstream.fetch("j", None)
    assert (seen.kind, seen.error) == ("transient", error)


@pytest.mark.parametrize("status", ["queued", "processing", "succeeded", "failed"])
def test_known_statuses_are_one_string_each(status: str) -> None:
    """Every held watch keeps the last status it saw: a known status is the same string
    object from one answer to the next, not a new one per answer."""
    body = b'{"status": "%s", "output": {}}' % status.encode()
    first, second = read_answer(200, {}, body), read_answer(200, {}, body)
    assert first.job_status == status
    assert first.job_status is second.job_status


@pytest.mark.parametrize(
    ("inner", "kind"),
    [
        (63, "progress"),  # 64 levels in all: the most passed on
        (64, "transient"),  # 65 levels: refused
    ],
)
@pytest.mark.parametrize(("opening", "closing"), [(b'{"a":', b"}"), (b"[", b"]")])
def test_depth_limit_is_exact(inner: int, kind: str, opening: bytes, closing: bytes) -> None:
    """An answer nesting up to 64 levels is read; one level more is refused, for objects and
    lists alike."""
    body = b'{"status": "queued", "x": ' + opening * inner + b"1" + closing * inner + b"}"
    seen = read_answer(200, {}, body)
    assert seen.kind == kind
    if kind == "transient":
        assert seen.error == "upstream answered JSON nested more than 64 levels deep"
