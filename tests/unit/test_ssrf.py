"""The SSRF guard: which callback URLs and addresses are refused, and that the connector obeys."""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

import aiohttp
import httpx
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from hypothesis import example, given
from hypothesis import strategies as st

from service import http_clients, ssrf
from service.ssrf import (
    CallbackBlocked,
    CallbackBlockedError,
    CallbackPolicy,
    GuardedConnector,
    blocked_reason,
    check_address,
    check_url,
    parse_ip_literal,
)
from tests.loopback import loopback_server

IPAddress = IPv4Address | IPv6Address
DEFAULT = CallbackPolicy()
ALLOW_PRIVATE = CallbackPolicy(allow_private=True)
HINT = "set security.allow_private_callbacks or add an allowed CIDR"


def fake_dns(table: dict[str, list[str]]) -> Callable[[str, int], Awaitable[list[IPAddress]]]:
    """A check_url resolver answering from `table`; unknown names fail like getaddrinfo."""

    async def resolve(host: str, port: int) -> list[IPAddress]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [ip_address(answer) for answer in table[host]]

    return resolve


@dataclass
class FakeResolver(AbstractResolver):
    """An aiohttp resolver answering from `table` and recording the names it was asked."""

    table: dict[str, list[str]]
    asked: list[str] = field(default_factory=list)
    closed: bool = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Answer from the table."""
        self.asked.append(host)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            ResolveResult(
                hostname=host,
                host=answer,
                port=port,
                family=socket.AF_INET6 if ":" in answer else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for answer in self.table[host]
        ]

    async def close(self) -> None:
        """Remember being closed."""
        self.closed = True


# --- check_url: known bypasses ----------------------------------------------------------------

BLOCKED_URLS = [
    # the plain loopback literal
    ("http://127.0.0.1/", None, "127.0.0.1 is a loopback address"),
    # a name that resolves to loopback
    ("http://localhost/", {"localhost": ["127.0.0.1"]}, "resolves to 127.0.0.1, a loopback"),
    # scheme and host in capitals
    ("HTTP://LOCALHOST/", {"localhost": ["::1"]}, "resolves to ::1, a loopback"),
    # 127.0.0.1 as one decimal number
    ("http://2130706433/", None, "is 127.0.0.1, a loopback"),
    # as one hex number
    ("http://0x7f000001/", None, "is 127.0.0.1, a loopback"),
    # as one octal number
    ("http://017700000001/", None, "is 127.0.0.1, a loopback"),
    # an octal first part
    ("http://0177.0.0.1/", None, "is 127.0.0.1, a loopback"),
    # every part in hex
    ("http://0x7f.0x0.0x0.0x1/", None, "is 127.0.0.1, a loopback"),
    # hex short form
    ("http://0x7f.1/", None, "is 127.0.0.1, a loopback"),
    # two-part short form
    ("http://127.1/", None, "is 127.0.0.1, a loopback"),
    # "0" is 0.0.0.0, which Linux connects to the local host
    ("http://0/", None, "is 0.0.0.0, an unspecified address"),
    # IPv6 loopback
    ("http://[::1]/", None, "a loopback address"),
    # IPv4-mapped loopback, dotted
    ("http://[::ffff:127.0.0.1]/", None, "IPv4-mapped IPv6 address of 127.0.0.1, a loopback"),
    # IPv4-mapped loopback, hex
    ("http://[::ffff:7f00:1]/", None, "IPv4-mapped IPv6 address of 127.0.0.1, a loopback"),
    # IPv4-mapped metadata address, long form
    ("http://[0:0:0:0:0:ffff:169.254.169.254]/", None, "169.254.169.254, a link-local"),
    # deprecated IPv4-compatible form
    ("http://[::127.0.0.1]/", None, "IPv4-compatible IPv6 address of 127.0.0.1"),
    # 6to4 around loopback
    ("http://[2002:7f00:1::]/", None, "6to4 address of 127.0.0.1, a loopback"),
    # NAT64 around a private address
    ("http://[64:ff9b::10.0.0.1]/", None, "NAT64 address of 10.0.0.1, a private"),
    # NAT64 is blocked outright, even around a public address
    ("http://[64:ff9b::8.8.8.8]/", None, "NAT64 address of 8.8.8.8"),
    # local-use NAT64 prefix
    ("http://[64:ff9b:1::a00:1]/", None, "local-use NAT64 address"),
    # Teredo (RFC 4380's example, client 192.0.2.45)
    ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", None, "Teredo address of 192.0.2.45"),
    # AWS, GCP and Azure metadata
    ("http://169.254.169.254/latest/meta-data/", None, "a link-local address (cloud metadata)"),
    # AWS metadata over IPv6
    ("http://[fd00:ec2::254]/", None, "a unique-local address (cloud metadata)"),
    # Alibaba Cloud metadata
    ("http://100.100.100.200/", None, "(cloud metadata)"),
    # Azure WireServer: a public address only reachable inside Azure
    ("http://168.63.129.16/", None, "(cloud metadata)"),
    # carrier-grade NAT
    ("http://100.64.0.1/", None, "carrier-grade NAT"),
    # private, with the trailing dot of a fully-qualified name
    ("http://192.168.1.1./", None, "is 192.168.1.1, a private address"),
    # private with a port and a path
    ("http://10.0.0.5:8080/hook", None, "10.0.0.5 is a private address"),
    # private behind user info
    ("https://user:pw@172.16.0.1/", None, "a private address"),
    # link-local IPv6 with a URL-encoded zone id
    ("http://[fe80::1%25eth0]/", None, "a link-local address"),
    # site-local IPv6 (deprecated)
    ("http://[fec0::1]/", None, "site-local"),
    # unique-local IPv6
    ("http://[fd12:3456::1]/", None, "a unique-local address"),
    # IPv4 multicast
    ("http://224.0.0.1/", None, "a multicast address"),
    # IPv6 multicast
    ("http://[ff02::1]/", None, "a multicast address"),
    # broadcast
    ("http://255.255.255.255/", None, "a broadcast address"),
    # reserved class E
    ("http://240.0.0.1/", None, "a reserved address"),
    # benchmarking
    ("http://198.18.0.1/", None, "a benchmarking address"),
    # IPv4 documentation
    ("http://192.0.2.1/", None, "a documentation address"),
    # IPv6 documentation, old and new prefixes
    ("http://[2001:db8::1]/", None, "a documentation address"),
    ("http://[3fff::1]/", None, "a documentation address"),
    # IETF protocol assignments
    ("http://192.0.0.8/", None, "an IETF protocol assignment"),
    # IPv6 discard-only
    ("http://[100::1]/", None, "a discard-only address"),
    # one public and one private answer: one bad address blocks the URL
    ("http://mixed.test/", {"mixed.test": ["93.184.215.14", "10.0.0.5"]}, "resolves to 10.0.0.5"),
    # a public IPv4 and a loopback IPv6 answer
    ("https://dual.test/", {"dual.test": ["1.1.1.1", "::1"]}, "resolves to ::1, a loopback"),
]


@pytest.mark.parametrize(("url", "dns", "fragment"), BLOCKED_URLS)
async def test_check_url_blocks_bypass(
    url: str, dns: dict[str, list[str]] | None, fragment: str
) -> None:
    """Each known bypass spelling is refused with a reason that names the problem and the fix."""
    with pytest.raises(CallbackBlocked) as caught:
        await check_url(url, DEFAULT, fake_dns(dns or {}))
    assert fragment in caught.value.reason
    assert caught.value.reason.endswith(HINT)


PUBLIC_URLS = [
    # a public IPv4 literal
    ("http://93.184.215.14/", None),
    # a public IPv6 literal
    ("https://[2606:4700::1111]/", None),
    # a name resolving to a public address
    ("https://one.test/hooks/1?x=y", {"one.test": ["1.1.1.1"]}),
    # a name resolving to public IPv4 and IPv6
    ("https://dual.test/", {"dual.test": ["1.1.1.1", "2606:4700::1111"]}),
    # IPv4-mapped form of a public address: judged by the IPv4 address
    ("http://[::ffff:93.184.215.14]/", None),
    # a public address next to the CGNAT range (100.64/10 ends at 100.127.255.255)
    ("http://100.128.0.1:8443/", None),
    # a public address next to 172.16/12 (ends at 172.31.255.255)
    ("http://172.32.0.1/", None),
]


@pytest.mark.parametrize(("url", "dns"), PUBLIC_URLS)
async def test_check_url_allows_public(url: str, dns: dict[str, list[str]] | None) -> None:
    """URLs that reach only public addresses pass."""
    await check_url(url, DEFAULT, fake_dns(dns or {}))


URL_SHAPE_ERRORS = [
    # not http
    ("ftp://93.184.215.14/", DEFAULT, "must use http or https, not 'ftp'"),
    # a file URL
    ("file:///etc/passwd", DEFAULT, "must use http or https, not 'file'"),
    # no scheme at all
    ("93.184.215.14/hook", DEFAULT, "must be an absolute http or https URL"),
    # http while https is required
    ("http://93.184.215.14/", CallbackPolicy(require_https=True), "must use https"),
    # no host
    ("http:///hook", DEFAULT, "has no host"),
    # a name that does not resolve
    ("http://nowhere.test/", DEFAULT, "host nowhere.test could not be resolved: "),
    # a name that resolves to nothing
    ("http://empty.test/", DEFAULT, "host empty.test could not be resolved: no addresses"),
]


@pytest.mark.parametrize(("url", "policy", "fragment"), URL_SHAPE_ERRORS)
async def test_check_url_refuses_bad_shape(url: str, policy: CallbackPolicy, fragment: str) -> None:
    """Wrong schemes, missing hosts and unresolvable names are refused with a reason."""
    with pytest.raises(CallbackBlocked) as caught:
        await check_url(url, policy, fake_dns({"empty.test": []}))
    assert fragment in caught.value.reason


async def test_require_https_accepts_https() -> None:
    """require_https lets an https URL to a public address through."""
    await check_url("https://93.184.215.14/", CallbackPolicy(require_https=True), fake_dns({}))


async def test_check_url_default_resolver_uses_the_system() -> None:
    """Without a resolver check_url asks getaddrinfo (localhost is loopback everywhere)."""
    with pytest.raises(CallbackBlocked, match=r"localhost resolves to .*a loopback address"):
        await check_url("http://localhost/", DEFAULT)


async def test_check_url_does_not_resolve_literals() -> None:
    """IP literals are judged as written, never sent to the resolver."""

    async def resolve(host: str, port: int) -> list[IPAddress]:
        raise AssertionError(f"resolver called for {host}")

    await check_url("http://0x5db8d70e/", DEFAULT, resolve)  # 93.184.215.14


# --- The policy -------------------------------------------------------------------------------

ALLOW_RULES = [
    # allow_private opens private space
    (ALLOW_PRIVATE, "10.0.0.5", True),
    # and loopback
    (ALLOW_PRIVATE, "127.0.0.1", True),
    # and IPv6 loopback
    (ALLOW_PRIVATE, "::1", True),
    # an allowed CIDR opens its own addresses
    (CallbackPolicy(allow_cidrs=(IPv4Network("10.1.0.0/16"),)), "10.1.2.3", True),
    # and nothing else
    (CallbackPolicy(allow_cidrs=(IPv4Network("10.1.0.0/16"),)), "10.2.0.1", False),
    # an IPv4 CIDR opens the IPv4-mapped form of its addresses
    (CallbackPolicy(allow_cidrs=(IPv4Network("10.1.0.0/16"),)), "::ffff:10.1.2.3", True),
    # an IPv6 CIDR does not open IPv4 addresses
    (CallbackPolicy(allow_cidrs=(IPv6Network("fd00::/8"),)), "10.0.0.1", False),
    # an IPv6 CIDR opens its own addresses
    (CallbackPolicy(allow_cidrs=(IPv6Network("fd00::/8"),)), "fd00::1", True),
    # the default blocks private space
    (DEFAULT, "10.0.0.5", False),
    # the default allows public addresses
    (DEFAULT, "93.184.215.14", True),
]


@pytest.mark.parametrize(("policy", "address", "allowed"), ALLOW_RULES)
def test_check_address_policy(policy: CallbackPolicy, address: str, allowed: bool) -> None:
    """allow_private and allow_cidrs open exactly what they say."""
    if allowed:
        check_address(ip_address(address), policy)
    else:
        with pytest.raises(CallbackBlocked, match=re.escape(f"resolves to {address}, ")):
            check_address(ip_address(address), policy)


async def test_allow_cidrs_apply_to_resolved_names() -> None:
    """An allowed CIDR lets a name through when all its answers are inside it."""
    policy = CallbackPolicy(allow_cidrs=(IPv4Network("10.1.0.0/16"),))
    await check_url("http://internal.test/", policy, fake_dns({"internal.test": ["10.1.2.3"]}))
    with pytest.raises(CallbackBlocked, match=re.escape("resolves to 10.2.0.1")):
        await check_url("http://other.test/", policy, fake_dns({"other.test": ["10.2.0.1"]}))


def test_callback_blocked_carries_reason() -> None:
    """CallbackBlocked keeps the reason as an attribute and as its message."""
    error = CallbackBlocked("callback_url has no host")
    assert error.reason == str(error) == "callback_url has no host"
    assert error.code == "callback_blocked"


REASONS = [
    # RFC 1918
    ("10.0.0.5", "a private address"),
    # loopback
    ("127.0.0.1", "a loopback address"),
    # the metadata address gets its own words
    ("169.254.169.254", "a link-local address (cloud metadata)"),
    # other link-local addresses
    ("169.254.1.1", "a link-local address"),
    # a mapped address is described through its IPv4 address
    ("::ffff:127.0.0.1", "an IPv4-mapped IPv6 address of 127.0.0.1, a loopback address"),
    # the zone id does not change the verdict
    ("fe80::1%eth0", "a link-local address"),
    # a public IPv4 address
    ("93.184.215.14", None),
    # its mapped form
    ("::ffff:93.184.215.14", None),
    # a public IPv6 address
    ("2606:4700::1111", None),
]


@pytest.mark.parametrize(("address", "reason"), REASONS)
def test_blocked_reason(address: str, reason: str | None) -> None:
    """blocked_reason names the kind of address, or returns None for a public one."""
    assert blocked_reason(ip_address(address)) == reason


LITERALS = [
    # dotted quad
    ("127.0.0.1", "127.0.0.1"),
    # one decimal number
    ("2130706433", "127.0.0.1"),
    # the largest one
    ("4294967295", "255.255.255.255"),
    # hex, either case
    ("0X7F000001", "127.0.0.1"),
    # octal with many leading zeros
    ("000000000000177.1", "127.0.0.1"),
    # three parts: the last fills 16 bits
    ("10.1.65535", "10.1.255.255"),
    # trailing dot
    ("8.8.8.8.", "8.8.8.8"),
    # bracketed IPv6
    ("[::1]", "::1"),
    # IPv6 with a URL-encoded zone id
    ("fe80::1%25eth0", "fe80::1"),
    # bracketed IPv6 with a zone id
    ("[fe80::1%eth0]", "fe80::1"),
    # a name
    ("example.com", None),
    # a name made of hex digits
    ("deadbeef", None),
    # five parts
    ("1.2.3.4.5", None),
    # 8 is not an octal digit, so this is a name to inet_aton
    ("08.0.0.1", None),
    # a part above 255
    ("1.2.3.256", None),
    # a number above 32 bits
    ("4294967296", None),
    # "0x" with no digits
    ("0x", None),
    # an empty part
    ("1..2", None),
    # non-ASCII digits (int() would take them)
    ("١٢٧.0.0.1", None),
    # an underscore (int() would take it)
    ("1_0.0.0.1", None),
    # IPv4 in brackets is not a URL host
    ("[127.0.0.1]", None),
    # not an IPv6 address
    ("[::g]", None),
    # empty
    ("", None),
]


@pytest.mark.parametrize(("host", "expected"), LITERALS)
def test_parse_ip_literal(host: str, expected: str | None) -> None:
    """parse_ip_literal reads every spelling inet_aton accepts and nothing else."""
    assert parse_ip_literal(host) == (None if expected is None else ip_address(expected))


# --- Properties -------------------------------------------------------------------------------

# The IPv4 ranges the issue names, written out independently of the module's table.
ISSUE_BLOCKED_V4 = [
    IPv4Network(cidr)
    for cidr in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
]

blocked_v4 = st.sampled_from(ISSUE_BLOCKED_V4).flatmap(
    lambda net: st.builds(
        IPv4Address, st.integers(int(net.network_address), int(net.broadcast_address))
    )
)


def _v4_spellings(address: IPv4Address) -> list[str]:
    """Ways to write `address` as a URL host that mean the IPv4 address itself."""
    number, octets = int(address), address.packed
    return [
        str(address),
        str(number),
        hex(number),
        "0" + format(number, "o"),
        f"{octets[0]}.{number & 0xFFFFFF}",
        f"{octets[0]}.{octets[1]}.{number & 0xFFFF}",
        ".".join("0" + format(octet, "o") for octet in octets),
        ".".join(hex(octet) for octet in octets),
        f"{address}.",
    ]


def _v6_spellings(address: IPv4Address) -> list[tuple[str, IPv6Address]]:
    """IPv6 URL hosts that embed `address`, with the IPv6 address each denotes."""
    number = int(address)
    mapped = IPv6Address(0xFFFF << 32 | number)
    nat64 = IPv6Address(int(IPv6Address("64:ff9b::")) | number)
    return [
        (f"[::ffff:{address}]", mapped),
        (f"[::ffff:{number >> 16:x}:{number & 0xFFFF:x}]", mapped),
        (f"[0:0:0:0:0:ffff:{address}]", mapped),
        (f"[64:ff9b::{address}]", nat64),
    ]


@given(blocked_v4)
async def test_blocked_ipv4_is_blocked_in_every_spelling(address: IPv4Address) -> None:
    """An address in a blocked IPv4 range is refused however the URL writes it."""
    hosts = _v4_spellings(address) + [host for host, _ in _v6_spellings(address)]
    for host in hosts:
        with pytest.raises(CallbackBlocked):
            await check_url(f"http://{host}/", DEFAULT, fake_dns({}))


@given(st.ip_addresses(v=4))
def test_every_spelling_parses_to_the_same_address(address: IPv4Address) -> None:
    """parse_ip_literal reads each spelling of an IPv4 address back to that address."""
    for host in _v4_spellings(address):
        assert parse_ip_literal(host) == address, host
    for host, expected in _v6_spellings(address):
        assert parse_ip_literal(host) == expected, host


@given(st.ip_addresses(v=4))
def test_mapped_form_gets_the_same_verdict(address: IPv4Address) -> None:
    """An IPv4 address and its IPv4-mapped IPv6 form are blocked or allowed together."""
    mapped = IPv6Address(0xFFFF << 32 | int(address))
    assert (blocked_reason(address) is None) == (blocked_reason(mapped) is None)


@given(st.ip_addresses())
def test_at_least_as_strict_as_the_standard_library(address: IPAddress) -> None:
    """Whatever ipaddress calls non-global we block too (IPv4-mapped: judged by the IPv4)."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return
    if not address.is_global:
        assert blocked_reason(address) is not None


