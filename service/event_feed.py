"""Reading events back, for clients without an endpoint: long-poll, event stream, recent events.

Every event handed out here is as recorded: its body is the envelope, byte for byte what a
subscription receives. Waiting clients wake on the in-process hub (events committed by this
process) and read the store again every `RECHECK_S` anyway (events committed by another
replica).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from service.errors import Conflict, StoreUnavailable
from service.event_hub import EventHub
from service.store.base import EventRecord, Store, Watch
from service.watches import WatchService

RECHECK_S = 1.0


@dataclass(frozen=True, slots=True)
class Waited:
    """How a wait ended: with the watch's final event, or without it (None) after the time
    asked for, with the watch as it stands."""

    watch: Watch
    final: EventRecord | None


@dataclass(frozen=True)
class EventFeed:
    store: Store
    watches: WatchService
    hub: EventHub  # the wake-ups of this process's committed events (the dashboard listens too)
    keepalive_s: float
    max_wait_s: float

    async def recent(
        self, tenant: str, types: Sequence[str] | None, limit: int
    ) -> list[EventRecord]:
        """The tenant's latest events, newest first."""
        return await self.store.list_events(tenant, types=types, limit=limit)

    async def wait(self, tenant: str, watch_id: str, timeout_s: float) -> Waited:
        """The final event as soon as there is one, or after `timeout_s` (at most
        `api.max_wait_s`; at once when the process begins shutting down) the watch as it
        stands. `NotFound` for an unknown watch; `Conflict` for one that ended without a final
        event (cancelled) or whose events were purged."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(timeout_s, self.max_wait_s)
        after: str | None = None
        with self.hub.listen(watch_id) as listener:  # before reading: no wake-up is lost
            while True:
                # The watch first: a watch seen ended has its final event committed already.
                watch = await self.watches.get(tenant, watch_id)
                found = await self.store.watch_events(tenant, watch_id, after=after)
                final = next((event for event in found if event.final), None)
                if final is not None:
                    return Waited(watch, final)
                after = found[-1].id if found else after
                if watch.status != "active":
                    raise _no_final_event(watch)
                remaining = deadline - loop.time()
                if remaining <= 0 or self.hub.closed:
                    return Waited(watch, None)
                await listener.wait(min(RECHECK_S, remaining))

    async def has_more(self, tenant: str, watch_id: str, after: str | None) -> bool:
        """Whether a stream after the event `after` would send any: not once the watch has
        ended and its events were all sent, so a client told so stops reconnecting.
        `NotFound` for an unknown watch (checked before a stream starts)."""
        watch = await self.watches.get(tenant, watch_id)
        if watch.status == "active":
            return True
        return bool(await self.store.watch_events(tenant, watch_id, after=after))

    async def stream(
        self, tenant: str, watch_id: str, after: str | None
    ) -> AsyncIterator[EventRecord | None]:
        """The watch's events after the event `after` (all of them when None or unknown) as
        they are recorded, ending after the final one, once the watch ended without one, or
        when the process begins shutting down (the client reconnects elsewhere with the last
        id it got). A quiet stream gives None every `keepalive_s`, for the client to be told
        something. The client going away cancels the iteration, which releases its
        listener."""
        loop = asyncio.get_running_loop()
        with self.hub.listen(watch_id) as listener:
            keepalive_at = loop.time() + self.keepalive_s
            while True:
                try:
                    watch = await self.store.get_watch(tenant, watch_id)
                    found = await self.store.watch_events(tenant, watch_id, after=after)
                except StoreUnavailable:  # logged once per outage; the stream waits it out
                    found, ended = [], False
                else:
                    # Without a final event: cancelled, or deleted.
                    ended = watch is None or watch.status != "active"
                for event in found:
                    yield event
                    after = event.id
                    if event.final:
                        return
                if ended or self.hub.closed:
                    return  # on shutdown, the client reconnects elsewhere
                now = loop.time()
                if found:
                    keepalive_at = now + self.keepalive_s
                elif now >= keepalive_at:
                    yield None
                    keepalive_at = now + self.keepalive_s
                await listener.wait(min(RECHECK_S, keepalive_at - now))


def _no_final_event(watch: Watch) -> Conflict:
    if watch.status == "cancelled":
        return Conflict(f"watch {watch.id} was cancelled before its job ended: no final event")
    return Conflict(
        f"watch {watch.id} is {watch.status} but its events are no longer kept: they are "
        "purged after delivery.payload_retention_days"
    )
