"""API tokens and the registration rate limit."""

from __future__ import annotations

import hashlib

import pytest

from service.auth import Authenticator, Caller, RateLimiter, new_token, retry_after_header
from service.clock import FakeClock
from service.config import ApiToken

ACME = ApiToken(name="acme", sha256=hashlib.sha256(b"acme-token").hexdigest())
GLOBEX = ApiToken.model_validate({"name": "globex", "token": "globex-token"})


@pytest.mark.parametrize(
    ("authorization", "api_key", "expected"),
    [
        ("Bearer acme-token", None, Caller("acme", True)),  # a hashed token, as Bearer
        ("bearer globex-token", None, Caller("globex", True)),  # a plain one; scheme any case
        (None, "acme-token", Caller("acme", True)),  # X-API-Key works too
        ("Bearer acme-token ", None, Caller("acme", True)),  # stray whitespace tolerated
        ("Bearer wrong", None, None),  # an unknown token
        ("Basic YWNtZTp4", None, None),  # another scheme is not a token
        (None, None, None),  # nothing at all
        ("Bearer ", None, None),  # an empty token
    ],
)
def test_identify(authorization: str | None, api_key: str | None, expected: Caller | None) -> None:
    """Only a configured token identifies a caller, as the tenant it is named after."""
    assert Authenticator([ACME, GLOBEX]).identify(authorization, api_key) == expected


def test_without_tokens_everyone_is_anonymous() -> None:
    """With no tokens configured (loopback only), callers are the anonymous tenant."""
    assert Authenticator([]).identify(None, None) == Caller("", authenticated=False)
    assert Authenticator([]).identify("Bearer whatever", None) == Caller("", False)


def test_new_token_matches_its_digest() -> None:
    """hash-token's output configures a token that then identifies its holder."""
    token, digest = new_token()
    configured = ApiToken(name="new", sha256=digest)
    assert Authenticator([configured]).identify(f"Bearer {token}", None) == Caller("new", True)


def test_rate_limiter_allows_a_burst_then_the_rate() -> None:
    """A burst passes at once; then one request per 1/rate seconds, per key."""
    clock = FakeClock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.take("acme") for _ in range(3)] == [None, None, None]
    assert limiter.take("acme") == pytest.approx(0.5)  # empty: the next token in 1/rate s
    assert limiter.take("globex") is None  # other keys have their own bucket
    clock.advance(0.5)
    assert limiter.take("acme") is None
    assert limiter.take("acme") == pytest.approx(0.5)
    clock.advance(100)
    assert [limiter.take("acme") for _ in range(4)][-1] is not None  # refills to the burst only


@pytest.mark.parametrize(("seconds", "header"), [(0.01, "1"), (1.0, "1"), (1.2, "2"), (30, "30")])
def test_retry_after_is_whole_seconds_rounded_up(seconds: float, header: str) -> None:
    """Retry-After never tells a client to come back before a token is there."""
    assert retry_after_header(seconds) == header
