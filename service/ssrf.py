"""Keep callback URLs from reaching anything but the public internet (SSRF guard).

Clients register the URLs we POST webhooks to, so without a guard a client could make us
call our own admin ports, the cloud metadata service or anything else on our network.

The rule: by default a callback may only reach *public* addresses. Every address a callback
host resolves to is judged against `_V4_RANGES` / `_V6_RANGES` below, our own explicit table
(Python before 3.12.4 misclassifies some ranges in `ipaddress.is_private` / `is_global`, so we
do not lean on them). One blocked address blocks the whole URL.

Two places apply it:

* `check_url`, at registration time, so the client gets a 422 with a reason it can act on
  (`check_field` names the request's field).
* `GuardedConnector`, at connect time, for every request (redirects included), so a name
  that resolved to a public address at registration and to 10.0.0.5 now (DNS rebinding) is
  still refused. The connector resolves each name once, checks every answer, and connects
  to exactly the checked addresses: there is no second lookup to race. TLS still verifies
  the hostname of the URL (aiohttp's ``server_hostname`` is left alone).

How the connector hooks into aiohttp (3.14), through its public API only:

* `GuardedResolver`, the connector's ``resolver``, wraps the real resolver and refuses blocked
  answers. aiohttp caches what a resolver returns, so blocked answers never enter its DNS cache.
* aiohttp hands IP literals to no resolver (every IPv6 literal, all-digit IPv4), and refuses
  non-canonical IPv4 such as ``127.1`` itself, without our reason, while ``0x7f.1`` still goes
  to the resolver. `GuardedConnector` overrides ``connect``, which every request of a session
  calls before a connection is taken or made, and refuses a URL whose host is a blocked literal
  in any spelling. It raises what aiohttp raises for a host it cannot resolve,
  `aiohttp.ClientConnectorDNSError`, so the refusal surfaces as an ordinary connection error
  that keeps our reason.
* The connector's ``socket_factory`` checks the address of every socket aiohttp opens, just
  before it connects: whatever the path to it, no connection goes to an address not checked.

With an HTTP proxy (the bridge's sessions use none) the connection goes to the proxy, so a
callback host's name is resolved by the proxy, not checked here: only literals and the proxy's
own address are.

Registration resolves a callback host through `HostLookups`: getaddrinfo cannot be cancelled,
so a host whose DNS servers never answer holds its thread until the system resolver gives up.
On the event loop's default executor it would hold a thread that the connect-time lookups of
deliveries and polls (aiohttp's ThreadedResolver) need, so registration's lookups have threads
of their own, and a time limit.

Exceptions::

    CallbackBlocked         a URL or address is refused (registration: reply 422)
    errors.InvalidRequest   the same refusal, naming the request's field (`check_field`)
    errors.Busy             every thread of registration's lookups is held (reply 503)
    OSError
     └── CallbackBlockedError   the same refusal at connect time, as aiohttp expects it
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import TYPE_CHECKING, Any

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult

from service.clock import Clock
from service.errors import Busy, InvalidRequest, retry_after_header

if TYPE_CHECKING:
    from aiohappyeyeballs import AddrInfoType, SocketFactoryType
    from aiohttp.connector import Connection
    from aiohttp.tracing import Trace

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
Resolve = Callable[[str, int], Awaitable[list[IPAddress]]]

_HINT = "set security.allow_private_callbacks or add an allowed CIDR"
# Registration's lookups of callback hosts at once: each holds a thread, for as long as the
# system resolver waits for an answer when a host's DNS servers do not answer.
LOOKUP_THREADS = 8


class CallbackBlocked(Exception):
    """A callback URL or address is refused by the SSRF policy."""

    code = "callback_blocked"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        """A sentence a person can act on, naming the host, the address and the way out."""


class CallbackBlockedError(OSError):
    """A connection refused by the SSRF policy, raised inside aiohttp's connector.

    An `OSError`, so aiohttp wraps it in `aiohttp.ClientConnectorDNSError` (or
    `ClientConnectorError`) like any failed connection; ``strerror`` is the reason, which
    aiohttp prints between brackets: ``Cannot connect to host ... [the URL resolves to ...]``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(errno.EACCES, reason)
        self.reason = reason