# Near-IPv4 strings: 1 to 5 parts, each decimal, octal, hex or junk (a lone 0x, 08, letters),
# sometimes with a final dot. Values run a little past 32 bits to cross every limit.
_number = st.integers(0, 255) | st.integers(0, 0x1_0000_0000)
_part = st.one_of(
    _number.map(str),
    _number.map(lambda n: "0" + format(n, "o")),
    _number.map(hex),
    _number.map(lambda n: hex(n).upper()),
    st.from_regex(r"[0-9a-gxX]{0,4}", fullmatch=True),
)
ipv4_like = st.builds(
    lambda parts, dot: ".".join(parts) + dot,
    st.lists(_part, min_size=1, max_size=5),
    st.sampled_from(["", "."]),
)


@given(ipv4_like)
# The limits of each part, at and one past the edge:
@example("4294967295")
@example("4294967296")
@example("1.16777215")
@example("1.16777216")
@example("1.2.65535")
@example("1.2.65536")
@example("255.1")
@example("256.1")
@example("0377.0x0ff.1.2")
@example("0400.0x100.1.2")
@example("010")
@example("08")
@example("0x")
@example("1.2.3.4.")
@example("1.2.3.4.0")
@example("1.2.3.4..")
def test_parse_agrees_with_inet_aton(host: str) -> None:
    """Every string the C library reads as IPv4, parse_ip_literal reads the same, and back."""
    try:
        system: IPv4Address | None = IPv4Address(socket.inet_aton(host))
    except OSError:
        system = None
    ours = parse_ip_literal(host)
    if host.endswith(".") and not host.endswith(".."):
        # We also take the fully-qualified form, which inet_aton does not.
        assert system is None
        try:
            system = IPv4Address(socket.inet_aton(host[:-1]))
        except OSError:
            system = None
    assert ours == system


