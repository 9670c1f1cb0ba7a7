"""Real HTTP servers on a loopback port, for tests of the bridge's HTTP clients and of the
development tools."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from aiohttp import web
from starlette.types import ASGIApp

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def eventually(predicate: Callable[[], bool], what: str, within_s: float = 10.0) -> None:
    """Until `predicate()` is true; fail at the deadline (no fixed sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    # Polled: what it watches (a server's count, the bridge's) signals nothing when it changes.
    while not predicate():
        assert loop.time() < deadline, f"not within {within_s:g} s: {what}"
        await asyncio.sleep(0.005)


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


@contextlib.asynccontextmanager
async def asgi_server(app: ASGIApp) -> AsyncIterator[str]:
    """`app` served by uvicorn in this event loop, on 127.0.0.1 and a free port; its base URL."""
    server = uvicorn.Server(
        uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
    )
    sock = socket.create_server(("127.0.0.1", 0))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@contextlib.contextmanager
def serving_bridge(environ: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`webhook-bridge serve` with exactly `environ`, in `log`'s folder, its output in `log`;
    stopped (SIGTERM) on the way out."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "serve"],
            cwd=log.parent,
            env=environ,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            process.terminate()
            process.wait(timeout=20)
