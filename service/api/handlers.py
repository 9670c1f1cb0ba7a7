"""HTTP handlers: parse and validate, call the service layer, serialize. Nothing else, but
`route`, which serves them by method for the API and the dashboard alike."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from service import events
from service.api import models, responses, watch_query
from service.api.problems import invalid_body
from service.api.state import State
from service.auth import Caller
from service.errors import (
    ApiError,
    InvalidRequest,
    NotFound,
    TooLarge,
    UnsupportedMediaType,
)
from service.store.base import EventRecord, WatchFilter
from service.watches import Registered

MAX_BODY_BYTES = 64 * 1024
# Deeper bodies are refused before validation (orjson cannot serialize past 255 levels).
MAX_BODY_DEPTH = 32
MAX_PAGE = 200
DEFAULT_LIMIT = 50  # watches per page, events per list
# What a watch id can look like (service.ids: `wch_` and a base32 suffix). Anything else names
# no watch: it gets its 404 without reaching the store, whose drivers may choke on it (NUL).
WATCH_ID = re.compile("^wch_[0-9A-Za-z]{1,64}$")
SUBSCRIPTION_ID = re.compile("^sub_[0-9A-Za-z]{1,64}$")
EVENT_ID = re.compile("^evt_[0-9A-Za-z]{1,64}$")
WEBHOOK_ID = re.compile("^msg_[0-9A-Za-z]{1,64}$")
MAX_WAIT_S = 60
MAX_EVENTS = 100
# One value of `GET /v1/events?type=`: event types separated by commas, spaces around each
# ignored; an empty one adds none. The parameter may be repeated (`?type=a&type=b`) as well.
_EVENT_NAME = "|".join(re.escape(name) for name in events.ALL_EVENTS)
EVENT_TYPES = re.compile(rf"^(?: *(?:{_EVENT_NAME}) *(?:, *(?:{_EVENT_NAME}) *)*)?$")
# The status of a long-poll whose client went away (nobody reads it; the logs show it).
CLIENT_GONE = 499
# The methods that change nothing: all a viewer token may use.
READ_METHODS = frozenset({"GET", "HEAD"})
# Milliseconds an EventSource waits before reconnecting after the stream ends or breaks.
RECONNECT_MS = 2000
# An event stream's: no caching, and no buffering by a proxy in front (nginx honours
# X-Accel-Buffering).
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
T = TypeVar("T")


Endpoint = Callable[[Request[State]], Awaitable[Response]]


def route(path: str, **endpoints: Endpoint) -> Route:
    """One route for all the methods of `path`, so that a 405 lists every allowed method (with
    one route per method, Starlette's `Allow` would name only the first route's)."""
    if "GET" in endpoints:
        endpoints["HEAD"] = endpoints["GET"]

    async def endpoint(request: Request[State]) -> Response:
        return await endpoints[request.method](request)

    return Route(path, endpoint, methods=list(endpoints))


async def client_gone(request: Request[Any], error: Exception) -> Response:
    """The answer to a request whose client went away before its body was whole (or whose
    connection was closed for taking too long): nobody reads it, and nothing failed."""
    assert isinstance(error, ClientDisconnect)
    return Response(status_code=CLIENT_GONE)


def json_response(answer: responses.Answer, status: int = 200) -> Response:
    return Response(answer.dump(), status, media_type="application/json")


def client_address(request: Request[State]) -> str:
    """The client's address (a trusted proxy's X-Forwarded-For: `server.forwarded_allow_ips`)."""
    return request.client.host if request.client is not None else ""


def _caller(request: Request[State]) -> Caller:
    """The caller; a viewer token's request for a change is refused here (`ReadOnly`), whatever
    the route: every change is a POST or a DELETE, every read a GET or a HEAD."""
    caller = request.state["access"].caller(
        client_address(request),
        request.headers.get("authorization"),
        request.headers.get("x-api-key"),
    )
    if request.method not in READ_METHODS:
        caller.may_change(f"{request.method} {request.url.path}")
    return caller


def _tenant(request: Request[State]) -> str:
    """The caller's tenant; every store call is scoped by it."""
    return _caller(request).tenant