# --- Connect time -----------------------------------------------------------------------------


@dataclass
class Receiver:
    """A callback receiver on a loopback port that records the Host header of each request."""

    port: int
    hosts: list[str]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """Run a real aiohttp server on 127.0.0.1 and a free port."""
    hosts: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        hosts.append(request.host)
        return web.Response(text="ok")

    async with loopback_server(handle) as base:
        yield Receiver(int(base.rsplit(":", 1)[1]), hosts)


async def _get(url: str, connector: aiohttp.TCPConnector) -> int:
    async with aiohttp.ClientSession(connector=connector) as session, session.get(url) as reply:
        await reply.read()
        return reply.status


LOOPBACK_HOSTS = [
    # the literal, which aiohttp never sends to a resolver
    "127.0.0.1",
    # a name, resolved by the system resolver
    "localhost",
    # a short form aiohttp would reject as non-canonical: refused by us first
    "127.1",
    # one decimal number
    "2130706433",
    # a hex short form, which aiohttp does send to getaddrinfo
    "0x7f.1",
    # IPv4-mapped IPv6
    "[::ffff:127.0.0.1]",
    # trailing dot
    "127.0.0.1.",
]


@pytest.mark.parametrize("host", LOOPBACK_HOSTS)
async def test_connector_refuses_loopback(receiver: Receiver, host: str) -> None:
    """The guarded connector refuses loopback before connecting; the reason is in the error."""
    url = f"http://{host}:{receiver.port}/"
    with pytest.raises(aiohttp.ClientConnectorError) as caught:
        await _get(url, GuardedConnector(DEFAULT))
    # Refused while resolving, before any socket exists (the socket backstop is not needed).
    assert isinstance(caught.value, aiohttp.ClientConnectorDNSError)
    assert isinstance(caught.value.os_error, CallbackBlockedError)
    assert "a loopback address; " + HINT in str(caught.value)
    assert ssrf.blocked_cause(caught.value) is caught.value.os_error
    assert receiver.hosts == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"])
