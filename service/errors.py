"""The bridge's exceptions: one root, each class documenting itself.

```
BridgeError
├── ConfigError            bad configuration; start-up stops with this one line
├── StoreError             the store failed (driver errors are translated into these)
│   ├── StoreUnavailable   unreachable, or refusing writes (a full disk): retry later
│   ├── MigrationError     the schema could not be brought up to date
│   └── StoreLocked        another process holds the single-process store
├── LeaseLost              a fenced write-back found its lease taken over
└── ApiError               a request that cannot be served: the HTTP layer answers it as a
    │                      problem document (`service.api.problems` gives each its status)
    ├── InvalidRequest     the body or query is invalid (lists each field)
    ├── NotFound           no such resource for this caller
    ├── Unauthorized       no valid API token
    ├── ReadOnly           a viewer token asked for a change
    ├── Conflict           the request conflicts with an earlier one or the resource's state
    ├── TooLarge           the body is too large
    ├── UnsupportedMediaType a body that is not JSON by its Content-Type
    ├── TooManyRequests    over a rate; retry after a while
    │   └── TooManyStreams the tenant holds its most open streams already
    ├── UpstreamRefused    the upstream refused a request made for the caller
    ├── BadGateway         the upstream failed or did not answer in time
    └── Busy               the bridge cannot serve the request now; retry after a while
```
"""

from __future__ import annotations

import math
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


def retry_after_header(seconds: float) -> str:
    """Whole seconds, rounded up, at least 1 (Retry-After takes integers)."""
    return str(max(1, math.ceil(seconds)))


class ApiError(BridgeError):
    """The request could not be served."""

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: list[dict[str, Any]] | None = None,
        retry_after: str | None = None,
    ):
        super().__init__(detail)
        self.errors = errors
        # When to try again: whole seconds, or the upstream's own Retry-After passed on.
        self.retry_after = retry_after


class InvalidRequest(ApiError):
    """The request is invalid."""

    @classmethod
    def field(cls, name: str, message: str) -> InvalidRequest:
        """The error of one field (of the body, or a query parameter): `name: message`."""
        return cls(f"{name}: {message}", errors=[{"field": name, "message": message}])


class NotFound(ApiError):
    """No such resource."""


class Conflict(ApiError):
    """The request conflicts with an earlier one."""


class TooLarge(ApiError):
    """The request body is too large."""


class UnsupportedMediaType(ApiError):
    """Send the body as JSON, with `Content-Type: application/json`."""


class Unauthorized(ApiError):
    """Send an API token as `Authorization: Bearer <token>` or `X-API-Key: <token>`."""


class ReadOnly(ApiError):
    """This token is a viewer's: it may read but not change anything."""


class TooManyRequests(ApiError):
    """Too many requests; retry after the time in the Retry-After header."""


class TooManyStreams(TooManyRequests):
    """This token holds as many open streams as it may; close one first."""


class UpstreamRefused(ApiError):
    """The upstream refused the request."""

    def __init__(self, upstream_status: int, detail: str, *, retry_after: str | None = None):
        super().__init__(detail, retry_after=retry_after)
        # Answered as the client's own status: a client reacts to it as to a direct call.
        self.upstream_status = upstream_status


class BadGateway(ApiError):
    """The upstream failed or did not answer in time."""


class Busy(ApiError):
    """The bridge cannot serve the request now; retry after the time in the Retry-After header."""