async def me(request: Request[State]) -> Response:
    caller = _caller(request)
    role = "viewer" if caller.read_only else "full"
    shown = responses.Caller(tenant=caller.tenant, authenticated=caller.authenticated, role=role)
    return json_response(shown)


async def _json_body(request: Request[State]) -> Any:
    # A web page can send a cross-site POST without asking first only as text/plain, a form
    # or multipart: a JSON body must say it is one.
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        shown = f"Content-Type {media_type[:80]!r}" if media_type else "no Content-Type"
        raise UnsupportedMediaType(
            f"the body must be JSON sent with Content-Type: application/json (got {shown})"
        )
    too_large = TooLarge(f"the body is larger than {MAX_BODY_BYTES} bytes")
    declared = request.headers.get("content-length", "")
    # ASCII digits only ("²" is a digit to str.isdigit, not to int); too many is too large.
    digits = declared.isascii() and declared.isdigit()
    if digits and (len(declared) > len(str(MAX_BODY_BYTES)) or int(declared) > MAX_BODY_BYTES):
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise too_large
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise ApiError(f"the body is not valid JSON: {error}") from None


# A JSON value that is not an object, named as JSON names it (by the type orjson reads it as).
_JSON_KINDS = {
    list: "an array", str: "a string", int: "a number", float: "a number",
    bool: "true or false", type(None): "null",
}  # fmt: skip


M = TypeVar("M", bound=BaseModel)


async def _body(request: Request[State], model: type[M]) -> M:
    """The body as `model`: a JSON object whose values pass `_check_values`, validated, or the
    422 naming each invalid field."""
    data = await _json_body(request)
    if not isinstance(data, dict):
        raise ApiError(f"the body must be a JSON object, not {_JSON_KINDS[type(data)]}")
    _check_values(data)
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise invalid_body(error) from None


async def _optional_body(request: Request[State], model: type[M]) -> M | None:
    """The body as `_body` reads it, or None when the request has not a byte (whatever its
    Content-Type: no-code tools send one with every request)."""
    headers = request.headers
    if "transfer-encoding" not in headers and headers.get("content-length", "0") == "0":
        return None
    return await _body(request, model)


def _check_values(data: dict[str, Any]) -> None:
    """Refuse a body nested deeper than MAX_BODY_DEPTH (400), and strings with a NUL character
    (422 naming the field): PostgreSQL cannot store them."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        if len(path) > MAX_BODY_DEPTH:
            raise ApiError(f"the body is nested more than {MAX_BODY_DEPTH} levels deep")
        if isinstance(value, dict):
            for key, item in value.items():
                if "\x00" in key:
                    raise _nul((*path, key))
                stack.append((item, (*path, key)))
        elif isinstance(value, list):
            stack.extend((item, (*path, str(index))) for index, item in enumerate(value))
        elif isinstance(value, str) and "\x00" in value:
            raise _nul(path)


def _nul(path: tuple[str, ...]) -> InvalidRequest:
    return InvalidRequest.field(".".join(path), "must not contain NUL (U+0000) characters")


def _idempotency_key(request: Request[State]) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not (1 <= len(key) <= 255 and key.isprintable()):
        raise InvalidRequest(
            "Idempotency-Key must be 1 to 255 printable characters",
            errors=[{"field": "Idempotency-Key", "message": "1 to 255 printable characters"}],
        )
    return key


_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def _traceparent(request: Request[State]) -> str | None:
    """A W3C `traceparent` to carry to the webhooks (an invalid one is ignored, as the spec
    says)."""
    value = request.headers.get("traceparent", "").strip().lower()
    return value if _TRACEPARENT.match(value) else None


async def _registration(request: Request[State], model: type[M]) -> tuple[str, M]:
    """The tenant and the body of a registration, within the tenant's rate."""
    tenant = _tenant(request)
    request.state["access"].registrations.spend(tenant, "registrations")
    return tenant, await _body(request, model)


def _registered(registered: Registered) -> Response:
    """201 with a new registration; 200 with the answer a retried call got the first time."""
    status = 200 if registered.registration is None else 201
    return Response(registered.answer, status, media_type="application/json")