async def test_connector_allows_private_when_told(receiver: Receiver, host: str) -> None:
    """With allow_private the same requests go through."""
    url = f"http://{host}:{receiver.port}/"
    assert await _get(url, GuardedConnector(ALLOW_PRIVATE, limit=10)) == 200
    assert len(receiver.hosts) == 1


async def test_connector_refuses_zone_id_literal(receiver: Receiver) -> None:
    """A link-local IPv6 literal with a zone id is refused."""
    with pytest.raises(aiohttp.ClientConnectorError, match="a link-local address"):
        await _get("http://[fe80::1%25lo]:9/", GuardedConnector(DEFAULT))


async def test_connector_refuses_when_any_answer_is_blocked(receiver: Receiver) -> None:
    """A name with one public and one loopback answer is refused as a whole."""
    dns = FakeResolver({"mixed.test": ["93.184.215.14", "127.0.0.1"]})
    url = f"http://mixed.test:{receiver.port}/"
    reason = re.escape("mixed.test resolves to 127.0.0.1, a loopback address")
    with pytest.raises(aiohttp.ClientConnectorError, match=reason):
        await _get(url, GuardedConnector(DEFAULT, resolver=dns))
    assert receiver.hosts == []


async def test_rebinding_after_registration_is_refused(receiver: Receiver) -> None:
    """A name that was public at registration and is loopback at delivery is refused."""
    await check_url("http://rebind.test/", DEFAULT, fake_dns({"rebind.test": ["1.1.1.1"]}))
    dns = FakeResolver({"rebind.test": ["127.0.0.1"]})
    reason = re.escape("rebind.test resolves to 127.0.0.1, a loopback address")
    with pytest.raises(aiohttp.ClientConnectorError, match=reason):
        await _get(f"http://rebind.test:{receiver.port}/", GuardedConnector(DEFAULT, resolver=dns))
    assert receiver.hosts == []


