"""Both senders (`service/sender.py`) against a real loopback server: the same answers for the
same requests, whether the request is made in this process or in a sender process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from typing import Any, Protocol

import pytest
from aiohttp import web

from service.config import DeliverySettings, LogSettings, SecuritySettings
from service.http_clients import delivery_transport
from service.sender import InlineSender, ProcessSender, Sender
from tests.loopback import Handler, eventually, loopback_server

DELIVERY = DeliverySettings(timeout_s=0.5, max_response_bytes=64)
ALLOWED = SecuritySettings(allow_private_callbacks=True)
REFUSED = SecuritySettings(allow_private_callbacks=False)
LOGS = LogSettings(level="warning", format="json")

Received = list[tuple[str, str, dict[str, str], bytes]]


SLOW_STARTED: dict[str, asyncio.Event] = {}


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, Received]]:
    """Answers by path: /ok 200, /busy 503 with Retry-After, /moved 302, /slow after 2 s (and
    sets SLOW_STARTED["event"] on arrival), /big a body larger than the senders read, /oops a
    500 with a JSON body, /exact a body as long as the senders read, /binary one that is not
    text; records every request it gets."""
    received: Received = []
    SLOW_STARTED["event"] = asyncio.Event()

    async def handle(request: web.Request) -> web.StreamResponse:
        received.append((request.method, request.path, dict(request.headers), await request.read()))
        if request.path == "/busy":
            return web.Response(status=503, headers={"Retry-After": "7"})
        if request.path == "/moved":
            raise web.HTTPFound("/elsewhere")
        if request.path == "/slow":
            SLOW_STARTED["event"].set()
            await asyncio.sleep(2)
        if request.path == "/big":
            return web.Response(body=b"x" * 1_000_000)
        if request.path == "/oops":
            return web.json_response({"error": "database down"}, status=500)
        if request.path == "/exact":
            return web.Response(body=b"e" * DELIVERY.max_response_bytes)
        if request.path == "/binary":
            return web.Response(body=b"\x89PNG\r\n\x1a\n\xff\xfe", content_type="image/png")
        return web.Response(text="thanks")

    async with loopback_server(handle, client_max_size=4 << 20) as base:
        yield base, received


class MakeSender(Protocol):
    def __call__(
        self, security: SecuritySettings, delivery: DeliverySettings = DELIVERY
    ) -> Sender: ...


def inline(security: SecuritySettings, delivery: DeliverySettings) -> Sender:
    transport = delivery_transport(delivery, security)
    return InlineSender(transport, delivery.timeout_s, delivery.max_response_bytes)


def in_process(security: SecuritySettings, delivery: DeliverySettings) -> Sender:
    return ProcessSender(delivery, security, LOGS)


@pytest.fixture(params=[inline, in_process], ids=["inline", "process"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[MakeSender]:
    made: list[Sender] = []

    def build(security: SecuritySettings, delivery: DeliverySettings = DELIVERY) -> Sender:
        made.append(request.param(security, delivery))
        return made[-1]

    try:
        yield build
    finally:
        for sender in made:
            await sender.aclose()


HEADERS = {"content-type": "application/json", "webhook-id": "msg_1", "x-trace": "on"}


async def test_a_request_arrives_as_sent_and_its_answer_comes_back(
    make: MakeSender, server: tuple[str, Received]
) -> None:
    """Method, path, headers and body reach the receiver unchanged; 2xx has no error."""
    base, received = server
    sender = make(ALLOWED)

    answer = await sender.send("PUT", f"{base}/ok", HEADERS, b'{"n": 1}')
    assert answer == (200, None, None, b"thanks", False, "text/plain; charset=utf-8")

    [(method, path, headers, body)] = received
    assert (method, path, body) == ("PUT", "/ok", b'{"n": 1}')
    assert {k.lower(): v for k, v in headers.items()}.items() >= HEADERS.items()


async def test_statuses_retry_after_redirects_and_big_bodies(
    make: MakeSender, server: tuple[str, Received]
) -> None:
    """A 5xx comes back with its Retry-After, a redirect is not followed, a large answer body
    is read no further than the cap."""
    base, received = server
    sender = make(ALLOWED)

    busy = await sender.send("POST", f"{base}/busy", HEADERS, b"{}")
    assert busy[:3] == (503, "7", "HTTP 503")
    moved = await sender.send("POST", f"{base}/moved", HEADERS, b"{}")
    assert moved[:3] == (302, None, "HTTP 302 (redirects are not followed)")
    big = await sender.send("POST", f"{base}/big", HEADERS, b"{}")
    assert big == (200, None, None, b"x" * DELIVERY.max_response_bytes, True,
                   "application/octet-stream")  # fmt: skip
    assert [path for _, path, _, _ in received] == ["/busy", "/moved", "/big"]


async def test_the_start_of_the_answer_comes_back_with_its_type(
    make: MakeSender, server: tuple[str, Received]
) -> None:
    """A failure's body and Content-Type come back whole when short; one exactly as long as
    what is read is not cut; a body that is not text comes back as bytes all the same."""
    base, _ = server
    sender = make(ALLOWED)

    oops = await sender.send("POST", f"{base}/oops", HEADERS, b"{}")
    exact = await sender.send("POST", f"{base}/exact", HEADERS, b"{}")
    binary = await sender.send("POST", f"{base}/binary", HEADERS, b"{}")

    assert oops == (500, None, "HTTP 500", b'{"error": "database down"}', False,
                    "application/json; charset=utf-8")  # fmt: skip
    assert exact[3:5] == (b"e" * DELIVERY.max_response_bytes, False)
    assert binary[3:] == (b"\x89PNG\r\n\x1a\n\xff\xfe", False, "image/png")


async def test_no_answer_within_the_timeout_is_an_error(
    make: MakeSender, server: tuple[str, Received]
) -> None:
    base, _ = server
    sender = make(ALLOWED)

    answer = await sender.send("POST", f"{base}/slow", HEADERS, b"{}")

    assert answer == (None, None, "timed out after 0.5 s", b"", False, None)


async def test_the_callback_policy_is_applied_where_the_request_is_made(
    make: MakeSender, server: tuple[str, Received]
) -> None:
    """A sender whose policy refuses private addresses does not connect to loopback."""
    base, received = server
    sender = make(REFUSED)

    status, _, error, *_ = await sender.send("POST", f"{base}/ok", HEADERS, b"{}")

    assert status is None
    assert error is not None
    assert error.startswith("refused by the callback policy: ")
    assert "127.0.0.1" in error
    assert received == []


async def test_an_unusable_url_is_an_error_not_a_crash(make: MakeSender) -> None:
    sender = make(ALLOWED)

    status, _, error, *_ = await sender.send("POST", "http://exa mple.com/hooks", HEADERS, b"{}")

    assert status is None
    assert error


async def test_many_requests_at_once_each_get_their_own_answer(
    make: MakeSender, server: tuple[str, Received]
) -> None:
    """Concurrent requests with bodies from empty to 300 KB (many frames to one read, one
    frame over many reads) are each answered, and each body arrives whole."""
    base, received = server
    # 30 MB at once through one host's slots: the timeout is no part of what is tested, and a
    # loaded machine takes longer than the other tests' half second.
    sender = make(ALLOWED, DELIVERY.model_copy(update={"timeout_s": 30.0}))
    sizes = [0, 1, 100, 70_000, 300_000] * 20

    answers = await asyncio.gather(
        *(
            sender.send("POST", f"{base}/{'busy' if n % 3 else 'ok'}", HEADERS, b"b" * size)
            for n, size in enumerate(sizes)
        )
    )

    assert [answer[:4] for answer in answers] == [
        (503, "7", "HTTP 503", b"") if n % 3 else (200, None, None, b"thanks")
        for n in range(len(sizes))
    ]
    assert sorted(len(body) for *_, body in received) == sorted(sizes)


async def test_a_dead_sender_process_answers_with_an_error_and_is_replaced(
    server: tuple[str, Received],
) -> None:
    """Killing the child answers what it held with an error at once; the next request starts a
    new child and gets through."""
    base, _ = server
    exits: list[int] = []
    sender = ProcessSender(DELIVERY, ALLOWED, LOGS, on_exit=exits.append)
    try:
        assert (await sender.send("POST", f"{base}/ok", HEADERS, b"{}"))[0] == 200
        first = sender.pid
        assert first is not None
        held = asyncio.create_task(sender.send("POST", f"{base}/slow", HEADERS, b"{}"))
        await asyncio.wait_for(SLOW_STARTED["event"].wait(), timeout=5)
        os.kill(first, signal.SIGKILL)

        status, _, error, *_ = await asyncio.wait_for(held, timeout=0.4)  # before the timeout
        assert status is None
        assert error == "the sender process exited (code -9) before answering"
        assert exits == [-9]  # the metrics count it
        assert (await sender.send("POST", f"{base}/ok", HEADERS, b"{}"))[0] == 200
        assert sender.pid not in (first, None)
    finally:
        await sender.aclose()
    assert exits == [-9]  # closing is no unexpected exit


async def test_closing_the_process_sender_ends_its_child(server: tuple[str, Received]) -> None:
    base, _ = server
    exits: list[int] = []
    sender = ProcessSender(DELIVERY, ALLOWED, LOGS, on_exit=exits.append)
    assert (await sender.send("POST", f"{base}/ok", HEADERS, b"{}"))[0] == 200
    child: Any = sender._child

    await sender.aclose()

    assert child._process.returncode == 0
    assert exits == []


def _holder(release: asyncio.Event, seen: list[int]) -> Handler:
    """A handler whose every request waits for `release`; `seen` gets the number of requests
    it holds each time one arrives."""
    holding = [0]

    async def handle(request: web.Request) -> web.Response:
        holding[0] += 1
        seen.append(holding[0])
        try:
            await release.wait()
        finally:
            holding[0] -= 1
        return web.Response(text="ok")

    return handle


async def test_the_sender_process_keeps_the_per_host_limit_and_spares_other_hosts(
    server: tuple[str, Received],
) -> None:
    """Handed `depth` times the per-host limit of requests to a host that holds them, the
    child makes only `max_per_host` of them at once, and another host's request still goes
    out (the waiting ones take no slot of the global limit)."""
    other, received = server
    release, seen = asyncio.Event(), list[int]()
    # One tenant, whose limit is the global one: the per-host limit alone.
    delivery = DeliverySettings(timeout_s=5, max_per_host=2, max_per_tenant=3, max_concurrency=3)
    sender = ProcessSender(delivery, ALLOWED, LOGS)
    async with loopback_server(_holder(release, seen)) as held_host:
        try:
            held = [
                asyncio.create_task(sender.send("POST", f"{held_host}/{n}", HEADERS, b"{}"))
                for n in range(sender.depth * delivery.max_per_host)
            ]
            await eventually(lambda: len(seen) == delivery.max_per_host, "the host's slots taken")
            answer = await asyncio.wait_for(
                sender.send("POST", f"{other}/ok", HEADERS, b"{}"), timeout=4
            )
            assert answer[:3] == (200, None, None)
            assert max(seen) == delivery.max_per_host
            release.set()
            assert [a[0] for a in await asyncio.gather(*held)] == [200] * len(held)
            assert max(seen) == delivery.max_per_host
            assert len(seen) == len(held)
            assert [path for _, path, _, _ in received] == ["/ok"]
        finally:
            release.set()
            await sender.aclose()


async def test_the_sender_process_keeps_the_per_tenant_limit_and_spares_other_tenants(
    server: tuple[str, Received],
) -> None:
    """Handed `depth` times the per-tenant limit of one tenant's requests, to two hosts that
    hold them, the child makes only that many of them at once, and another tenant's request
    still goes out (the waiting ones take no slot of the global limit)."""
    other, received = server
    release, seen = asyncio.Event(), list[int]()
    delivery = DeliverySettings(timeout_s=5, max_per_host=2, max_per_tenant=2, max_concurrency=4)
    sender = ProcessSender(delivery, ALLOWED, LOGS)
    holder = _holder(release, seen)  # one count over both hosts
    async with loopback_server(holder) as first, loopback_server(holder) as second:
        try:
            held = [
                asyncio.create_task(
                    sender.send("POST", f"{(first, second)[n % 2]}/{n}", HEADERS, b"{}", "acme")
                )
                for n in range(sender.depth * delivery.per_tenant)
            ]
            await eventually(lambda: len(seen) == delivery.per_tenant, "the tenant's slots taken")
            answer = await asyncio.wait_for(
                sender.send("POST", f"{other}/ok", HEADERS, b"{}", "globex"), timeout=4
            )
            assert answer[:3] == (200, None, None)
            assert max(seen) == delivery.per_tenant
            release.set()
            assert [a[0] for a in await asyncio.gather(*held)] == [200] * len(held)
            assert max(seen) == delivery.per_tenant
            assert len(seen) == len(held)
            assert [path for _, path, _, _ in received] == ["/ok"]
        finally:
            release.set()
            await sender.aclose()


async def test_a_sender_process_that_cannot_start_is_an_error_retried_at_most_each_second(
    monkeypatch: pytest.MonkeyPatch, server: tuple[str, Received]
) -> None:
    """A child that exits before it is ready makes each request fail with why, and is not
    started again for every request: at most once a second."""
    base, received = server
    monkeypatch.setattr("service.sender.COMMAND", ("/bin/false",))
    starts = []
    real = asyncio.create_subprocess_exec

    async def counted(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        starts.append(args)
        return await real(*args, **kwargs)

    monkeypatch.setattr("service.sender.asyncio.create_subprocess_exec", counted)
    sender = ProcessSender(DELIVERY, ALLOWED, LOGS)
    try:
        answers = [await sender.send("POST", f"{base}/ok", HEADERS, b"{}") for _ in range(5)]
    finally:
        await sender.aclose()

    assert len(starts) == 1
    for status, _, error, *_ in answers:
        assert status is None
        assert error is not None
        assert error.startswith("the sender process could not start: the sender process (pid")
    assert received == []


async def test_a_request_to_a_child_that_has_just_died_is_answered_at_once() -> None:
    """A request handed to a child whose death was noticed after it was chosen gets its
    error at once instead of waiting out the timeout."""
    sender = ProcessSender(DELIVERY, ALLOWED, LOGS)
    await sender.start()
    child: Any = sender._child
    try:
        os.kill(child.pid, signal.SIGKILL)
        await asyncio.wait_for(child._reading, timeout=5)  # the death noticed

        answer = child.ask(1, (1, "POST", "http://127.0.0.1:9/", (), b""))

        assert answer.done()
        assert answer.result()[:3] == (None, None, "the sender process exited before the request")
    finally:
        await sender.aclose()


async def test_a_request_given_up_on_is_not_started_by_the_sender_process(
    server: tuple[str, Received],
) -> None:
    """A request waiting in the child for its host when the bridge gives up on it (a stop
    cancels the attempts it then hands back to the store) is dropped there, not sent once the
    host is free: the delivery is attempted again later, so sending it too is a duplicate."""
    other, _ = server
    arrived, release, paths = asyncio.Event(), asyncio.Event(), list[str]()

    async def hold(request: web.Request) -> web.Response:
        paths.append(request.path)
        arrived.set()
        await release.wait()
        return web.Response(text="ok")

    sender = ProcessSender(DeliverySettings(timeout_s=5, max_per_host=1), ALLOWED, LOGS)
    async with loopback_server(hold) as host:
        try:
            sent = asyncio.create_task(sender.send("POST", f"{host}/sent", HEADERS, b"{}"))
            given_up = asyncio.create_task(sender.send("POST", f"{host}/dropped", HEADERS, b"{}"))
            await asyncio.wait_for(arrived.wait(), timeout=5)
            given_up.cancel()
            with pytest.raises(asyncio.CancelledError):
                await given_up
            # Answered once the child has read everything handed to it before.
            assert (await sender.send("POST", f"{other}/ok", HEADERS, b"{}"))[0] == 200
            release.set()
            assert (await sent)[0] == 200
            # Behind the one given up on in the host's line, had it been kept.
            assert (await sender.send("POST", f"{host}/after", HEADERS, b"{}"))[0] == 200
            assert paths == ["/sent", "/after"]
        finally:
            release.set()
            await sender.aclose()


@contextlib.asynccontextmanager
async def cut_short(head: bytes, start: bytes) -> AsyncIterator[str]:
    """A raw loopback server answering every request with `head` (a status line and headers
    announcing a longer body) and `start`, then closing the connection; its base URL."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head + b"\r\n\r\n" + start)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("head", "status_code", "error"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100", 200, None),
        (b"HTTP/1.1 410 Gone\r\nTransfer-Encoding: chunked", 410, "HTTP 410"),
    ],
)
async def test_an_answer_whose_body_is_cut_short_keeps_its_status(
    make: MakeSender, head: bytes, status_code: int, error: str | None
) -> None:
    """A receiver that sends its status, then closes the connection before the body it
    announced has ended, answered all the same: a 2xx is not retried (a duplicate for the
    receiver), a 410 is gone; what came of the body is kept, marked as not the whole."""
    sender = make(ALLOWED)
    start = b"abc" if status_code == 200 else b"3\r\nabc\r\n"
    async with cut_short(head, start) as base:
        answer = await sender.send("POST", f"{base}/hook", HEADERS, b"{}")
    assert answer == (status_code, None, error, b"abc", True, None)
