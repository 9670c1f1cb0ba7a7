"""API tokens and the registration rate limit."""

from __future__ import annotations

import hashlib
import json

import pytest

from service import cli
from service.auth import (
    Authenticator,
    Caller,
    RateLimiter,
    authenticate,
    new_token,
)
from service.clock import FakeClock
from service.config import ApiToken
from service.errors import ReadOnly, TooManyRequests, Unauthorized, retry_after_header

ACME = ApiToken(name="acme", sha256=hashlib.sha256(b"acme-token").hexdigest())
GLOBEX = ApiToken.model_validate({"name": "globex", "token": "globex-token"})
SUPPORT = ApiToken.model_validate(
    {"name": "acme-support", "tenant": "acme", "role": "viewer", "token": "support-token"}
)
ACME_CI = ApiToken.model_validate({"name": "acme-ci", "tenant": "acme", "token": "ci-token"})


@pytest.mark.parametrize(
    ("authorization", "api_key", "expected"),
    [
        ("Bearer acme-token", None, Caller("acme", True, "acme")),  # a hashed token, as Bearer
        ("bearer globex-token", None, Caller("globex", True, "globex")),  # scheme any case
        (None, "acme-token", Caller("acme", True, "acme")),  # X-API-Key works too
        ("Bearer acme-token ", None, Caller("acme", True, "acme")),  # stray whitespace tolerated
        # A viewer token reaches its tenant, read-only.
        ("Bearer support-token", None, Caller("acme", True, "acme-support", read_only=True)),
        (None, "ci-token", Caller("acme", True, "acme-ci")),  # a second full token of acme
        ("Bearer wrong", None, None),  # an unknown token
        ("Basic YWNtZTp4", None, None),  # another scheme is not a token
        (None, None, None),  # nothing at all
        ("Bearer ", None, None),  # an empty token
    ],
)
def test_identify(authorization: str | None, api_key: str | None, expected: Caller | None) -> None:
    """Only a configured token identifies a caller: its name, its tenant (by default the
    name) and whether it is read-only."""
    found = Authenticator([ACME, GLOBEX, SUPPORT, ACME_CI]).identify(authorization, api_key)
    assert found == expected


def test_a_viewer_may_not_change_anything() -> None:
    """A viewer's request for a change is refused, naming the token and the change; a full
    token's is not."""
    with pytest.raises(ReadOnly, match=r"token 'acme-support' has role viewer.*POST /v1/watches"):
        Caller("acme", True, "acme-support", read_only=True).may_change("POST /v1/watches")
    Caller("acme", True, "acme").may_change("POST /v1/watches")
    Caller("", False).may_change("POST /v1/watches")  # no tokens: the anonymous tenant acts


def test_without_tokens_everyone_is_anonymous() -> None:
    """With no tokens configured (loopback only), callers are the anonymous tenant."""
    assert Authenticator([]).identify(None, None) == Caller("", authenticated=False)
    assert Authenticator([]).identify("Bearer whatever", None) == Caller("", False)


def test_new_token_matches_its_digest() -> None:
    """A new token's digest configures a token that then identifies its holder."""
    token, digest = new_token()
    configured = ApiToken(name="new", sha256=digest)
    found = Authenticator([configured]).identify(f"Bearer {token}", None)
    assert found == Caller("new", True, "new")


def test_hash_token_prints_an_entry_to_configure(capsys: pytest.CaptureFixture[str]) -> None:
    """`hash-token --tenant --role viewer` prints the token and an entry that, configured
    beside the tenant's own token, identifies the holder as a viewer of that tenant."""
    args = ["hash-token", "--name", "acme-support", "--tenant", "acme", "--role", "viewer"]
    assert cli.main(args) == 0
    given, configure = capsys.readouterr().out.splitlines()
    token = given.rpartition(" ")[2]
    entries = json.loads(configure.partition(":")[2])
    assert [{k: v for k, v in e.items() if k != "sha256"} for e in entries] == [
        {"name": "acme-support", "tenant": "acme", "role": "viewer"}
    ]
    tokens = [ACME, *(ApiToken.model_validate(entry) for entry in entries)]
    found = Authenticator(tokens).identify(f"Bearer {token}", None)
    assert found == Caller("acme", True, "acme-support", read_only=True)


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


