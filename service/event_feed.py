"""Reading events back, for clients without an endpoint: long-poll, event stream, recent events.

Every body served here is an event's envelope, byte for byte what a subscription receives.
Waiting clients wake on the in-process hub (events committed by this process) and read the
store again every `RECHECK_S` anyway (events committed by another replica).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import orjson

from service.api.models import watch_view
from service.errors import Conflict, NotFound, StoreUnavailable
from service.event_hub import EventHub
from service.store.base import EventRecord, Store, Watch

RECHECK_S = 1.0
# Milliseconds an EventSource waits before reconnecting after the stream ends or breaks.
RECONNECT_MS = 2000


@dataclass(frozen=True, slots=True)
class Waited:
    status: int  # 200: the final event; 202: not yet
    body: bytes


def sse_frame(event: EventRecord) -> bytes:
    # Envelopes are one line of JSON (orjson escapes newlines), so one `data:` line each.
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (
        event.id.encode(),
        event.type.encode(),
        event.body,
    )


class EventFeed:
    def __init__(self, store: Store, hub: EventHub, keepalive_s: float) -> None:
        self._store = store
        self._hub = hub
        self._keepalive_s = keepalive_s

    @property
    def hub(self) -> EventHub:
        """The wake-ups of this process's committed events (the dashboard listens too)."""
        return self._hub

    async def recent(self, tenant: str, types: Sequence[str] | None, limit: int) -> bytes:
        """A JSON array of the tenant's latest envelopes, newest first."""
        found = await self._store.list_events(tenant, types=types, limit=limit)
        return b"[" + b",".join(event.body for event in found) + b"]"

    async def wait(self, tenant: str, watch_id: str, timeout_s: float) -> Waited:
        """The final event's envelope as soon as there is one, or after `timeout_s` (or at
        once when the process begins shutting down) the watch as it stands. 404 for an unknown
        watch; 409 for one that ended without a final event (cancelled) or whose events were
        purged."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        after: str | None = None
        with self._hub.listen(watch_id) as listener:  # before reading: no wake-up is lost
            while True:
                # The watch first: a watch seen ended has its final event committed already.
                watch = await self._existing(tenant, watch_id)
                found = await self._store.watch_events(tenant, watch_id, after=after)
                final = next((event for event in found if event.final), None)
                if final is not None:
                    return Waited(200, final.body)
                after = found[-1].id if found else after
                if watch.status != "active":
                    raise _no_final_event(watch)
                remaining = deadline - loop.time()
                if remaining <= 0 or self._hub.closed:
                    body = {"status": "pending", "watch": watch_view(watch)}
                    return Waited(202, orjson.dumps(body))
                await listener.wait(min(RECHECK_S, remaining))

    async def existing(self, tenant: str, watch_id: str) -> None:
        """404 unless the watch exists for this tenant (checked before a stream starts)."""
        await self._existing(tenant, watch_id)

    async def stream(self, tenant: str, watch_id: str, after: str | None) -> AsyncIterator[bytes]:
        """Server-Sent Events of the watch after the event `after` (all of them when None or
        unknown), ending after the final one, once the watch ended without one, or when the
        process begins shutting down (the client reconnects elsewhere with its Last-Event-ID).
        A quiet stream gets a comment every `keepalive_s`. The client going away cancels the
        iteration, which releases its listener."""
        loop = asyncio.get_running_loop()
        yield b"retry: %d\n\n" % RECONNECT_MS
        with self._hub.listen(watch_id) as listener:
            keepalive_at = loop.time() + self._keepalive_s
            while True:
                try:
                    watch = await self._store.get_watch(tenant, watch_id)
                    found = await self._store.watch_events(tenant, watch_id, after=after)
                except StoreUnavailable:  # logged once per outage; the stream waits it out
                    found, ended = [], False
                else:
                    # Without a final event: cancelled, or deleted.
                    ended = watch is None or watch.status != "active"
                for event in found:
                    yield sse_frame(event)
                    after = event.id
                    if event.final:
                        return
                if ended or self._hub.closed:
                    return  # on shutdown, the client reconnects elsewhere
                now = loop.time()
                if found:
                    keepalive_at = now + self._keepalive_s
                elif now >= keepalive_at:
                    yield b": keep-alive\n\n"
                    keepalive_at = now + self._keepalive_s
                await listener.wait(min(RECHECK_S, keepalive_at - now))

    async def _existing(self, tenant: str, watch_id: str) -> Watch:
        watch = await self._store.get_watch(tenant, watch_id)
        if watch is None:
            raise NotFound(f"no watch {watch_id}")
        return watch


def _no_final_event(watch: Watch) -> Conflict:
    if watch.status == "cancelled":
        return Conflict(f"watch {watch.id} was cancelled before its job ended: no final event")
    return Conflict(
        f"watch {watch.id} is {watch.status} but its events are no longer kept: they are "
        "purged after delivery.payload_retention_days"
    )
