"""HTTP handlers: parse and validate, call the service layer, serialize. Nothing else."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from service.api.models import WatchRequest
from service.api.problems import invalid_body
from service.auth import Caller, retry_after_header
from service.bridge import Bridge
from service.errors import ApiError, InvalidRequest, TooLarge, TooManyRequests, Unauthorized
from service.store.base import WATCH_STATUSES
from service.watches import WatchService

MAX_BODY_BYTES = 64 * 1024
MAX_PAGE = 200


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type="application/json")


def _bridge(request: Request) -> Bridge:
    bridge: Bridge = request.state.bridge
    return bridge


def _watches(request: Request) -> WatchService:
    return _bridge(request).watches


def _caller(request: Request) -> Caller:
    caller = _bridge(request).auth.identify(
        request.headers.get("authorization"), request.headers.get("x-api-key")
    )
    if caller is None:
        raise Unauthorized(
            "a valid API token is required: send Authorization: Bearer <token> or "
            "X-API-Key: <token>",
            headers={"WWW-Authenticate": 'Bearer realm="webhook-bridge"'},
        )
    return caller


def _tenant(request: Request) -> str:
    """The caller's tenant; every store call is scoped by it."""
    return _caller(request).tenant


async def me(request: Request) -> Response:
    caller = _caller(request)
    return json_response({"tenant": caller.tenant, "authenticated": caller.authenticated})


async def _json_body(request: Request) -> Any:
    too_large = TooLarge(f"the body is larger than {MAX_BODY_BYTES} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
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


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not (1 <= len(key) <= 255 and key.isprintable()):
        raise InvalidRequest(
            "Idempotency-Key must be 1 to 255 printable characters",
            errors=[{"field": "Idempotency-Key", "message": "1 to 255 printable characters"}],
        )
    return key


async def create_watch(request: Request) -> Response:
    tenant = _tenant(request)
    wait = _bridge(request).limiter.take(tenant)
    if wait is not None:
        raise TooManyRequests(
            f"too many registrations for this token; retry in {wait:.1f} s",
            headers={"Retry-After": retry_after_header(wait)},
        )
    data = await _json_body(request)
    if not isinstance(data, dict):
        raise ApiError(f"the body must be a JSON object, not {type(data).__name__}")
    try:
        watch_request = WatchRequest.model_validate(data)
    except ValidationError as error:
        raise invalid_body(error) from None
    registered = await _watches(request).register(tenant, watch_request, _idempotency_key(request))
    return Response(registered.body, registered.status, media_type="application/json")


def _query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        message = f"must be an integer from {low} to {high}"
        raise InvalidRequest(f"{name}: {message}", errors=[{"field": name, "message": message}])
    return int(raw)


async def list_watches(request: Request) -> Response:
    status = request.query_params.get("status") or None
    if status is not None and status not in WATCH_STATUSES:
        message = f"must be one of {', '.join(WATCH_STATUSES)}"
        raise InvalidRequest(f"status: {message}", errors=[{"field": "status", "message": message}])
    page = await _watches(request).list_page(
        _tenant(request),
        status=status,
        job_id=request.query_params.get("job_id") or None,
        limit=_query_int(request, "limit", 50, 1, MAX_PAGE),
        cursor=request.query_params.get("cursor") or None,
    )
    return json_response(page)


async def get_watch(request: Request) -> Response:
    return json_response(await _watches(request).get(_tenant(request), _watch_id(request)))


async def cancel_watch(request: Request) -> Response:
    return json_response(await _watches(request).cancel(_tenant(request), _watch_id(request)))


async def list_deliveries(request: Request) -> Response:
    return json_response(await _watches(request).attempts(_tenant(request), _watch_id(request)))


async def redeliver(request: Request) -> Response:
    watch = await _watches(request).redeliver(_tenant(request), _watch_id(request))
    return json_response(watch, 202)


def _watch_id(request: Request) -> str:
    return str(request.path_params["watch_id"])


async def livez(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    problem = await _bridge(request).ready()
    if problem is not None:
        return json_response({"status": "unavailable", "reason": problem}, 503)
    return json_response({"status": "ok"})