async def test_connector_uses_the_checked_answer(receiver: Receiver) -> None:
    """The connection goes to the address the resolver gave, with the URL's Host, looked up once."""
    dns = FakeResolver({"callback.test": ["127.0.0.1"]})
    policy = CallbackPolicy(allow_cidrs=(IPv4Network("127.0.0.0/8"),))
    url = f"http://callback.test:{receiver.port}/"
    async with aiohttp.ClientSession(connector=GuardedConnector(policy, resolver=dns)) as session:
        for _ in range(2):
            async with session.get(url) as reply:
                assert reply.status == 200
    assert receiver.hosts == [f"callback.test:{receiver.port}"] * 2
    assert dns.asked == ["callback.test"]


async def test_aiohttp_skips_the_resolver_for_literals(receiver: Receiver) -> None:
    """Why the connector also overrides connect: a plain resolver never sees IP literals."""
    dns = FakeResolver({})
    connector = aiohttp.TCPConnector(resolver=dns)
    assert await _get(f"http://127.0.0.1:{receiver.port}/", connector) == 200
    assert dns.asked == []


async def test_guarded_resolver_returns_answers_unchanged() -> None:
    """GuardedResolver hands allowed answers through untouched and refuses blocked ones."""
    inner = FakeResolver({"ok.test": ["1.1.1.1", "2606:4700::1111"], "bad.test": ["10.0.0.1"]})
    guard = ssrf.GuardedResolver(DEFAULT, inner)
    assert await guard.resolve("ok.test", 443) == await inner.resolve("ok.test", 443)
    with pytest.raises(CallbackBlockedError, match=re.escape("bad.test resolves to 10.0.0.1")):
        await guard.resolve("bad.test", 443)
    await guard.close()


