"""What one client can hold on the API port, tried with raw sockets against the real server:
request heads bounded in size, field count and time, connections bounded in number."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from urllib.parse import urlsplit

import pytest

from tests.e2e.harness import Bridge, StartBridge, wait_until

pytestmark = pytest.mark.e2e
HEADER_TIMEOUT_S = 1.0
# Long enough for a loaded machine to notice a close, far shorter than "never".
CLOSED_DEADLINE_S = 15.0


@contextmanager
def connection(bridge: Bridge) -> Iterator[socket.socket]:
    parts = urlsplit(bridge.url)
    assert parts.hostname is not None
    assert parts.port is not None
    sock = socket.create_connection((parts.hostname, parts.port), timeout=CLOSED_DEADLINE_S)
    try:
        yield sock
    finally:
        sock.close()


def answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or the deadline)."""
    received = b""
    deadline = time.monotonic() + CLOSED_DEADLINE_S
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    return received


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes the connection within `seconds` (sending nothing more)."""
    sock.settimeout(seconds)
    try:
        return sock.recv(65536) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


@pytest.fixture
def bounded(start_bridge: StartBridge) -> Bridge:
    return start_bridge(
        BRIDGE_SERVER__HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
        BRIDGE_SERVER__MAX_HEADER_BYTES="8192",
        BRIDGE_SERVER__MAX_HEADERS="50",
    )


def test_a_head_larger_than_the_bound_is_refused(bounded: Bridge) -> None:
    """A 32 KiB header field gets a 400 and a closed connection, not an answer."""
    with connection(bounded) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 32768)
        sock.sendall(b"\r\n\r\n")
        received = answer(sock)
    assert received.startswith(b"HTTP/1.1 400 "), received[:200]


def test_too_many_header_fields_get_a_431_problem(bounded: Bridge) -> None:
    """More header fields than `server.max_headers` are refused with a 431 naming the bound."""
    fields = b"".join(b"X-F%d: v\r\n" % n for n in range(60))
    with connection(bounded) as sock:
        sock.sendall(b"GET /v1/watches HTTP/1.1\r\nHost: 127.0.0.1\r\n" + fields + b"\r\n")
        received = answer(sock)
    assert received.startswith(b"HTTP/1.1 431 "), received[:200]
    assert b"server.max_headers" in received


def test_half_a_head_is_closed_after_the_header_timeout(bounded: Bridge) -> None:
    """A connection that stops halfway through its head is closed after the timeout."""
    with connection(bounded) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ")
        assert closed_within(sock, CLOSED_DEADLINE_S)


def test_a_dripped_head_is_closed_however_often_bytes_arrive(bounded: Bridge) -> None:
    """The timeout runs from the head's start: a byte every 0.2 s does not keep it open."""
    with connection(bounded) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\n")
        deadline = time.monotonic() + CLOSED_DEADLINE_S
        closed = False
        while time.monotonic() < deadline and not closed:
            try:
                sock.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            closed = closed_within(sock, 0.2)
        assert closed


def test_a_kept_alive_connection_gets_the_same_deadline_for_its_next_head(
    bounded: Bridge,
) -> None:
    """After a whole request is answered, half of the next head is closed after the timeout."""
    with connection(bounded) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = b""
        while b"\r\n\r\n" not in first or not first.endswith(b"}"):
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ")
        assert closed_within(sock, CLOSED_DEADLINE_S)


def test_a_whole_head_is_answered_as_usual(bounded: Bridge) -> None:
    """Within the bounds, a request sent in pieces is served."""
    with connection(bounded) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\n")
        sock.sendall(b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert answer(sock).startswith(b"HTTP/1.1 200 ")


def test_connections_past_the_bound_are_answered_503(start_bridge: StartBridge) -> None:
    """With `server.max_connections` connections open, another's request gets a 503."""
    bridge = start_bridge(BRIDGE_SERVER__MAX_CONNECTIONS="4")
    with ExitStack() as held:
        for _ in range(4):
            held.enter_context(connection(bridge))
        with connection(bridge) as extra:
            extra.sendall(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert answer(extra).startswith(b"HTTP/1.1 503 ")
    # Once they are closed, requests are served again.
    wait_until(lambda: bridge.client.get("/livez").status_code == 200, what="served again")


@pytest.mark.parametrize(
    "head",
    [
        # Before any token is read: the dashboard's sign-in form.
        b"POST /ui/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n",
        # Refused at once (no token), the rest of its body still awaited.
        b"POST /v1/watches HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n",
    ],
    ids=["sign-in", "refused"],
)
def test_half_a_body_is_closed_after_the_header_timeout(bounded: Bridge, head: bytes) -> None:
    """A connection that stops halfway through its request's body is closed after the timeout,
    as one that stops halfway through its head: the request must arrive whole."""
    with connection(bounded) as sock:
        sock.sendall(head + b"token=")
        assert closed_within(sock, CLOSED_DEADLINE_S)
