"""Who is calling: API tokens (each one a tenant), and a per-tenant registration rate limit."""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Sequence
from dataclasses import dataclass

from service.clock import Clock
from service.config import ApiToken

ANONYMOUS = ""


@dataclass(frozen=True, slots=True)
class Caller:
    tenant: str
    authenticated: bool


class Authenticator:
    """Checks `Authorization: Bearer <token>` or `X-API-Key: <token>` against the configured
    tokens' SHA-256 digests. Without configured tokens everyone is the anonymous tenant (the
    configuration only allows that on loopback or when explicitly asked for)."""

    def __init__(self, tokens: Sequence[ApiToken]) -> None:
        self._digests = [(token.name, token.digest) for token in tokens]

    @property
    def required(self) -> bool:
        return bool(self._digests)

    def identify(self, authorization: str | None, api_key: str | None) -> Caller | None:
        """The caller, or None when a token is required and none of them matches."""
        if not self._digests:
            return Caller(ANONYMOUS, authenticated=False)
        presented = api_key
        if authorization is not None:
            scheme, _, credentials = authorization.partition(" ")
            if scheme.lower() == "bearer":
                presented = credentials.strip()
        if not presented:
            return None
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        # Compare with every token, so the time taken does not tell which one nearly matched.
        for name, expected in self._digests:
            if hmac.compare_digest(digest, expected):
                found = name
        return None if found is None else Caller(found, authenticated=True)


class RateLimiter:
    """A token bucket per key: `burst` at once, then `rate` per second."""

    def __init__(self, rate: float, burst: int, clock: Clock) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, updated at)

    def take(self, key: str) -> float | None:
        """Spend one token: None when allowed, else the seconds until one is available."""
        now = self._clock.now()
        tokens, updated = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - updated) * self._rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return None
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self._rate


def retry_after_header(seconds: float) -> str:
    """Whole seconds, rounded up, at least 1 (Retry-After takes integers)."""
    return str(max(1, math.ceil(seconds)))


def new_token() -> tuple[str, str]:
    """A random API token and its SHA-256 hex digest (the form to configure)."""
    import secrets

    token = "wbt_" + secrets.token_urlsafe(32)
    return token, hashlib.sha256(token.encode()).hexdigest()