@dataclass(frozen=True)
class CallbackPolicy:
    """What callbacks may reach.

    Attributes:
        allow_private: allow every address, blocked ranges included (tests, private deployments).
        allow_cidrs: networks allowed although our table blocks them (e.g. an internal receiver).
        require_https: refuse ``http://`` callback URLs.
    """

    allow_private: bool = False
    allow_cidrs: tuple[IPNetwork, ...] = ()
    require_https: bool = False


# --- Which addresses are blocked -------------------------------------------------------------


def _low32(address: IPv6Address) -> IPv4Address:
    """The IPv4 address in the last 32 bits (IPv4-compatible, NAT64 /96)."""
    return IPv4Address(int(address) & 0xFFFF_FFFF)


def _sixtofour(address: IPv6Address) -> IPv4Address:
    """The IPv4 address in bits 16-47 of a 6to4 address."""
    embedded = address.sixtofour
    assert embedded is not None  # only called for addresses in 2002::/16
    return embedded


def _teredo_client(address: IPv6Address) -> IPv4Address:
    """The (de-obfuscated) client IPv4 address of a Teredo address: where traffic ends up."""
    pair = address.teredo
    assert pair is not None  # only called for addresses in 2001::/32
    return pair[1]


def _mapped(address: IPv6Address) -> IPv4Address:
    """The IPv4 address of an IPv4-mapped IPv6 address."""
    embedded = address.ipv4_mapped
    assert embedded is not None  # only called for addresses in ::ffff:0:0/96
    return embedded


@dataclass(frozen=True)
class _Range:
    """One row of the blocked-address table.

    ``embedded`` extracts an IPv4 address the IPv6 address carries. With ``delegate`` the
    verdict is that of the embedded address (public stays public); without it the range is
    blocked outright and the embedded address only makes the reason clearer.
    """

    network: IPNetwork
    phrase: str
    embedded: Callable[[IPv6Address], IPv4Address] | None = None
    delegate: bool = False


def _v4(cidr: str, phrase: str) -> _Range:
    return _Range(IPv4Network(cidr), phrase)


def _v6(
    cidr: str,
    phrase: str,
    embedded: Callable[[IPv6Address], IPv4Address] | None = None,
    *,
    delegate: bool = False,
) -> _Range:
    return _Range(IPv6Network(cidr), phrase, embedded, delegate)


# First match wins, so a specific row (a metadata address) sits before its enclosing range.
_V4_RANGES: tuple[_Range, ...] = (
    _v4("0.0.0.0/32", "an unspecified address"),  # RFC 1122 §3.2.1.3; Linux connects it to us
    _v4("0.0.0.0/8", "a 'this network' address"),  # RFC 791, RFC 1122 §3.2.1.3
    _v4("10.0.0.0/8", "a private address"),  # RFC 1918
    _v4("100.100.100.200/32", "a shared address (cloud metadata)"),  # Alibaba Cloud metadata
    _v4("100.64.0.0/10", "a carrier-grade NAT shared address"),  # RFC 6598
    _v4("127.0.0.0/8", "a loopback address"),  # RFC 1122 §3.2.1.3
    _v4("168.63.129.16/32", "an Azure platform address (cloud metadata)"),  # Azure WireServer
    _v4("169.254.169.254/32", "a link-local address (cloud metadata)"),  # AWS, GCP, Azure IMDS
    _v4("169.254.0.0/16", "a link-local address"),  # RFC 3927
    _v4("172.16.0.0/12", "a private address"),  # RFC 1918
    _v4("192.0.0.192/32", "an IETF protocol address (cloud metadata)"),  # Oracle Cloud metadata
    _v4("192.0.0.0/24", "an IETF protocol assignment address"),  # RFC 6890 §2.2.2
    _v4("192.0.2.0/24", "a documentation address"),  # RFC 5737 TEST-NET-1
    _v4("192.88.99.0/24", "a deprecated 6to4 relay anycast address"),  # RFC 7526
    _v4("192.168.0.0/16", "a private address"),  # RFC 1918
    _v4("198.18.0.0/15", "a benchmarking address"),  # RFC 2544
    _v4("198.51.100.0/24", "a documentation address"),  # RFC 5737 TEST-NET-2
    _v4("203.0.113.0/24", "a documentation address"),  # RFC 5737 TEST-NET-3
    _v4("224.0.0.0/4", "a multicast address"),  # RFC 5771
    _v4("255.255.255.255/32", "a broadcast address"),  # RFC 919, RFC 8190
    _v4("240.0.0.0/4", "a reserved address"),  # RFC 1112 §4
)