async def create_watch(request: Request[State]) -> Response:
    tenant, body = await _registration(request, models.WatchRequest)
    registered = await request.state["watches"].register(
        tenant, body.job_id, body.options(), _idempotency_key(request), _traceparent(request)
    )
    return _registered(registered)


async def generate(request: Request[State]) -> Response:
    """Start an upstream job and watch it (`service.generate`)."""
    tenant, body = await _registration(request, models.GenerateRequest)
    registered = await request.state["generation"].generate(
        tenant, body.input, body.options(), _idempotency_key(request), _traceparent(request)
    )
    return _registered(registered)


def _query_int(request: Request[State], name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    # ASCII digits only ("²" is a digit to str.isdigit, not to int), and short enough for int().
    digits = raw.isascii() and raw.isdigit() and len(raw) <= len(str(high))
    if not digits or not low <= int(raw) <= high:
        raise InvalidRequest.field(name, f"must be an integer from {low} to {high}")
    return int(raw)


def _watch_filters(query: Mapping[str, str]) -> WatchFilter:
    """The filters of a listing of watches in `query`, or `InvalidRequest` naming each bad
    one."""
    filters, errors = watch_query.parse(query)
    if errors:
        raise InvalidRequest(
            "; ".join(f"{name}: {message}" for name, message in errors.items()),
            errors=[{"field": name, "message": message} for name, message in errors.items()],
        )
    return filters


async def list_watches(request: Request[State]) -> Response:
    tenant = _tenant(request)  # 401 before any other answer
    filters = _watch_filters(request.query_params)
    limit = _query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_PAGE)
    cursor = request.query_params.get("cursor") or None
    if cursor is not None and not WATCH_ID.fullmatch(cursor):
        raise InvalidRequest.field("cursor", "must be a next_cursor of a listing")
    page = await request.state["watches"].list_page(tenant, filters, limit=limit, cursor=cursor)
    shown = [responses.Watch.of(watch) for watch in page.watches]
    return json_response(responses.WatchPage(data=shown, next_cursor=page.next_cursor))


async def get_watch(request: Request[State]) -> Response:
    watch, durations = await request.state["watches"].timed(_tenant(request), _watch_id(request))
    return json_response(
        responses.WatchDetail.of(watch, durations=responses.Durations.of(durations))
    )


async def cancel_watch(request: Request[State]) -> Response:
    watch = await request.state["watches"].cancel(_tenant(request), _watch_id(request))
    return json_response(responses.Watch.of(watch))


async def list_deliveries(request: Request[State]) -> Response:
    tenant, watch_id, watches = _tenant(request), _watch_id(request), request.state["watches"]
    attempts = await watches.attempts(tenant, watch_id)
    deliveries = await watches.deliveries(tenant, watch_id)
    most = watches.max_attempts
    return json_response(
        responses.AttemptList(
            data=[responses.Attempt.of(a, most) for a in attempts],
            deliveries=[responses.Delivery.of(d, most) for d in deliveries],
        )
    )


async def retry_delivery(request: Request[State]) -> Response:
    tenant, watch_id, watches = _tenant(request), _watch_id(request), request.state["watches"]
    webhook_id = str(request.path_params["webhook_id"])
    if not WEBHOOK_ID.fullmatch(webhook_id):
        raise NotFound(f"no delivery {webhook_id[:80]} of watch {watch_id}")
    retried = await watches.retry(tenant, watch_id, webhook_id)
    return json_response(responses.Delivery.of(retried, watches.max_attempts), 202)


async def redeliver(request: Request[State]) -> Response:
    tenant, watch_id = _tenant(request), _watch_id(request)
    body = await _optional_body(request, models.RedeliverRequest)
    endpoints = None if body is None else body.endpoints
    done = await request.state["redelivery"].redeliver(tenant, watch_id, endpoints)
    most = request.state["watches"].max_attempts
    return json_response(responses.Redelivered.of_redelivered(done, most), 202)


async def recover(request: Request[State]) -> Response:
    """Redeliver the failed webhooks of the watches the body's filters match (bounded)."""
    tenant = _tenant(request)
    body = await _optional_body(request, models.RecoverRequest) or models.RecoverRequest()
    recovery = await request.state["redelivery"].recover(tenant, _watch_filters(body.query()))
    most = request.state["watches"].max_attempts
    return json_response(responses.Recovery.of(recovery, most), 202)


