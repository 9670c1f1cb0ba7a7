"""RFC 9457 problem documents: every error a client sees says what to fix.

The services raise the errors of `service.errors`; this is where each becomes an HTTP answer:
its status, its problem code (`/problems/<code>`) and title, and its headers.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.responses import Response

from service.api.responses import FieldError, Problem
from service.errors import (
    ApiError,
    BadGateway,
    Busy,
    Conflict,
    InvalidRequest,
    NotFound,
    ReadOnly,
    TooLarge,
    TooManyRequests,
    TooManyStreams,
    Unauthorized,
    UnsupportedMediaType,
    UpstreamRefused,
)

MEDIA_TYPE = "application/problem+json"
# Seconds a client is asked to wait while the store is unavailable: few enough to be back soon
# after it returns, enough not to hammer a bridge that is waiting for it.
STORE_RETRY_AFTER_S = 5
# Each error class's status, problem code and title; a class not listed answers as its parent.
PROBLEMS: dict[type[ApiError], tuple[int, str, str]] = {
    ApiError: (400, "bad-request", "Bad request"),
    InvalidRequest: (422, "invalid-request", "Invalid request"),
    NotFound: (404, "not-found", "Not found"),
    Conflict: (409, "conflict", "Conflict"),
    TooLarge: (413, "too-large", "Request body too large"),
    UnsupportedMediaType: (415, "unsupported-media-type", "Unsupported media type"),
    Unauthorized: (401, "unauthorized", "Unauthorized"),
    ReadOnly: (403, "read-only-token", "Read-only token"),
    TooManyRequests: (429, "rate-limited", "Too many requests"),
    TooManyStreams: (429, "too-many-streams", "Too many open streams"),
    # The status is the upstream's own (`UpstreamRefused.upstream_status`).
    UpstreamRefused: (400, "upstream-refused", "The upstream refused the request"),
    BadGateway: (502, "upstream-failed", "The upstream failed"),
    Busy: (503, "busy", "Busy"),
}
# How a client presents a token (RFC 6750), said with every 401.
WWW_AUTHENTICATE = 'Bearer realm="webhook-bridge"'


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = Problem(
        type=f"/problems/{code}",
        title=title,
        status=status,
        detail=detail,
        errors=[FieldError(**error) for error in errors or ()],
    )
    return Response(body.dump(), status, headers=headers, media_type=MEDIA_TYPE)


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
    status, code, title = next(PROBLEMS[kind] for kind in type(error).__mro__ if kind in PROBLEMS)
    if isinstance(error, UpstreamRefused):
        status = error.upstream_status
    headers = {} if error.retry_after is None else {"Retry-After": error.retry_after}
    if isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = WWW_AUTHENTICATE
    return problem(status, code, title, error.message, error.errors, headers or None)


def invalid_body(error: ValidationError) -> InvalidRequest:
    """A pydantic error as a 422 naming each field and what is wrong with it."""
    errors = []
    for item in error.errors(include_url=False):
        field = ".".join(str(part) for part in item["loc"]) or "(body)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field; remove it"
        elif item["type"] == "missing":
            message = "required"
        errors.append({"field": field, "message": message})
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return InvalidRequest(detail, errors=errors)
