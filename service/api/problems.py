"""RFC 9457 problem documents: every error a client sees says what to fix."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError
from starlette.responses import Response

from service.errors import ApiError, InvalidRequest

MEDIA_TYPE = "application/problem+json"
# Seconds a client is asked to wait while the store is unavailable: few enough to be back soon
# after it returns, enough not to hammer a bridge that is waiting for it.
STORE_RETRY_AFTER_S = 5


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": f"/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    return Response(orjson.dumps(body), status, headers=headers, media_type=MEDIA_TYPE)


def store_unavailable() -> Response:
    """The answer to any request while the store is unavailable (`StoreUnavailable`): retry
    later. Why is logged once per outage and shown by `/readyz`, not told to every client."""
    return problem(
        503,
        "store-unavailable",
        "Store unavailable",
        f"the bridge cannot use its store for now; retry in {STORE_RETRY_AFTER_S} s",
        headers={"Retry-After": str(STORE_RETRY_AFTER_S)},
    )


def from_error(error: ApiError) -> Response:
    return problem(
        error.status, error.code, error.title, error.message, error.errors, error.headers
    )


def _field(location: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in location) or "(body)"


def invalid_body(error: ValidationError) -> InvalidRequest:
    """A pydantic error as a 422 naming each field and what is wrong with it."""
    errors = []
    for item in error.errors(include_url=False):
        field = _field(item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field; remove it"
        elif item["type"] == "missing":
            message = "required"
        errors.append({"field": field, "message": message})
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return InvalidRequest(detail, errors=errors)