def _watch_id(request: Request[State]) -> str:
    watch_id = str(request.path_params["watch_id"])
    if not WATCH_ID.fullmatch(watch_id):
        raise NotFound(f"no watch {watch_id[:80]}")
    return watch_id


class HeldStream(StreamingResponse):
    """A stream that gives its place among its tenant's open streams back (`close`) however
    it ends: done, failed, or its client gone."""

    def __init__(
        self, content: AsyncIterable[bytes], close: Callable[[], None], **options: Any
    ) -> None:
        super().__init__(content, **options)
        self._close = close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._close()


async def _unless_gone(request: Request[State], work: Coroutine[Any, Any, T]) -> T | None:
    """`work`'s result, or None once the client went away first (`work` is then cancelled): a
    long-poll whose client left holds nothing."""

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    working, leaving = asyncio.ensure_future(work), asyncio.ensure_future(gone())
    try:
        await asyncio.wait((working, leaving), return_when=asyncio.FIRST_COMPLETED)
    finally:
        leaving.cancel()
        if not working.done():
            working.cancel()
    await asyncio.gather(working, leaving, return_exceptions=True)
    return None if working.cancelled() else working.result()


async def wait_for_watch(request: Request[State]) -> Response:
    tenant = _tenant(request)
    watch_id = _watch_id(request)
    timeout_s = _query_int(request, "timeout_s", 30, 0, MAX_WAIT_S)
    close = request.state["streams"].open(tenant)
    try:
        feed = request.state["feed"]
        waited = await _unless_gone(request, feed.wait(tenant, watch_id, timeout_s))
    finally:
        close()
    if waited is None:
        return Response(status_code=CLIENT_GONE)
    if waited.final is not None:
        return Response(waited.final.body, media_type="application/json")
    # 202 "not yet": ask again at once (the wait itself was the delay).
    pending = responses.Pending(status="pending", watch=responses.Watch.of(waited.watch))
    return Response(pending.dump(), 202, {"Retry-After": "0"}, media_type="application/json")


def sse_frame(event: EventRecord) -> bytes:
    # Envelopes are one line of JSON (orjson escapes newlines), so one `data:` line each.
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (
        event.id.encode(),
        event.type.encode(),
        event.body,
    )


async def _server_sent(found: AsyncIterator[EventRecord | None]) -> AsyncIterator[bytes]:
    """The events as Server-Sent Events: after the reconnection delay, a frame each, and a
    comment whenever the feed says the stream has been quiet a while."""
    yield b"retry: %d\n\n" % RECONNECT_MS
    async for event in found:
        yield b": keep-alive\n\n" if event is None else sse_frame(event)


async def stream_events(request: Request[State]) -> Response:
    tenant = _tenant(request)
    watch_id = _watch_id(request)
    # An EventSource sends the last id it saw when it reconnects; other clients may say it
    # in the query.
    field, after = "Last-Event-ID", request.headers.get("last-event-id")
    if after is None:
        field, after = "last_event_id", request.query_params.get("last_event_id")
    if after is not None and not EVENT_ID.fullmatch(after):
        raise InvalidRequest.field(field, "must be the id of an event of this stream (evt_...)")
    feed = request.state["feed"]
    if not await feed.has_more(tenant, watch_id, after):  # a 404 before the stream starts
        # An EventSource reconnects after every stream that ends, except on a 204.
        return Response(None, status_code=204)
    if request.method == "HEAD":  # the headers only, not a stream held open for nothing
        return Response(None, headers=SSE_HEADERS, media_type="text/event-stream")
    close = request.state["streams"].open(tenant)
    return HeldStream(
        _server_sent(feed.stream(tenant, watch_id, after)), close, headers=SSE_HEADERS,
        media_type="text/event-stream",
    )  # fmt: skip