async def test_connector_leaves_a_given_resolver_open() -> None:
    """Closing the session does not close a resolver the caller passed in (the caller owns it)."""
    dns = FakeResolver({})
    async with aiohttp.ClientSession(connector=GuardedConnector(DEFAULT, resolver=dns)):
        pass
    assert not dns.closed


def test_socket_backstop_refuses_blocked_addresses() -> None:
    """The socket factory under the connector refuses a blocked address and opens a public one."""
    open_socket = ssrf._guarded_socket_factory(DEFAULT, None)
    tcp = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
    with pytest.raises(CallbackBlockedError, match=re.escape("10.0.0.1, a private address")):
        open_socket((*tcp, ("10.0.0.1", 80)))
    sock = open_socket((*tcp, ("1.1.1.1", 80)))
    assert sock.family == socket.AF_INET
    sock.close()


def _httpx_client(policy: CallbackPolicy) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=http_clients.transport(GuardedConnector(policy)))


async def test_httpx_reports_the_refusal(receiver: Receiver) -> None:
    """Through httpx the refusal is an httpx.ConnectTimeout whose message keeps the reason."""
    async with _httpx_client(DEFAULT) as client:
        with pytest.raises(httpx.TransportError) as caught:
            await client.get(f"http://127.0.0.1:{receiver.port}/")
    # The transport maps every aiohttp.ClientConnectionError, ours included, to ConnectTimeout
    # (as httpx-aiohttp does) rather than ConnectError: use blocked_cause to tell them apart.
    assert type(caught.value) is httpx.ConnectTimeout
    assert "127.0.0.1 is a loopback address; " + HINT in str(caught.value)
    blocked = ssrf.blocked_cause(caught.value)
    assert blocked is not None
    assert blocked.reason.startswith("host 127.0.0.1 is a loopback address")
    assert receiver.hosts == []


async def test_httpx_allows_private_when_told(receiver: Receiver) -> None:
    """Through httpx with allow_private the request reaches the receiver."""
    async with _httpx_client(ALLOW_PRIVATE) as client:
        reply = await client.get(f"http://localhost:{receiver.port}/")
    assert reply.status_code == 200
    assert receiver.hosts == [f"localhost:{receiver.port}"]


def test_blocked_cause_ignores_other_errors() -> None:
    """blocked_cause finds nothing in an error that is not a policy refusal."""
    refused = ConnectionRefusedError(111, "Connection refused")
    error = httpx.ConnectError("Cannot connect")
    error.__cause__ = refused
    assert ssrf.blocked_cause(error) is None