# IPv6 ranges that carry an IPv4 address. IPv4-mapped addresses are judged by the IPv4 address:
# a dual-stack socket connects to exactly that address, nothing else is involved. The others
# are blocked outright, the safer choice: with them a translator or relay we do not control
# (a NAT64 gateway that often sits inside our own network, a 6to4 relay, a Teredo server)
# picks the real destination, NAT64 may use other prefixes and layouts (RFC 6052 §2.2), and
# 6to4, Teredo and IPv4-compatible addresses are deprecated. A deployment that reaches
# IPv4-only receivers through DNS64 can list its NAT64 prefix in allow_cidrs.
_V6_RANGES: tuple[_Range, ...] = (
    _v6("::/128", "an unspecified address"),  # RFC 4291 §2.5.2
    _v6("::1/128", "a loopback address"),  # RFC 4291 §2.5.3
    _v6("::ffff:0:0/96", "an IPv4-mapped IPv6 address", _mapped, delegate=True),  # RFC 4291
    _v6("::/96", "a deprecated IPv4-compatible IPv6 address", _low32),  # RFC 4291 §2.5.5.1
    _v6("64:ff9b::/96", "a NAT64 address", _low32),  # RFC 6052
    _v6("64:ff9b:1::/48", "a local-use NAT64 address"),  # RFC 8215
    _v6("100::/64", "a discard-only address"),  # RFC 6666
    _v6("2001::/32", "a Teredo address", _teredo_client),  # RFC 4380
    _v6("2001:2::/48", "a benchmarking address"),  # RFC 5180
    _v6("2001:db8::/32", "a documentation address"),  # RFC 3849
    _v6("2001::/23", "an IETF protocol assignment address"),  # RFC 2928 (ORCHID, AMT, ...)
    _v6("2002::/16", "a 6to4 address", _sixtofour),  # RFC 3056, deprecated by RFC 7526
    _v6("3fff::/20", "a documentation address"),  # RFC 9637
    _v6("fd00:ec2::254/128", "a unique-local address (cloud metadata)"),  # AWS IMDS over IPv6
    _v6("fc00::/7", "a unique-local address"),  # RFC 4193
    _v6("fe80::/10", "a link-local address"),  # RFC 4291 §2.5.6
    _v6("fec0::/10", "a deprecated site-local address"),  # RFC 3879
    _v6("ff00::/8", "a multicast address"),  # RFC 4291 §2.7
    # Outside 2000::/3 (global unicast) everything is reserved by the IETF: RFC 4291 §2.4 and
    # the IANA IPv6 address space registry. One row per unallocated block:
    _v6("::/8", "a reserved address"),  # RFC 4291 (the rest of ::/8, e.g. ::ffff:0:0:0/96)
    _v6("100::/8", "a reserved address"),  # RFC 4291
    _v6("200::/7", "a reserved address"),  # RFC 4048 (ex-NSAP)
    _v6("400::/6", "a reserved address"),  # RFC 4291
    _v6("800::/5", "a reserved address"),  # RFC 4291
    _v6("1000::/4", "a reserved address"),  # RFC 4291
    _v6("4000::/3", "a reserved address"),  # RFC 4291 (includes SRv6 SIDs 5f00::/16, RFC 9602)
    _v6("6000::/3", "a reserved address"),  # RFC 4291
    _v6("8000::/3", "a reserved address"),  # RFC 4291
    _v6("a000::/3", "a reserved address"),  # RFC 4291
    _v6("c000::/3", "a reserved address"),  # RFC 4291
    _v6("e000::/4", "a reserved address"),  # RFC 4291
    _v6("f000::/5", "a reserved address"),  # RFC 4291
    _v6("f800::/6", "a reserved address"),  # RFC 4291
    _v6("fe00::/9", "a reserved address"),  # RFC 4291
)