def _event_types(values: list[str]) -> list[str]:
    """The event types the `type` parameters choose (`EVENT_TYPES` is their rule)."""
    for value in values:
        if not EVENT_TYPES.fullmatch(value):
            names = (part.strip(" ") for part in value.split(","))
            wrong = next((name for name in names if name not in events.ALL_EVENTS), value)
            shown = repr(wrong[:80]) if wrong else "an empty one"
            raise InvalidRequest.field(
                "type",
                f"unknown event type {shown}: give event types separated by commas, among "
                f"{', '.join(events.ALL_EVENTS)}",
            )
    return [name.strip(" ") for value in values if value for name in value.split(",")]


async def list_events(request: Request[State]) -> Response:
    tenant = _tenant(request)
    chosen = _event_types(request.query_params.getlist("type"))
    limit = _query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_EVENTS)
    found = await request.state["feed"].recent(tenant, chosen or None, limit)
    # The envelopes as recorded, in one JSON array.
    body = b"[" + b",".join(event.body for event in found) + b"]"
    return Response(body, media_type="application/json")


async def create_subscription(request: Request[State]) -> Response:
    tenant = _tenant(request)
    body = await _body(request, models.SubscriptionRequest)
    created = await request.state["subscriptions"].create(
        tenant, body.url, body.events, secret=body.secret, headers=body.headers,
        final_statuses=body.final_statuses,
    )  # fmt: skip
    shown = responses.CreatedSubscription.of(created.subscription, secret=created.secret)
    return json_response(shown, 201)


async def list_subscriptions(request: Request[State]) -> Response:
    found = await request.state["subscriptions"].list(_tenant(request))
    shown = [responses.Subscription.of(subscription) for subscription in found]
    return json_response(responses.SubscriptionList(data=shown))


async def delete_subscription(request: Request[State]) -> Response:
    tenant, subscription_id = _subscription_changed(request)
    await request.state["subscriptions"].delete(tenant, subscription_id)
    return Response(status_code=204)


async def enable_subscription(request: Request[State]) -> Response:
    tenant, subscription_id = _subscription_changed(request)
    changed = await request.state["subscriptions"].set_enabled(tenant, subscription_id, True)
    return json_response(responses.Subscription.of(changed))


async def disable_subscription(request: Request[State]) -> Response:
    tenant, subscription_id = _subscription_changed(request)
    changed = await request.state["subscriptions"].set_enabled(tenant, subscription_id, False)
    return json_response(responses.Subscription.of(changed))


async def rotate_subscription_secret(request: Request[State]) -> Response:
    tenant, subscription_id = _subscription_changed(request)
    rotated = await request.state["subscriptions"].rotate(tenant, subscription_id)
    return json_response(
        responses.RotatedSubscription.of(rotated.subscription, secret=rotated.secret)
    )


async def test_subscription(request: Request[State]) -> Response:
    tenant, subscription_id = _subscription_changed(request)
    sent = await request.state["subscriptions"].send_test(tenant, subscription_id)
    return json_response(
        responses.TestEventResult(
            webhook_id=sent.message_id,
            succeeded=sent.succeeded,
            status_code=sent.status_code,
            error=sent.error,
            duration_ms=round(sent.duration_s * 1000),
        )
    )


def _subscription_changed(request: Request[State]) -> tuple[str, str]:
    """The tenant and the subscription id of the path, which names no subscription unless it
    has the form of one."""
    tenant = _tenant(request)
    subscription_id = str(request.path_params["subscription_id"])
    if not SUBSCRIPTION_ID.fullmatch(subscription_id):
        raise NotFound(f"no subscription {subscription_id[:80]}")
    return tenant, subscription_id


async def metrics(request: Request[State]) -> Response:
    body, media_type = request.state["monitor"].render_metrics(request.headers.get("accept", ""))
    return Response(body, media_type=media_type, headers={"Vary": "Accept"})


async def metrics_elsewhere(request: Request[State]) -> Response:
    raise NotFound(
        "with auth.tokens configured, /metrics is served only on the health port "
        "(server.health_port), for the cluster's monitoring: it counts every tenant's work"
    )


async def livez(request: Request[State]) -> Response:
    return json_response(responses.Health(status="ok"))


async def readyz(request: Request[State]) -> Response:
    problem = await request.state["monitor"].ready()
    if problem is not None:
        return json_response(responses.Unready(status="unavailable", reason=problem), 503)
    return json_response(responses.Health(status="ok"))
