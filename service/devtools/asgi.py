"""Bare-ASGI plumbing shared by the developer tools: bodies, answers, dropped connections, serving.

The simulator and the listener are hot in benchmarks, so they skip a framework's router and
request objects and speak ASGI directly through these few helpers. `serve` runs an app under
uvicorn (httptools, uvloop, no access log) on a socket it binds first, so the start line it prints
is only printed once connections are accepted, and `--port 0` reports the port it got.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol, runtime_checkable

import orjson
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

Sleep = Callable[[float], Awaitable[None]]
"""`asyncio.sleep`, or a fake that records the delays a test asked for."""

MAX_BODY = 1 << 20


class ConnectionDropped(Exception):
    """The app chose to close the connection without an answer, and the server gave no way to."""


class BodyTooLarge(Exception):
    """The request body is larger than MAX_BODY bytes."""


@runtime_checkable
class _Closable(Protocol):
    def close(self) -> None: ...


async def read_body(receive: Receive) -> bytes:
    """The whole request body; BodyTooLarge past MAX_BODY bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header `name` (lower-case bytes), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def send_bytes(
    send: Send, status: int, body: bytes, extra: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """Send a complete JSON answer in two messages, with its length."""
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(
    send: Send, status: int, payload: object, extra: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """Send `payload` as a JSON answer."""
    await send_bytes(send, status, orjson.dumps(payload), extra=extra)


async def drop_connection(receive: Receive, send: Send) -> None:
    """Close the client's connection without writing a byte, like a crashed proxy would.

    ASGI has no message for this, and a server turns an app that raises or returns without an
    answer into a 500. Under uvicorn, though, `send` is a bound method of the per-request cycle
    whose `transport` is the TCP connection: closing it sends a FIN before any response, so an
    httpx client raises `RemoteProtocolError("Server disconnected without sending a response.")`
    and aiohttp raises `ServerDisconnectedError`. Where there is no such handle (another server,
    httpx's in-process ASGITransport) ConnectionDropped is raised instead.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if not isinstance(transport, _Closable):
        raise ConnectionDropped
    transport.close()
    # Returning before the server has seen the close would make it answer 500; the disconnect
    # message is its acknowledgement.
    while (await receive())["type"] != "http.disconnect":
        pass


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=2048)


def serve(app: ASGIApp, host: str, port: int, banner: Callable[[str], str]) -> int:
    """Serve `app` until SIGINT or SIGTERM; print `banner(url)` once the port accepts connections.

    Returns 0 after a graceful stop on SIGINT and 1 if the port cannot be bound. On SIGTERM uvicorn
    stops gracefully, then raises the signal again, so the process ends by SIGTERM as its parent
    expects.
    """
    try:
        sock = _listen(host, port)
    except OSError as exc:
        print(f"cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    bound_port = sock.getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    config = uvicorn.Config(
        app,
        http="httptools",
        loop="uvloop",
        ws="none",
        lifespan="off",  # the apps have nothing to start or stop
        access_log=False,
        log_level="warning",
        proxy_headers=False,
        server_header=False,
    )
    with sock:
        print(banner(f"http://{shown_host}:{bound_port}"), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            uvicorn.Server(config).run(sockets=[sock])
    return 0