def blocked_reason(address: IPAddress) -> str | None:
    """Say why `address` is not public ("a private address", ...), or None when it is.

    Ignores any policy: this is the table alone. IPv6 zone ids do not change the verdict.
    """
    if isinstance(address, IPv6Address):
        address = IPv6Address(int(address))  # drop the zone id
        ranges = _V6_RANGES
    else:
        ranges = _V4_RANGES
    for row in ranges:
        if address not in row.network:
            continue
        if row.embedded is None:
            return row.phrase
        assert isinstance(address, IPv6Address)
        embedded = row.embedded(address)
        inner = blocked_reason(embedded)
        if inner is None:
            return None if row.delegate else f"{row.phrase} of {embedded}"
        return f"{row.phrase} of {embedded}, {inner}"
    return None


# --- Reading hosts ----------------------------------------------------------------------------

# What inet_aton(3) may read as an IPv4 address: it would also take text after a space.
_V4_CHARACTERS = re.compile(r"[0-9A-Fa-fXx.]+")


def _parse_v4(text: str) -> IPv4Address | None:
    """Read an IPv4 address in any spelling inet_aton accepts: 1 to 4 parts, each in any base,
    the last filling the remaining bytes (``127.1`` is 127.0.0.1, ``2130706433`` too)."""
    if not _V4_CHARACTERS.fullmatch(text):
        return None
    try:
        return IPv4Address(socket.inet_aton(text))
    except OSError:
        return None


def parse_ip_literal(host: str) -> IPAddress | None:
    """Read `host` (the host part of a URL) as an IP address, or None when it is a name.

    Accepts every IPv4 spelling inet_aton does (decimal, octal, hex, 1 to 4 parts), one
    trailing dot (the fully-qualified form), and IPv6 with or without brackets; a zone id
    (``%eth0`` or URL-encoded ``%25eth0``) is dropped.
    """
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            return None
    if ":" in host:
        try:
            return IPv6Address(host.partition("%")[0])
        except ValueError:
            return None
    return _parse_v4(host.removesuffix("."))


# --- Applying the policy ------------------------------------------------------------------


def _refusal(address: IPAddress, policy: CallbackPolicy, host: str | None) -> str | None:
    """The CallbackBlocked reason for `address` under `policy`, or None when it is allowed."""
    if policy.allow_private:
        return None
    # An IPv4-mapped address is the IPv4 address, so an IPv4 CIDR covers it too.
    candidates = [address]
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)
    if any(candidate in cidr for candidate in candidates for cidr in policy.allow_cidrs):
        return None
    phrase = blocked_reason(address)
    if phrase is None:
        return None
    if host is None:
        return f"the URL resolves to {address}, {phrase}; {_HINT}"
    literal = parse_ip_literal(host)
    if literal is None:
        return f"host {host} resolves to {address}, {phrase}; {_HINT}"
    if host.strip("[]") == str(address):
        return f"host {host} is {phrase}; {_HINT}"
    return f"host {host} is {address}, {phrase}; {_HINT}"


def check_address(address: IPAddress, policy: CallbackPolicy, *, host: str | None = None) -> None:
    """Raise CallbackBlocked unless `policy` lets callbacks reach `address`.

    Allowed: public addresses, everything with ``allow_private``, and addresses inside one of
    ``allow_cidrs``. `host`, when given, is the URL host the address came from (for the reason).
    """
    reason = _refusal(address, policy, host)
    if reason is not None:
        raise CallbackBlocked(reason)


def _addresses(infos: Sequence[tuple[Any, ...]]) -> list[IPAddress]:
    """The IP addresses of getaddrinfo's answers."""
    addresses: list[IPAddress] = []
    for *_, sockaddr in infos:
        address = parse_ip_literal(str(sockaddr[0]))
        if address is not None:
            addresses.append(address)
    return addresses


