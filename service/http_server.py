"""The HTTP servers' settings for uvicorn: bounded request heads and connections.

The API port is served directly (a container's only port, or a sidecar's), so whatever a
client sends must cost bounded memory and time before any token is checked:

- a request head (request line and headers) holds at most `server.max_header_bytes`: h11, the
  parser uvicorn bounds (`h11_max_incomplete_event_size`), answers 400 past it;
- a request head must arrive whole within `server.header_timeout_s` of the connection opening,
  or of its first byte on a kept-alive connection (uvicorn closes idle kept-alive connections
  but not one that stopped halfway through a head): `HeadDeadline` closes it;
- at most `server.max_connections` connections and requests are served at once: uvicorn
  answers 503 to the requests past it (`limit_concurrency`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.config import ServerSettings


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


def head_deadline_protocol(timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing a connection whose request head is not whole within
    `timeout_s`."""

    class HeadDeadline(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self._arm()  # a head has begun (or the connection waits for its first)
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
            if self.conn.their_state is h11.IDLE:
                self.transport.close()

    return HeadDeadline
