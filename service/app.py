"""The Starlette application: routes, error handling, and the lifespan that runs the bridge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypedDict

import orjson
import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api import handlers, openapi
from service.api.problems import from_error, problem
from service.bridge import Bridge
from service.clock import Clock
from service.config import Settings
from service.errors import ApiError
from service.ids import new_id

log = structlog.get_logger("service.app")


class State(TypedDict):
    bridge: Bridge


class RequestContext:
    """Binds a request id, the method and the path to every log line of one request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            structlog.contextvars.clear_contextvars()
            structlog.contextvars.bind_contextvars(
                request_id=new_id("req"), method=scope["method"], path=scope["path"]
            )
        await self.app(scope, receive, send)


async def _api_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    return from_error(error)


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    detail = {404: f"no route {request.url.path}", 405: f"{request.method} is not allowed here"}
    text = detail.get(error.status_code, str(error.detail))
    return problem(error.status_code, f"http-{error.status_code}", str(error.detail), text)


async def _crash(request: Request, error: Exception) -> Response:
    log.exception("api.crashed", path=request.url.path)
    return problem(500, "internal", "Internal error", "the bridge failed; see its logs")


def create_app(settings: Settings, clock: Clock | None = None) -> Starlette:
    spec = orjson.dumps(openapi.spec())

    async def openapi_json(request: Request) -> Response:
        return Response(spec, media_type="application/json")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        bridge = Bridge.build(settings, clock)
        await bridge.start()
        try:
            yield {"bridge": bridge}
        finally:
            await bridge.stop()

    routes = [
        Route("/v1/watches", handlers.create_watch, methods=["POST"]),
        Route("/v1/watches", handlers.list_watches, methods=["GET"]),
        Route("/v1/watches/{watch_id}", handlers.get_watch, methods=["GET"]),
        Route("/v1/watches/{watch_id}", handlers.cancel_watch, methods=["DELETE"]),
        Route("/v1/watches/{watch_id}/deliveries", handlers.list_deliveries, methods=["GET"]),
        Route("/v1/watches/{watch_id}/redeliver", handlers.redeliver, methods=["POST"]),
        Route("/v1/me", handlers.me, methods=["GET"]),
        Route("/livez", handlers.livez, methods=["GET"]),
        Route("/readyz", handlers.readyz, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(RequestContext)],
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            Exception: _crash,
        },
    )