async def _getaddrinfo(host: str, port: int) -> list[IPAddress]:
    """Resolve `host` with the event loop's getaddrinfo (the system resolver)."""
    loop = asyncio.get_running_loop()
    return _addresses(await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))


class HostLookups:
    """Registration's lookups of callback hosts (a `Resolve` for `check_url`): the system
    resolver on `LOOKUP_THREADS` threads of their own, each lookup given `timeout_s` of
    `clock`'s time, its wait for a free thread included.

    A lookup its DNS servers do not answer in time is a `CallbackBlocked` naming the host; its
    thread is held until the resolver gives up. One that found no free thread in time is
    dropped unstarted, a `Busy` to retry after `timeout_s`."""

    def __init__(self, clock: Clock, timeout_s: float, threads: int = LOOKUP_THREADS) -> None:
        self._clock = clock
        self._timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="callback-lookup")

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        loop = asyncio.get_running_loop()
        answered = asyncio.Event()

        def wake(_: Future[Any]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(answered.set)

        lookup = self._pool.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        lookup.add_done_callback(wake)
        try:
            await self._clock.wait(answered, self._timeout_s)
        finally:
            unstarted = lookup.cancel()  # only a lookup still waiting for a thread is dropped
        if unstarted:
            raise Busy(
                f"host {host} could not be looked up within {self._timeout_s:g} s: every lookup "
                "of callback hosts is waiting for DNS servers that do not answer; retry later",
                retry_after=retry_after_header(self._timeout_s),
            )
        if not lookup.done():
            raise CallbackBlocked(
                f"host {host} did not resolve within {self._timeout_s:g} s "
                "(security.callback_dns_timeout_s): its DNS servers did not answer in time"
            )
        return _addresses(lookup.result())

    def close(self) -> None:
        """Drop the lookups still waiting for a thread; those under way end on their own."""
        self._pool.shutdown(wait=False, cancel_futures=True)


async def check_url(url: str, policy: CallbackPolicy, resolve: Resolve | None = None) -> None:
    """Raise CallbackBlocked unless `url` is a callback URL `policy` allows, right now.

    Checks the scheme (http or https; https alone with ``require_https``), that there is a
    host, then resolves the host (`resolve`, default the system resolver) and checks every
    address: one blocked address refuses the URL. IP literals are not resolved.
    """
    try:
        parsed = yarl.URL(url)
    except (ValueError, TypeError) as exc:
        raise CallbackBlocked(f"not a valid URL: {exc}") from exc
    scheme = parsed.scheme.lower()
    if not scheme:
        raise CallbackBlocked("must be an absolute http or https URL")
    if scheme not in ("http", "https"):
        raise CallbackBlocked(f"must use http or https, not {scheme!r}")
    if policy.require_https and scheme != "https":
        raise CallbackBlocked("must use https (security.require_https is set)")
    host = parsed.raw_host
    if not host:
        raise CallbackBlocked("has no host")

    literal = parse_ip_literal(host)
    if literal is not None:
        check_address(literal, policy, host=host)
        return
    if ":" in host:
        raise CallbackBlocked(f"host {host} is not a valid IPv6 address")
    try:
        addresses = await (resolve or _getaddrinfo)(host, parsed.port or 0)
    except OSError as exc:
        raise CallbackBlocked(f"host {host} could not be resolved: {exc}") from exc
    except UnicodeError:  # a label over 63 characters, or an empty one
        raise CallbackBlocked(f"host {host} is not a valid host name") from None
    if not addresses:
        raise CallbackBlocked(f"host {host} could not be resolved: no addresses")
    for address in addresses:
        check_address(address, policy, host=host)


async def check_field(
    name: str, url: str, policy: CallbackPolicy, resolve: Resolve | None = None
) -> None:
    """`check_url`, its refusal the `InvalidRequest` of the request's field `name`."""
    try:
        await check_url(url, policy, resolve)
    except CallbackBlocked as blocked:
        raise InvalidRequest.field(name, blocked.reason) from None


# --- Connect time: aiohttp ------------------------------------------------------------------


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that refuses hosts resolving to any address `policy` blocks.

    Returns the inner resolver's answers unchanged when all are allowed, so aiohttp connects
    to exactly the checked addresses. Raises CallbackBlockedError (an OSError) otherwise.
    """

    def __init__(self, policy: CallbackPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._owns_inner = inner is None
        self._inner = inner if inner is not None else aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve `host` with the inner resolver and check every answer."""
        results = await self._inner.resolve(host, port, family)
        if not results:
            raise OSError(errno.EHOSTUNREACH, f"host {host} resolved to no address")
        for result in results:
            address = parse_ip_literal(result["host"])
            if address is None:
                raise CallbackBlockedError(
                    f"host {host} resolved to {result['host']!r}, not an IP address"
                )
            reason = _refusal(address, self._policy, host)
            if reason is not None:
                raise CallbackBlockedError(reason)
        return results

    async def close(self) -> None:
        """Close the inner resolver if this resolver created it."""
        if self._owns_inner:
            await self._inner.close()


def _guarded_socket_factory(
    policy: CallbackPolicy, inner: SocketFactoryType | None
) -> SocketFactoryType:
    """A socket factory that refuses to open a socket towards a blocked address."""

    def open_socket(addr_info: AddrInfoType) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        target = str(sockaddr[0])
        address = parse_ip_literal(target)
        if address is None:
            raise CallbackBlockedError(f"the URL connects to {target!r}, not an IP address")
        reason = _refusal(address, policy, None)
        if reason is not None:
            raise CallbackBlockedError(reason)
        if inner is not None:
            return inner(addr_info)
        return socket.socket(family=family, type=type_, proto=proto)

    return open_socket


class GuardedConnector(aiohttp.TCPConnector):
    """The connector of callback sessions, connecting only to addresses `policy` allows (see
    the module doc).

    Names are checked by a GuardedResolver wrapped around `resolver` (default: aiohttp's
    ThreadedResolver); IP literals, which aiohttp never hands to a resolver, are checked in
    `connect`; each socket is checked once more as it is opened, after `socket_factory`'s
    check if one is given. `kwargs` go to aiohttp.TCPConnector (``limit``, ...).
    """

    def __init__(
        self,
        policy: CallbackPolicy,
        *,
        resolver: AbstractResolver | None = None,
        socket_factory: SocketFactoryType | None = None,
        **kwargs: Any,
    ) -> None:
        self._guard = GuardedResolver(policy, resolver)
        super().__init__(
            resolver=self._guard,
            socket_factory=_guarded_socket_factory(policy, socket_factory),
            **kwargs,
        )
        self._policy = policy

    async def connect(
        self,
        req: aiohttp.ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's signature, passed on
    ) -> Connection:
        """Refuse a URL whose host is a blocked IP literal, then connect as aiohttp does."""
        host = req.url.raw_host or ""
        literal = parse_ip_literal(host)
        if literal is not None:
            # Before aiohttp's own handling, which rejects odd spellings (127.1) less clearly.
            reason = _refusal(literal, self._policy, host)
            if reason is not None:
                blocked = CallbackBlockedError(reason)
                raise aiohttp.ClientConnectorDNSError(req.connection_key, blocked) from blocked
        return await super().connect(req, traces, timeout)

    async def close(self, *, abort_ssl: bool = False) -> None:
        """Close connections, then the resolver this connector created."""
        await super().close(abort_ssl=abort_ssl)
        await self._guard.close()


def causes(failure: BaseException) -> list[BaseException]:
    """`failure` and what caused it, outermost first (each once); aiohttp's connection errors
    hold the OS's error as `os_error`."""
    chain: list[BaseException] = []
    current: BaseException | None = failure
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        underneath = current.__cause__ or current.__context__
        if underneath is None and isinstance(current, aiohttp.ClientConnectorError):
            underneath = current.os_error
        current = underneath
    return chain


def blocked_cause(exc: BaseException) -> CallbackBlockedError | None:
    """Find the policy refusal behind a client error (aiohttp's or httpx's), if there is one.

    httpx-aiohttp reports a refused connection as `httpx.ConnectTimeout`, so callers that
    must tell "blocked" (permanent) from "timed out" (retry) ask this.
    """
    return next((e for e in causes(exc) if isinstance(e, CallbackBlockedError)), None)
