"""The Starlette application: routes, error handling, and the lifespan that runs the bridge and
hands its services to the handlers (`service.api.state.State`)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
import structlog
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api import handlers, openapi
from service.api.guard import RequestGuard
from service.api.handlers import route
from service.api.problems import from_error, problem, store_unavailable
from service.api.state import State
from service.bridge import Bridge
from service.clock import Clock, SystemClock
from service.config import Settings
from service.errors import ApiError, StoreUnavailable
from service.ids import new_id
from service.ui.routes import create_ui_app

log = structlog.get_logger("service.app")


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class RequestContext:
    """Binds a request id, the method and the path to every log line of one request. A
    caller's `X-Request-ID` is kept when it is a plain token, else one is made; either way it
    is echoed in the answer's `X-Request-ID`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _request_id_header(scope)
        request_id = given if _REQUEST_ID.match(given) else new_id("req")
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            request_id=request_id, method=scope["method"], path=scope["path"]
        )

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)


def _request_id_header(scope: Scope) -> str:
    # The raw list, not a Headers mapping: this runs for every request.
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            return str(value.decode("latin-1"))
    return ""


async def _api_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    return from_error(error)


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    detail = {404: f"no route {request.url.path}", 405: f"{request.method} is not allowed here"}
    text = detail.get(error.status_code, str(error.detail))
    # Keep the exception's headers: a 405 must say what is allowed (`Allow`).
    return problem(
        error.status_code,
        f"http-{error.status_code}",
        str(error.detail),
        text,
        headers=dict(error.headers or {}),
    )


async def _store_unavailable(request: Request, error: Exception) -> Response:
    # No log line here: the store's health logged the outage once, with the reason.
    return store_unavailable()


async def _crash(request: Request, error: Exception) -> Response:
    log.exception("api.crashed", path=request.url.path)
    return problem(500, "internal", "Internal error", "the bridge failed; see its logs")


# How the API and the health port both answer errors.
_ERROR_HANDLERS = {
    HTTPException: _http_error,
    StoreUnavailable: _store_unavailable,
    Exception: _crash,
}


def services(bridge: Bridge) -> State:
    """What the handlers of `bridge` use: its services, by name."""
    return State(
        access=bridge.access,
        watches=bridge.watches,
        redelivery=bridge.redelivery,
        generation=bridge.generation,
        subscriptions=bridge.subscriptions,
        feed=bridge.feed,
        streams=bridge.streams,
        monitor=bridge.monitor,
        sign_outs=bridge.sign_outs,
    )


def create_app(settings: Settings, clock: Clock | None = None) -> Starlette:
    spec = orjson.dumps(openapi.spec(settings))
    clock = clock or SystemClock()

    async def openapi_json(request: Request[State]) -> Response:
        return Response(spec, media_type="application/json")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        bridge = Bridge.build(settings, clock)
        await bridge.start()
        # The running bridge, for the health port's app and for SIGTERM (`drain`).
        app.state.bridge = bridge
        try:
            yield services(bridge)
        finally:
            await bridge.stop()

    routes: list[BaseRoute] = [
        route("/v1/watches", POST=handlers.create_watch, GET=handlers.list_watches),
        route("/v1/generate", POST=handlers.generate),
        route("/v1/watches/failed/redeliver", POST=handlers.recover),
        route("/v1/watches/{watch_id}", GET=handlers.get_watch, DELETE=handlers.cancel_watch),
        route("/v1/watches/{watch_id}/deliveries", GET=handlers.list_deliveries),
        route("/v1/watches/{watch_id}/redeliver", POST=handlers.redeliver),
        route("/v1/watches/{watch_id}/deliveries/{webhook_id}/retry", POST=handlers.retry_delivery),
        route("/v1/watches/{watch_id}/wait", GET=handlers.wait_for_watch),
        route("/v1/watches/{watch_id}/events", GET=handlers.stream_events),
        route("/v1/events", GET=handlers.list_events),
        route(
            "/v1/subscriptions", POST=handlers.create_subscription, GET=handlers.list_subscriptions
        ),
        route("/v1/subscriptions/{subscription_id}", DELETE=handlers.delete_subscription),
        route("/v1/subscriptions/{subscription_id}/enable", POST=handlers.enable_subscription),
        route("/v1/subscriptions/{subscription_id}/disable", POST=handlers.disable_subscription),
        route(
            "/v1/subscriptions/{subscription_id}/secret/rotate",
            POST=handlers.rotate_subscription_secret,
        ),
        route("/v1/subscriptions/{subscription_id}/test", POST=handlers.test_subscription),
        route("/v1/me", GET=handlers.me),
        route("/livez", GET=handlers.livez),
        route("/readyz", GET=handlers.readyz),
        # Metrics count every tenant's work: with tokens, only the health port serves them.
        route(
            "/metrics",
            GET=handlers.metrics_elsewhere if settings.auth.tokens else handlers.metrics,
        ),
        route("/openapi.json", GET=openapi_json),
    ]
    if settings.ui.enabled:
        # `/ui` itself is redirected to `/ui/` by the router.
        routes.append(Mount("/ui", app=create_ui_app(settings, clock)))
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(RequestContext), Middleware(RequestGuard, settings=settings)],
        exception_handlers={
            ApiError: _api_error,
            ClientDisconnect: handlers.client_gone,
            **_ERROR_HANDLERS,
        },
    )


def drain(api: Starlette) -> None:
    """Begin the shutdown of the bridge that `api` runs, if it has started (`Bridge.drain`)."""
    bridge: Bridge | None = getattr(api.state, "bridge", None)
    if bridge is not None:
        bridge.drain()


def create_health_app(api: Starlette) -> ASGIApp:
    """`/livez`, `/readyz` and `/metrics` of the bridge that `api` runs, for a port of their
    own: a sidecar's API listens on localhost, where the kubelet's probes cannot reach."""
    health = Starlette(
        routes=[
            route("/livez", GET=handlers.livez),
            route("/readyz", GET=handlers.readyz),
            route("/metrics", GET=handlers.metrics),
        ],
        exception_handlers=_ERROR_HANDLERS,
    )

    async def with_services(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            bridge: Bridge | None = getattr(api.state, "bridge", None)
            if bridge is None:
                unready = problem(503, "starting", "Starting", "the bridge has not started yet")
                await unready(scope, receive, send)
                return
            scope["state"] = dict(services(bridge))
        await health(scope, receive, send)

    return with_services
