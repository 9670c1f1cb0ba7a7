"""A real HTTP server on a loopback port, for tests of the bridge's HTTP clients."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def loopback_server(handle: Handler, **app_options: Any) -> AsyncIterator[str]:
    """An aiohttp server on 127.0.0.1 and a free port answering every method and path with
    `handle`; its base URL (`http://127.0.0.1:PORT`)."""
    app = web.Application(**app_options)
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