def test_waiting_spends_nothing() -> None:
    """`wait` tells when a token comes without spending one."""
    clock = FakeClock()
    limiter = RateLimiter(rate=1.0, burst=1, clock=clock)
    assert limiter.wait("a") is None
    assert limiter.wait("a") is None
    assert limiter.take("a") is None
    assert limiter.wait("a") == pytest.approx(1.0)
    clock.advance(0.25)
    assert limiter.wait("a") == pytest.approx(0.75)


def test_a_flood_of_keys_keeps_memory_bounded() -> None:
    """Past `max_keys` buckets, refilled ones are dropped and at most half the rest kept, the
    newest: one client per address cannot grow the table without bound."""
    clock = FakeClock()
    limiter = RateLimiter(rate=1.0, burst=2, clock=clock, max_keys=100)
    for n in range(10_000):
        limiter.take(f"10.0.{n // 256}.{n % 256}")
        assert len(limiter) <= 100
    limiter.take("last")
    limiter.take("last")
    assert limiter.wait("last") is not None  # the newest are still counted


def test_refilled_buckets_go_first() -> None:
    """A key still short of tokens outlives keys whose buckets have refilled."""
    clock = FakeClock()
    limiter = RateLimiter(rate=1.0, burst=1, clock=clock, max_keys=4)
    for n in range(4):
        limiter.take(f"k{n}")
    clock.advance(2)  # the k buckets have refilled
    limiter.take("attacker")  # the fifth key: the refilled ones go
    assert len(limiter) == 1
    assert limiter.wait("attacker") is not None


def test_failed_authentications_lock_the_address_out_whatever_it_sends_next() -> None:
    """Past the burst of failures an address gets 429, even with a right token; others don't;
    once the rate refills, the right token works again."""
    clock = FakeClock()
    auth = Authenticator([ACME])
    failures = RateLimiter(rate=1 / 60, burst=3, clock=clock)

    def attempt(address: str, token: str) -> Caller:
        return authenticate(auth, failures, address, f"Bearer {token}", None)

    for _ in range(3):
        with pytest.raises(Unauthorized):
            attempt("203.0.113.7", "guess")
    with pytest.raises(TooManyRequests) as locked:
        attempt("203.0.113.7", "acme-token")
    assert locked.value.retry_after == "60"
    assert attempt("198.51.100.1", "acme-token") == Caller("acme", True, "acme")
    clock.advance(60)
    assert attempt("203.0.113.7", "acme-token") == Caller("acme", True, "acme")


def test_an_ipv6_client_is_counted_by_its_64() -> None:
    """A host picks any address of its /64 at will: failures from one /64 count together, so
    changing address does not bring a fresh burst; an IPv4-mapped address (a dual-stack
    listener's IPv4 client) counts as its IPv4 address, not with every other IPv4 client."""
    clock = FakeClock()
    auth = Authenticator([ACME])
    failures = RateLimiter(rate=1 / 60, burst=3, clock=clock)

    def attempt(address: str, token: str) -> Caller:
        return authenticate(auth, failures, address, f"Bearer {token}", None)

    for host in (1, 2, 3):
        with pytest.raises(Unauthorized):
            attempt(f"2001:db8:1:2::{host}", "guess")
    with pytest.raises(TooManyRequests):
        attempt("2001:db8:1:2:ffff:ffff:ffff:ffff", "acme-token")
    assert attempt("2001:db8:1:3::1", "acme-token") == Caller("acme", True, "acme")

    for _ in range(3):
        with pytest.raises(Unauthorized):
            attempt("::ffff:203.0.113.7", "guess")
    with pytest.raises(TooManyRequests):
        attempt("203.0.113.7", "acme-token")
    assert attempt("::ffff:198.51.100.1", "acme-token") == Caller("acme", True, "acme")


def test_without_tokens_nothing_is_counted() -> None:
    """A bridge without tokens never refuses, so nothing counts against anyone."""
    failures = RateLimiter(rate=1 / 60, burst=1, clock=FakeClock())
    for _ in range(3):
        caller = authenticate(Authenticator([]), failures, "203.0.113.7", "Bearer x", None)
        assert caller == Caller("", False)
    assert len(failures) == 0
