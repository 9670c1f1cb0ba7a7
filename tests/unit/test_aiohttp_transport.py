"""The bridge's httpx transport over aiohttp (`http_clients.transport`), against a real server
on a loopback port."""

from __future__ import annotations

import gzip
import socket

import aiohttp
import httpx
import pytest
from aiohttp import web

from service.http_clients import transport
from service.upstream import UpstreamClient
from tests.loopback import loopback_server


def _transport() -> httpx.AsyncBaseTransport:
    return transport(aiohttp.TCPConnector())


async def _send(http: httpx.AsyncBaseTransport, request: httpx.Request) -> httpx.Response:
    """`request`'s answer, read whole."""
    response = await http.handle_async_request(request)
    await response.aread()
    return response


async def test_a_post_arrives_whole_and_its_answer_is_read() -> None:
    """Method, path, query, headers and body reach the server; status, reason, headers and
    body come back."""
    seen: list[tuple[str, str, str, bytes]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(
            (request.method, request.path_qs, request.headers["X-Sig"], await request.read())
        )
        return web.Response(status=202, reason="Taken", body=b"ok", headers={"X-Answer": "1"})

    async with loopback_server(handle) as base, _transport() as http:
        request = httpx.Request(
            "POST", f"{base}/hooks/a?b=1", content=b'{"x":1}', headers={"X-Sig": "s"}
        )
        response = await _send(http, request)
    assert seen == [("POST", "/hooks/a?b=1", "s", b'{"x":1}')]
    assert (response.status_code, response.reason_phrase) == (202, "Taken")
    assert (response.headers["x-answer"], response.content) == ("1", b"ok")


async def test_redirects_are_answers_not_followed() -> None:
    """A 302 is returned as such: the bridge never follows a receiver elsewhere."""
    paths: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        paths.append(request.path)
        return web.Response(status=302, headers={"Location": "/elsewhere"})

    async with loopback_server(handle) as base, _transport() as http:
        response = await _send(http, httpx.Request("POST", f"{base}/hook", content=b"{}"))
    assert (response.status_code, paths) == (302, ["/hook"])


async def test_a_compressed_status_is_decoded_and_a_plain_one_read_as_is() -> None:
    """The upstream may gzip its answers: the poll reads the decoded JSON either way."""
    body = b'{"id": "j", "status": "queued", "queue_position": 7}'

    async def handle(request: web.Request) -> web.Response:
        if request.match_info["tail"].endswith("zipped"):
            return web.Response(body=gzip.compress(body), headers={"Content-Encoding": "gzip"})
        return web.Response(body=body)

    async with loopback_server(handle) as base, _transport() as http:
        upstream = UpstreamClient(http, base, timeout_s=5)
        zipped, plain = await upstream.fetch("zipped", None), await upstream.fetch("plain", None)
    assert (zipped.kind, zipped.queue_position) == ("progress", 7)
    assert (plain.kind, plain.queue_position) == ("progress", 7)


@pytest.mark.parametrize("compressed", [False, True])
async def test_a_streamed_status_past_the_cap_is_not_read(compressed: bool) -> None:
    """With no length announced, the body is cut one chunk past the cap, decoded or not."""
    body = b'{"status": "queued", "pad": "' + b"x" * 5000 + b'"}'

    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        if compressed:
            response.headers["Content-Encoding"] = "gzip"
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(gzip.compress(body) if compressed else body)
        await response.write_eof()
        return response

    async with loopback_server(handle) as base, _transport() as http:
        seen = await UpstreamClient(http, base, 5, max_body_bytes=1000).fetch("j", None)
    assert (seen.kind, seen.error) == (
        "transient",
        "upstream answered more than 1000 bytes (HTTP 200); the rest was not read",
    )


async def test_no_listener_is_a_transport_error_with_its_cause() -> None:
    """A refused connection is an httpx.TransportError whose cause is aiohttp's error."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with _transport() as http:
        with pytest.raises(httpx.TransportError) as caught:
            await http.handle_async_request(httpx.Request("GET", f"http://127.0.0.1:{port}/"))
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectorError)


async def test_closing_the_transport_closes_its_connections() -> None:
    """The transport owns the aiohttp session and connector it was built on."""
    connector = aiohttp.TCPConnector()
    await transport(connector).aclose()
    assert connector.closed
