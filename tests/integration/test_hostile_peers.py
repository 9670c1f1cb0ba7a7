"""Hostile peers on real loopback sockets: an upstream and receivers that answer huge, endless,
slow, malformed or reset answers cost the bridge a bounded amount of time and memory.

Each test talks to a raw asyncio server through the bridge's own HTTP clients
(`service/http_clients.py`, the SSRF-guarded connector for deliveries). Times are measured
around the real call and compared with generous bounds; nothing sleeps and then asserts.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from service import config, ssrf
from service.clock import SystemClock
from service.config import DeliverySettings
from service.delivery import Deliverer
from service.delivery_leases import DeliveryLeases
from service.http_clients import transport
from service.ids import new_id
from service.metrics import Metrics
from service.observation import Observation
from service.sender import InlineSender
from service.signing import new_secret
from service.store.base import Completion, Delivery, NewDelivery, NewEvent, Watch
from service.store.sqlite import SQLiteStore
from service.upstream import DEFAULT_MAX_BODY_BYTES, UpstreamClient

TIMEOUT_S = 1.0
# What a loaded CI machine may add to a timeout before the bridge gives up and moves on.
SLACK_S = 5.0
HUGE = 50 * 1024 * 1024
CHUNK = b"x" * 65536
# Peak Python memory allowed while a peer offers 50 MiB or an endless body.
MEMORY_BOUND = 16 * 1024 * 1024
# What the compressed answers inflate to: eight times the memory bound.
BOMB_MIB = 128

Writer = asyncio.StreamWriter
Behaviour = Callable[["Peer", str, Writer], Awaitable[None]]


def _head(status: int, *headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status} Whatever", *headers, "Connection: close", "", ""]
    return "\r\n".join(lines).encode()


async def _send(peer: Peer, name: str, writer: Writer, data: bytes) -> None:
    writer.write(data)
    await writer.drain()
    peer.sent[name] = peer.sent.get(name, 0) + len(data)


def json_answer(document: object, status: int = 200) -> Behaviour:
    async def answer(peer: Peer, name: str, writer: Writer) -> None:
        body = document if isinstance(document, bytes) else orjson.dumps(document)
        headers = ("Content-Type: application/json", f"Content-Length: {len(body)}")
        await _send(peer, name, writer, _head(status, *headers) + body)

    return answer


def huge(status: int) -> Behaviour:
    """A 50 MiB body, announced in Content-Length."""

    async def answer(peer: Peer, name: str, writer: Writer) -> None:
        await _send(peer, name, writer, _head(status, f"Content-Length: {HUGE}"))
        for _ in range(HUGE // len(CHUNK)):
            await _send(peer, name, writer, CHUNK)

    return answer


def endless(status: int) -> Behaviour:
    """A chunked body that never ends."""

    async def answer(peer: Peer, name: str, writer: Writer) -> None:
        await _send(peer, name, writer, _head(status, "Transfer-Encoding: chunked"))
        frame = b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK)
        while True:
            await _send(peer, name, writer, frame)

    return answer


def compressed(codings: tuple[str, ...], body: bytes = b"", zeros_mib: int = 0) -> bytes:
    """`body`, then `zeros_mib` MiB of zeros, compressed with each of `codings` (gzip or
    deflate) in turn; as it goes: the zeros are never held whole."""
    pieces = [body, *[bytes(1 << 20)] * zeros_mib]
    for coding in codings:
        wbits = 16 + zlib.MAX_WBITS if coding == "gzip" else zlib.MAX_WBITS
        compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
        pieces = [b"".join(compressor.compress(piece) for piece in pieces) + compressor.flush()]
    return pieces[0]


def encoded(body: bytes, *encodings: str) -> Behaviour:
    """A 200 with `body` sent as it is, with a Content-Encoding header line per entry of
    `encodings`."""

    async def answer(peer: Peer, name: str, writer: Writer) -> None:
        headers = [f"Content-Encoding: {coding}" for coding in encodings]
        head = _head(
            200, "Content-Type: application/json", *headers, f"Content-Length: {len(body)}"
        )
        await _send(peer, name, writer, head + body)

    return answer


async def silent(peer: Peer, name: str, writer: Writer) -> None:
    """Accepts the request and never answers (the test's teardown ends it)."""
    await asyncio.Event().wait()


async def drip(peer: Peer, name: str, writer: Writer) -> None:
    """Answers the head at once, then one byte of the body every 50 ms, for ever."""
    await _send(peer, name, writer, _head(200, "Content-Length: 1000000"))
    while True:
        await _send(peer, name, writer, b"{")
        await asyncio.sleep(0.05)


async def reset(peer: Peer, name: str, writer: Writer) -> None:
    """Resets the connection (RST) instead of answering."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class Peer:
    """A loopback HTTP/1.1 server whose answer to a request is chosen by the last segment of
    its path. Counts the bytes it managed to send to each."""

    def __init__(self, behaviours: dict[str, Behaviour]) -> None:
        self.behaviours = behaviours
        self.sent: dict[str, int] = {}
        # The head of the last request each behaviour answered.
        self.heads: dict[str, bytes] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> Peer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: Writer) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b" ", 2)[1].decode()
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    await reader.readexactly(int(value))
            behaviour = target.rstrip("/").rsplit("/", 1)[-1]
            self.heads[behaviour] = head
            await self.behaviours[behaviour](self, behaviour, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the bridge hung up: what these tests want
        finally:
            writer.close()


@contextlib.contextmanager
def peak_memory() -> Iterator[list[int]]:
    """The peak of Python allocations inside the block, in bytes (filled in on exit)."""
    peak: list[int] = []
    tracemalloc.start()
    try:
        yield peak
    finally:
        peak.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


# The upstream.

UPSTREAM = {
    "huge": huge(200),
    "huge-error": huge(503),
    "endless": endless(200),
    "html": json_answer(b"<html><body>Bad gateway</body></html>", 200),
    "deep": json_answer(b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
    "deep-but-parseable": json_answer(b'{"a":' * 100 + b"1" + b"}" * 100),
    "status-42": json_answer({"id": "j", "status": 42}),
    "status-list": json_answer({"id": "j", "status": ["queued"]}),
    "output-string": json_answer({"id": "j", "status": "succeeded", "output": "done"}),
    "not-an-object": json_answer([1, 2, 3]),
    "silent": silent,
    "drip": drip,
    "reset": reset,
    "br": encoded(b"\x1b\x03\x00\xf8\xa5@\x02", "br"),
    # A gzip header, then a deflate block of the type that does not exist.
    "gzip-corrupt": encoded(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"\xff" * 16, "gzip"),
    "gzip-cut-short": encoded(compressed(("gzip",), b'{"status": "queued"}')[:-6], "gzip"),
}


@pytest.fixture(scope="session")
def bombs() -> dict[str, Behaviour]:
    """Answers compressed although the bridge asks for identity, that inflate to 128 MiB of
    zeros: from a few hundred bytes (gzipped twice, stacked) or 128 KiB (compressed once).
    Made once, before any test measures memory."""
    twice = compressed(("gzip", "gzip"), zeros_mib=BOMB_MIB)
    return {
        "gzip-gzip": encoded(twice, "gzip, gzip"),
        "gzip-then-gzip": encoded(twice, "gzip", "gzip"),
        "gzip-bomb": encoded(compressed(("gzip",), zeros_mib=BOMB_MIB), "gzip"),
        "deflate-bomb": encoded(compressed(("deflate",), zeros_mib=BOMB_MIB), "deflate"),
    }


@pytest.fixture
async def upstream(bombs: dict[str, Behaviour]) -> AsyncIterator[tuple[Peer, UpstreamClient]]:
    """A hostile upstream and the bridge's upstream client pointed at it, built as bridge.py
    builds it."""
    async with (
        Peer(UPSTREAM | bombs) as peer,
        transport(aiohttp.TCPConnector(limit_per_host=0)) as http,
    ):
        yield peer, UpstreamClient(http, peer.url, TIMEOUT_S)


@pytest.mark.parametrize(
    ("job", "reason"),
    [
        # Bodies past the cap: reading stops there (announced, or streamed without end).
        ("huge", f"more than {DEFAULT_MAX_BODY_BYTES} bytes"),
        ("huge-error", f"more than {DEFAULT_MAX_BODY_BYTES} bytes (HTTP 503)"),
        ("endless", f"more than {DEFAULT_MAX_BODY_BYTES} bytes"),
        # Bodies that are not a usable JSON object.
        ("html", "not JSON"),
        ("deep", "not JSON (depth limit exceeded"),  # 100,000 levels: orjson refuses
        ("deep-but-parseable", "nested more than 64 levels"),  # too deep to pass on
        ("not-an-object", "not an object but list"),
        # The right shape, the wrong types.
        ("status-42", "a status of type int: 42"),
        ("status-list", 'a status of type list: ["queued"]'),
        ("output-string", 'succeeded with an output of type str: "done"'),
        # No usable answer in time, or none at all.
        ("silent", "did not answer in time"),
        ("drip", "did not answer in time"),
        ("reset", "upstream request failed"),
        # Compressed bodies: never inflated past the cap, never decoded twice.
        ("gzip-gzip", "a body encoded more than once: gzip, gzip (HTTP 200)"),
        ("gzip-then-gzip", "a body encoded more than once: gzip, gzip (HTTP 200)"),
        ("gzip-bomb", f"more than {DEFAULT_MAX_BODY_BYTES} bytes (HTTP 200)"),
        ("deflate-bomb", f"more than {DEFAULT_MAX_BODY_BYTES} bytes (HTTP 200)"),
        ("br", "a body encoded 'br', which the bridge does not decode"),
        ("gzip-corrupt", "a gzip body that does not decode"),
        ("gzip-cut-short", "a gzip body cut short"),
    ],
)
async def test_hostile_upstream_answers_are_transient(
    upstream: tuple[Peer, UpstreamClient], job: str, reason: str
) -> None:
    """Every bad answer is a transient failure saying why, within the request timeout, and
    holding at most about the body cap in memory."""
    peer, client = upstream
    with peak_memory() as peak:
        started = time.perf_counter()
        seen = await client.fetch(job, None)
        elapsed = time.perf_counter() - started
    assert seen.kind == "transient", seen
    assert seen.error is not None
    assert reason in seen.error, seen.error
    assert elapsed < TIMEOUT_S + SLACK_S, elapsed
    assert peak[0] < MEMORY_BOUND, peak[0]
    assert peer.sent.get(job, 0) < HUGE  # whatever was offered, it was not all taken


async def test_a_bad_queue_position_is_dropped_not_trusted(
    upstream: tuple[Peer, UpstreamClient],
) -> None:
    """queue_position "x" (or a number no queue has) leaves the position unknown; the status
    itself is good, so the poll counts as progress."""
    peer, client = upstream
    peer.behaviours["position-x"] = json_answer({"status": "queued", "queue_position": "x"})
    peer.behaviours["position-negative"] = json_answer({"status": "queued", "queue_position": -1})
    peer.behaviours["position-huge"] = json_answer({"status": "queued", "queue_position": 2**40})
    for job in ("position-x", "position-negative", "position-huge"):
        seen = await client.fetch(job, None)
        assert seen == Observation(
            "progress", "queued", None, seen.body, seen.document, http_status=200
        )


async def test_a_compressed_answer_under_the_cap_is_read(
    upstream: tuple[Peer, UpstreamClient],
) -> None:
    """The bridge asks for identity, yet reads an answer compressed once (gzip or deflate) and
    under the cap as if it were plain."""
    peer, client = upstream
    document = {"status": "queued", "queue_position": 3, "pad": "x" * 1000}
    for coding in ("gzip", "deflate"):
        peer.behaviours[coding] = encoded(compressed((coding,), orjson.dumps(document)), coding)
        seen = await client.fetch(coding, None)
        assert (seen.kind, seen.queue_position, seen.document) == ("progress", 3, document)
        assert b"\r\naccept-encoding: identity\r\n" in peer.heads[coding].lower()


async def test_a_compressed_answer_to_a_generation_is_bounded_too(
    upstream: tuple[Peer, UpstreamClient],
) -> None:
    """Starting a job: an answer gzipped twice fails without being inflated, one gzipped once
    fails past the cap; the bridge asked for identity."""
    peer, client = upstream
    for behaviour, reason in (
        ("gzip-gzip", "a body encoded more than once: gzip, gzip (HTTP 200)"),
        ("gzip-bomb", f"more than {DEFAULT_MAX_BODY_BYTES} bytes (HTTP 200)"),
    ):
        peer.behaviours["generate"] = peer.behaviours[behaviour]
        with peak_memory() as peak:
            seen = await client.create(b'{"prompt": "a cat"}', "bw_key", None)
        assert (seen.kind, seen.http_status) == ("failed", 200)
        assert seen.error == f"upstream answered {reason}", seen.error
        assert peak[0] < MEMORY_BOUND, peak[0]
        assert b"\r\naccept-encoding: identity\r\n" in peer.heads["generate"].lower()


# The receivers.

RECEIVERS = {
    "endless": endless(503),
    "endless-ok": endless(200),
    "huge": huge(500),
    "silent": silent,
    "drip": drip,
    "reset": reset,
}


@pytest.fixture
async def receivers(tmp_path: Path) -> AsyncIterator[tuple[Peer, SQLiteStore, Deliverer]]:
    """Hostile receivers, a real SQLite store, and a Deliverer built as bridge.py builds it."""
    settings = config.load(
        environ={
            "BRIDGE_CONFIG": str(Path(__file__).parents[2] / "config" / "bridge.toml"),
            "BRIDGE_STORE__URL": f"sqlite:///{tmp_path}/bridge.db",
            "BRIDGE_DELIVERY__TIMEOUT_S": str(TIMEOUT_S),
            # The receivers listen on loopback.
            "BRIDGE_SECURITY__ALLOW_PRIVATE_CALLBACKS": "true",
        }
    )
    policy = ssrf.CallbackPolicy(
        allow_private=settings.security.allow_private_callbacks,
        allow_cidrs=settings.security.allowed_networks,
        require_https=settings.security.require_https,
    )
    store = SQLiteStore(str(tmp_path / "bridge.db"))
    await store.open()
    connector = ssrf.GuardedConnector(policy, limit=settings.delivery.max_concurrency)
    try:
        async with (
            Peer(dict(RECEIVERS)) as peer,
            transport(connector) as http,
        ):
            owner = "hostile-peers"
            sender = InlineSender(
                http, settings.delivery.timeout_s, settings.delivery.max_response_bytes
            )
            clock = SystemClock()
            leases = DeliveryLeases(store, clock, owner, settings.store.lease_s, Metrics())
            yield peer, store, Deliverer(leases, sender, settings.delivery, clock)
    finally:
        await store.close()


async def _delivery_to(store: SQLiteStore, url: str, owner: str) -> tuple[Watch, Delivery]:
    """A watch whose final event is ready to send to `url`, its delivery held by `owner`."""
    now = time.time()
    watch = Watch(
        id=new_id("wch", now), tenant="", job_id="job_1", callback_url=url,
        callback_method="POST", callback_headers={}, metadata=None,
        events=("job.succeeded", "job.failed"), payload_format="envelope", secret=new_secret(),
        poll_interval_s=2.5, timeout_s=300.0, upstream_api_key=None, created_at=now,
        updated_at=now, next_poll_at=now,
    )  # fmt: skip
    await store.insert_watch(watch, lease_owner=owner, lease_until=now + 60)
    body = b'{"type": "job.succeeded"}'
    final = NewDelivery(new_id("msg", now), "job.succeeded", body, True)
    event = NewEvent(new_id("evt", now), "job.succeeded", True, body, final)
    [delivery] = await store.complete_watch(
        owner, now, Completion(watch.id, 1, "succeeded", None, event), now + 60
    )
    return watch, delivery


@pytest.mark.parametrize(
    ("receiver", "status_code", "error"),
    [
        # A 503 whose body never ends: the status is read, 4 KiB of the body, no more.
        ("endless", 503, "HTTP 503"),
        # The same with a 200: delivered, and no waiting for the end of the body.
        ("endless-ok", 200, None),
        # 50 MiB announced with a 500.
        ("huge", 500, "HTTP 500"),
        # No answer at all, or a body one byte at a time: cut at the attempt timeout.
        ("silent", None, f"timed out after {TIMEOUT_S:g} s"),
        ("drip", None, f"timed out after {TIMEOUT_S:g} s"),
        # The connection reset instead of an answer.
        ("reset", None, "connection reset by the receiver"),
    ],
)
async def test_hostile_receivers_cost_one_bounded_attempt(
    receivers: tuple[Peer, SQLiteStore, Deliverer],
    receiver: str,
    status_code: int | None,
    error: str | None,
) -> None:
    """The attempt is recorded within the attempt timeout, reading at most a few KiB of
    whatever the receiver sends, and keeping no more of it than it read (a body cut there is
    marked so)."""
    peer, store, deliverer = receivers
    watch, delivery = await _delivery_to(store, f"{peer.url}/{receiver}", "hostile-peers")
    with peak_memory() as peak:
        started = time.perf_counter()
        deliverer.submit(delivery)
        await deliverer.drain(grace_s=60)
        elapsed = time.perf_counter() - started
    [attempt] = await store.list_attempts("", watch.id)
    assert attempt.status_code == status_code, attempt
    if error is None:
        assert attempt.error is None
    else:
        assert attempt.error is not None
        assert error in attempt.error, attempt.error
    if status_code is None:
        assert attempt.response is None
    else:
        assert attempt.response is not None
        assert attempt.response.size == DeliverySettings().max_response_bytes
        assert attempt.response.truncated
    assert elapsed < TIMEOUT_S + SLACK_S, elapsed
    assert attempt.duration_s < TIMEOUT_S + SLACK_S
    assert peak[0] < MEMORY_BOUND, peak[0]
    assert peer.sent.get(receiver, 0) < HUGE
