"""RFC 9457 problem documents: every error a client sees says what to fix."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError
from starlette.responses import Response

from service.errors import ApiError, InvalidRequest

MEDIA_TYPE = "application/problem+json"


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
