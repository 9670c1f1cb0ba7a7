"""The bridge's HTTP transports, against a real loopback server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import httpx
import pytest
from aiohttp import web

from service.http_clients import transport
from service.upstream import UpstreamClient
from tests.loopback import loopback_server


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[str | None]]]:
    """A server that sets a cookie on .../set, redirects .../moved, and records the Cookie
    header of every request."""
    seen: list[str | None] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        if request.path.endswith("/moved"):
            raise web.HTTPFound("/elsewhere")
        response = web.Response(text="{}", content_type="application/json")
        if request.path.endswith("/set"):
            response.set_cookie("session", "receiver-a-secret")
        return response

    async with loopback_server(handle) as base:
        yield base, seen


async def test_cookies_never_carry_over_between_requests(
    server: tuple[str, list[str | None]],
) -> None:
    """A cookie one receiver sets is not sent with the next request (another watch's webhook)."""
    base, seen = server
    async with transport(aiohttp.TCPConnector()) as http:
        for path in ("set", "next"):
            request = httpx.Request("POST", f"{base}/{path}", content=b"{}")
            answer = await http.handle_async_request(request)
            await answer.aread()
            if path == "set":
                assert "receiver-a-secret" in answer.headers["set-cookie"]
    assert seen == [None, None]


async def test_upstream_polls_carry_no_cookie_and_follow_no_redirect(
    server: tuple[str, list[str | None]],
) -> None:
    """The upstream client, built as bridge.py builds it, sends no cookie the upstream set, and
    reads a redirect as the answer it is instead of following it."""
    base, seen = server
    async with transport(aiohttp.TCPConnector()) as http:
        upstream = UpstreamClient(http, base, timeout_s=5)
        await upstream.fetch("set", "bw_key")  # answers with a Set-Cookie
        await upstream.fetch("next", "bw_key")
        moved = await upstream.fetch("moved", "bw_key")
    assert seen == [None, None, None]  # and no request to /elsewhere
    assert (moved.kind, moved.error) == ("transient", "upstream answered HTTP 302")
