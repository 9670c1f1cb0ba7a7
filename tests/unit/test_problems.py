"""The HTTP layer's answer to each error of `service.errors`: status, problem code, title,
headers, and the error's own sentence as the detail."""

from __future__ import annotations

import inspect

import orjson
import pytest

from service import errors
from service.api.problems import PROBLEMS, from_error
from service.errors import ApiError


@pytest.mark.parametrize(
    ("error", "status", "code", "title"),
    [
        (errors.ApiError("the body is not valid JSON"), 400, "bad-request", "Bad request"),
        (errors.InvalidRequest.field("limit", "big"), 422, "invalid-request", "Invalid request"),
        (errors.NotFound("no watch wch_1"), 404, "not-found", "Not found"),
        (errors.Conflict("key used"), 409, "conflict", "Conflict"),
        (errors.TooLarge("too large"), 413, "too-large", "Request body too large"),
        (errors.UnsupportedMediaType("not JSON"), 415, "unsupported-media-type",
         "Unsupported media type"),
        (errors.Unauthorized("no token"), 401, "unauthorized", "Unauthorized"),
        (errors.TooManyRequests("slow down"), 429, "rate-limited", "Too many requests"),
        # A subclass with its own code keeps its parent's status.
        (errors.TooManyStreams("close one"), 429, "too-many-streams", "Too many open streams"),
        # The upstream's own status, passed on.
        (errors.UpstreamRefused(402, "no credits"), 402, "upstream-refused",
         "The upstream refused the request"),
        (errors.BadGateway("timed out"), 502, "upstream-failed", "The upstream failed"),
    ],
)  # fmt: skip
def test_each_error_answers_its_status_code_and_title(
    error: ApiError, status: int, code: str, title: str
) -> None:
    """An error becomes the problem document of its class, its message the detail."""
    response = from_error(error)
    body = orjson.loads(response.body)
    assert response.status_code == status
    assert response.media_type == "application/problem+json"
    assert body["type"] == f"/problems/{code}"
    assert (body["title"], body["status"], body["detail"]) == (title, status, error.message)


def test_every_api_error_class_has_its_problem() -> None:
    """No error class a service can raise answers as its parent by oversight."""
    classes = {
        kind
        for _, kind in inspect.getmembers(errors, inspect.isclass)
        if issubclass(kind, ApiError)
    }
    assert classes == set(PROBLEMS)


def test_a_field_error_lists_the_field() -> None:
    """`InvalidRequest.field` names the field in the detail and in `errors`."""
    body = orjson.loads(from_error(errors.InvalidRequest.field("limit", "too big")).body)
    assert body["detail"] == "limit: too big"
    assert body["errors"] == [{"field": "limit", "message": "too big"}]


def test_retry_after_and_the_token_scheme_are_headers() -> None:
    """A rate limit says when to retry; a 401 says how to present a token."""
    limited = from_error(errors.TooManyRequests("slow down", retry_after="7"))
    assert limited.headers["retry-after"] == "7"
    refused = from_error(errors.UpstreamRefused(429, "busy", retry_after="30"))
    assert (refused.status_code, refused.headers["retry-after"]) == (429, "30")
    unauthorized = from_error(errors.Unauthorized("no token"))
    assert unauthorized.headers["www-authenticate"] == 'Bearer realm="webhook-bridge"'
    assert "retry-after" not in unauthorized.headers
