"""The bridge's exceptions: one root, each class documenting itself.

```
BridgeError
├── ConfigError            bad configuration; start-up stops with this one line
├── StoreError             the store failed (driver errors are translated into these)
│   ├── StoreUnavailable   unreachable, or refusing writes (a full disk): retry later
│   ├── MigrationError     the schema could not be brought up to date
│   └── StoreLocked        another process holds the single-process store
├── LeaseLost              a fenced write-back found its lease taken over
└── ApiError               an error answered to an HTTP client as a problem document
    ├── InvalidRequest     422: the body or query is invalid (lists each field)
    ├── NotFound           404
    ├── Unauthorized       401
    ├── Conflict           409
    ├── TooLarge           413
    ├── UnsupportedMediaType 415: a body that is not JSON by its Content-Type
    ├── TooManyRequests    429
    │   └── TooManyStreams 429: the tenant holds its most open streams already
    ├── UpstreamRefused    the upstream's own 4xx, passed through (POST /v1/generate)
    └── BadGateway         502: the upstream failed or did not answer in time
```
"""

from __future__ import annotations

from typing import Any


class BridgeError(Exception):
    """Something went wrong in the bridge."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigError(BridgeError):
    """The configuration is invalid."""


class StoreError(BridgeError):
    """The store failed."""


class StoreUnavailable(StoreError):
    """The store cannot be used for now (unreachable, or refusing writes); retry later.

    Unlike other store errors it says nothing is wrong with the request or the bridge: it ends
    when the store comes back (or the disk is freed). `refusing_writes` says the store still
    answers but cannot write (a full disk, a read-only file system or server), so that only a
    write that succeeds shows the outage is over."""

    def __init__(self, message: str, *, refusing_writes: bool = False) -> None:
        super().__init__(message)
        self.refusing_writes = refusing_writes


class MigrationError(StoreError):
    """The store's schema could not be migrated."""


class StoreLocked(StoreError):
    """Another process is using this store."""


class LeaseLost(BridgeError):
    """The lease on this work was lost to another holder; the write was not applied."""


class ApiError(BridgeError):
    """The request could not be served."""

    status = 400
    code = "bad-request"
    title = "Bad request"

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(detail)
        self.errors = errors
        self.headers = headers


class InvalidRequest(ApiError):
    """The request is invalid."""

    status = 422
    code = "invalid-request"
    title = "Invalid request"


class NotFound(ApiError):
    """No such resource."""

    status = 404
    code = "not-found"
    title = "Not found"


class Conflict(ApiError):
    """The request conflicts with an earlier one."""

    status = 409
    code = "conflict"
    title = "Conflict"


class TooLarge(ApiError):
    """The request body is too large."""

    status = 413
    code = "too-large"
    title = "Request body too large"


class UnsupportedMediaType(ApiError):
    """Send the body as JSON, with `Content-Type: application/json`."""

    status = 415
    code = "unsupported-media-type"
    title = "Unsupported media type"


class Unauthorized(ApiError):
    """Send an API token as `Authorization: Bearer <token>` or `X-API-Key: <token>`."""

    status = 401
    code = "unauthorized"
    title = "Unauthorized"


class TooManyRequests(ApiError):
    """Too many requests; retry after the time in the Retry-After header."""

    status = 429
    code = "rate-limited"
    title = "Too many requests"


class TooManyStreams(TooManyRequests):
    """This token holds as many open streams as it may; close one first."""

    code = "too-many-streams"
    title = "Too many open streams"


class UpstreamRefused(ApiError):
    """The upstream refused the request."""

    code = "upstream-refused"
    title = "The upstream refused the request"

    def __init__(self, status: int, detail: str, *, headers: dict[str, str] | None = None):
        super().__init__(detail, headers=headers)
        self.status = status  # the upstream's own status: a client reacts to it as to a direct call


class BadGateway(ApiError):
    """The upstream failed or did not answer in time."""

    status = 502
    code = "upstream-failed"
    title = "The upstream failed"
