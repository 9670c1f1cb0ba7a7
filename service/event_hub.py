"""In-process wake-ups for API clients waiting on a watch's events (long-poll and SSE).

The store holds the events; the hub only says "watch X has new ones, read again". A client
starts listening *before* it reads the store, so an event committed between its read and its
wait still wakes it. Events committed by another replica never reach this hub: waiting clients
also read the store again every second or so.

Only watches someone is listening to take memory: the entry of a watch goes with its last
listener, and publishing to a watch nobody listens to does nothing.

On shutdown `close` wakes every listener, and every later one at once, so that waiting clients
are answered (a long-poll's "not yet", the end of a stream) instead of being held open.

Everything runs on the event loop's thread (the progress writer publishes from it), so nothing here
is locked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager, suppress


class Listener:
    """One client's wake-up signal for one watch."""

    def __init__(self) -> None:
        self._woken = asyncio.Event()

    def wake(self) -> None:
        self._woken.set()

    async def wait(self, timeout_s: float) -> bool:
        """Wait until woken or `timeout_s` passed; True when woken. A wake-up that came while
        no one was waiting is not lost: it ends the next wait at once."""
        if timeout_s > 0:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), timeout_s)
        woken = self._woken.is_set()
        self._woken.clear()
        return woken


class EventHub:
    def __init__(self) -> None:
        # None: listeners woken by `close` only.
        self._listeners: dict[str | None, set[Listener]] = {}
        self._closed = False

    def publish(self, watch_id: str) -> None:
        """Wake every client listening to the watch (its events were committed)."""
        for listener in self._listeners.get(watch_id, ()):
            listener.wake()

    def close(self) -> None:
        """Wake every listener, now and from now on: the process is shutting down."""
        self._closed = True
        for listeners in self._listeners.values():
            for listener in listeners:
                listener.wake()

    @property
    def closed(self) -> bool:
        return self._closed

    @contextmanager
    def listen(self, watch_id: str | None) -> Iterator[Listener]:
        """A listener of the watch's events (of none: `close` only)."""
        listener = Listener()
        if self._closed:
            listener.wake()
        self._listeners.setdefault(watch_id, set()).add(listener)
        try:
            yield listener
        finally:
            listeners = self._listeners[watch_id]
            listeners.discard(listener)
            if not listeners:
                del self._listeners[watch_id]

    @property
    def listening(self) -> int:
        """How many clients wait (long-polls, event streams, dashboard live streams)."""
        return sum(len(listeners) for listeners in self._listeners.values())
