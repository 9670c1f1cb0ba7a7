"""The HTTP servers (uvicorn): bounded request heads and connections, and a shutdown that
begins with the bridge's draining.

The API port is served directly (a container's only port, or a sidecar's), so whatever a
client sends must cost bounded memory and time before any token is checked:

- a request head (request line and headers) holds at most `server.max_header_bytes`: h11, the
  parser uvicorn bounds (`h11_max_incomplete_event_size`), answers 400 past it;
- a request, its head and then its body, must arrive whole within `server.header_timeout_s` of
  the connection opening, or of its first byte on a kept-alive connection (uvicorn closes idle
  kept-alive connections but not one that stopped halfway through a head or a body, even one
  already answered, as a request refused before its body was read is): `HeadDeadline` closes
  it;
- at most `server.max_connections` connections and requests are served at once: uvicorn
  answers 503 to the requests past it (`limit_concurrency`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable, Iterator
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.config import ServerSettings

# The client's states in h11 of a request not yet whole: its head or its body still to come.
_ARRIVING = (h11.IDLE, h11.SEND_BODY)


def uvicorn_options(server: ServerSettings) -> dict[str, Any]:
    """The `uvicorn.Config` arguments that bound what one client can hold."""
    return {
        "http": head_deadline_protocol(server.header_timeout_s),
        "h11_max_incomplete_event_size": server.max_header_bytes,
        "limit_concurrency": server.max_connections,
        "timeout_keep_alive": server.keepalive_timeout_s,
        **(
            {"forwarded_allow_ips": list(server.forwarded_allow_ips)}
            if server.forwarded_allow_ips is not None
            else {}
        ),
    }


def listen(host: str, port: int) -> list[socket.socket]:
    """Sockets listening on every address of `host`, as uvicorn's own binding (asyncio's
    `create_server`) would; OSError if one cannot be bound (then none is left open)."""
    addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, protocol, _, address in dict.fromkeys(addresses):
            sock = socket.socket(family, kind, protocol)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen()
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def head_deadline_protocol(timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing a connection whose request (head and body) is not whole
    within `timeout_s`."""

    class HeadDeadline(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state in _ARRIVING and not self.transport.is_closing():
                self._arm()  # a request has begun (or the connection waits for its first)
            else:
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._deadline is None:
                self._deadline = self.loop.call_later(timeout_s, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if self.conn.their_state in _ARRIVING:
                self.transport.close()

    return HeadDeadline


class ApiServer(uvicorn.Server):
    """The API port's server. On SIGTERM or SIGINT it calls `on_exit` at once (the bridge
    begins draining) before uvicorn's own shutdown closes the listening socket and waits for
    the connections, and it exits 0 once stopped (uvicorn's own signal handling raises the
    signal again, which supervisors and Kubernetes would read as a crash). A second SIGINT
    forces the exit."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in _SIGNALS:
            loop.add_signal_handler(sig, self._exit, sig)
        try:
            yield
        finally:
            for sig in _SIGNALS:
                loop.remove_signal_handler(sig)

    def _exit(self, sig: signal.Signals) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
            return
        self.should_exit = True
        self._on_exit()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._on_exit()  # also when uvicorn stops for a reason of its own
        await super().shutdown(sockets)


class HealthServer(uvicorn.Server):
    """The health port's server: leaves signals to the API server, and stops when told to
    after it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


_SIGNALS = (signal.SIGINT, signal.SIGTERM)
