"""The bridge's HTTP clients, against a real loopback server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from service.bridge import _http_client, _session


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[str | None]]]:
    """A server that sets a cookie on /set and records the Cookie header of every request."""
    seen: list[str | None] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        response = web.Response(text="{}", content_type="application/json")
        if request.path == "/set":
            response.set_cookie("session", "receiver-a-secret")
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def test_cookies_never_carry_over_between_requests(
    server: tuple[str, list[str | None]],
) -> None:
    """A cookie one receiver sets is not sent with the next request (another watch's webhook)."""
    base, seen = server
    async with _http_client(_session(aiohttp.TCPConnector()), timeout_s=5) as client:
        first = await client.post(f"{base}/set", content=b"{}")
        assert "receiver-a-secret" in first.headers["set-cookie"]
        await client.post(f"{base}/next", content=b"{}")
    assert seen == [None, None]
