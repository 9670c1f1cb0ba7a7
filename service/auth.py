"""Who is calling: API tokens (each one a tenant's, full or read-only), failed authentications
per address, and the token buckets of each tenant's rates (registrations here, subscription
changes in the subscription service)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network, ip_address

import structlog

from service.clock import Clock
from service.config import ApiToken
from service.errors import ReadOnly, TooManyRequests, Unauthorized, retry_after_header

log = structlog.get_logger("service.auth")

ANONYMOUS = ""


@dataclass(frozen=True, slots=True)
class Caller:
    tenant: str
    authenticated: bool
    token: str = ""  # the name of the token presented ("" when none is needed)
    read_only: bool = False  # a viewer token's: it may read, never change anything

    def may_change(self, what: str) -> None:
        """Raises `ReadOnly` for a viewer token, naming `what` it asked for."""
        if self.read_only:
            raise ReadOnly(
                f"token {self.token!r} has role viewer: it may read but not change anything; "
                f"{what} needs a token with role full"
            )


class Authenticator:
    """Checks `Authorization: Bearer <token>` or `X-API-Key: <token>` against the configured
    tokens' SHA-256 digests. Without configured tokens everyone is the anonymous tenant (the
    configuration only allows that on loopback or when explicitly asked for)."""

    def __init__(self, tokens: Sequence[ApiToken]) -> None:
        self._digests = [
            (Caller(token.tenant_name, True, token.name, token.read_only), token.digest)
            for token in tokens
        ]

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
        for caller, expected in self._digests:
            if hmac.compare_digest(digest, expected):
                found = caller
        return found


class RateLimiter:
    """A token bucket per key: `burst` at once, then `rate` per second.

    Keys may come from clients (their addresses), so memory is bounded: past `max_keys`
    buckets, those that have refilled (which a new bucket would equal) are dropped, and if more
    than half remain, the oldest of them too."""

    def __init__(self, rate: float, burst: int, clock: Clock, max_keys: int = 100_000) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, updated at)

    def take(self, key: str) -> float | None:
        """Spend one token: None when allowed, else the seconds until one is available."""
        wait = self.wait(key)
        if wait is None:
            now = self._clock.now()
            self._keep(key, self._tokens(key, now) - 1.0, now)
        return wait

    def spend(self, key: str, what: str) -> None:
        """Spend one token of `key`, or raise `TooManyRequests` naming `what` and when a token
        is there again."""
        wait = self.take(key)
        if wait is not None:
            raise TooManyRequests(
                f"too many {what} for this token; retry in {retry_after_header(wait)} s",
                retry_after=retry_after_header(wait),
            )

    def wait(self, key: str) -> float | None:
        """The seconds until `key` has a token, None when it has one now; nothing is spent."""
        tokens = self._tokens(key, self._clock.now())
        return None if tokens >= 1.0 else (1.0 - tokens) / self._rate

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, key: str, now: float) -> float:
        tokens, updated = self._buckets.get(key, (self._burst, now))
        return min(self._burst, tokens + (now - updated) * self._rate)

    def _keep(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self._max_keys:
            draining = [
                (kept, bucket)
                for kept, bucket in self._buckets.items()
                if self._tokens(kept, now) < self._burst
            ]
            self._buckets = dict(draining[-(self._max_keys // 2) :])


def authenticate(
    auth: Authenticator,
    failures: RateLimiter,
    address: str,
    authorization: str | None,
    api_key: str | None,
) -> Caller:
    """The caller a request's credentials name. Raises `Unauthorized` when none matches, which
    counts against the client's `address`, and `TooManyRequests`, without looking at the
    credentials, while that address (`client_key`) has failed too often: guessing tokens stays
    slow."""
    if not auth.required:
        return Caller(ANONYMOUS, authenticated=False)
    address = client_key(address)
    wait = failures.wait(address)
    if wait is not None:
        raise TooManyRequests(
            "too many failed authentications from this address; retry in "
            f"{retry_after_header(wait)} s",
            retry_after=retry_after_header(wait),
        )
    caller = auth.identify(authorization, api_key)
    if caller is None:
        failures.take(address)
        if failures.wait(address) is not None:
            log.warning("auth.address_locked_out", address=address)
        raise Unauthorized(
            "a valid API token is required: send Authorization: Bearer <token> or "
            "X-API-Key: <token>"
        )
    return caller


def client_key(address: str) -> str:
    """What a client's failed authentications count against: its address; of an IPv6 one,
    its /64, whose every address its host may use (an IPv4-mapped one is its IPv4 address)."""
    try:
        parsed = ip_address(address)
    except ValueError:
        return address
    if not isinstance(parsed, IPv6Address):
        return address
    if parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(IPv6Network((int(parsed), 64), strict=False))


@dataclass(frozen=True, slots=True)
class Access:
    """Who may call, and how often."""

    tokens: Authenticator
    failures: RateLimiter  # failed authentications, per client address
    registrations: RateLimiter  # per tenant

    def caller(self, address: str, authorization: str | None, api_key: str | None) -> Caller:
        """The caller a request's credentials name (`authenticate`)."""
        return authenticate(self.tokens, self.failures, address, authorization, api_key)


def new_token() -> tuple[str, str]:
    """A random API token and its SHA-256 hex digest (the form to configure)."""
    import secrets

    token = "wbt_" + secrets.token_urlsafe(32)
    return token, hashlib.sha256(token.encode()).hexdigest()
