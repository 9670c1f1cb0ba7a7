"""The floor of the registration benchmark: the bridge's stack with none of the bridge in it.

    .venv/bin/python bench/floor.py --upstream URL --api-key KEY --port PORT

One `POST /v1/watches` route served as the bridge serves its API (uvicorn on uvloop with the
bridge's own protocol and bounds, `http_server.uvicorn_options`, one process, no access log) in
a Starlette app with one pure ASGI middleware, as the bridge's. It reads the body as JSON,
answers 201 with a small JSON body, and then, as the bridge does after a registration, GETs
the job from the upstream once with the bridge's own request (`loops.bridge_request_client`).
No validation, no store, no logging, no scheduling: what a registration costs before the bridge
does anything of its own, so `registrations.py` can say how much of the machine's rate the
bridge keeps. `registrations.py --phases f` starts it.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
import uvicorn
import uvloop
from loops import Client, bridge_request_client
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from service import gc_tuning, http_server
from service.config import ServerSettings

CONCURRENCY = 64  # the bridge's default upstream.max_concurrency


class PassThrough:
    """A pure ASGI middleware, as the bridge's request context is: the cost of one layer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def create_app(upstream: str, api_key: str) -> Starlette:
    tasks: set[asyncio.Task[None]] = set()
    clients: list[Client] = []  # made in the lifespan: aiohttp wants the running loop

    async def first_poll(job_id: str) -> None:
        await clients[0].get(job_id)

    async def register(request: Request) -> Response:
        data = orjson.loads(await request.body())
        job_id = str(data["job_id"])
        # The first poll, after the answer is built, as the bridge's poller makes it.
        task = asyncio.create_task(first_poll(job_id))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return Response(orjson.dumps({"job_id": job_id}), 201, media_type="application/json")

    async def ready(request: Request) -> Response:
        return Response(b"ok")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        clients.append(bridge_request_client(upstream, api_key, CONCURRENCY))
        try:
            yield
        finally:
            await clients[0].close()

    return Starlette(
        routes=[Route("/v1/watches", register, methods=["POST"]), Route("/readyz", ready)],
        middleware=[Middleware(PassThrough)],
        lifespan=lifespan,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="the simulator's base URL")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    config = uvicorn.Config(
        create_app(args.upstream, args.api_key),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        **http_server.uvicorn_options(ServerSettings()),
    )
    gc_tuning.tune()  # as `webhook-bridge serve` does
    uvloop.run(uvicorn.Server(config).serve())


if __name__ == "__main__":
    main()
