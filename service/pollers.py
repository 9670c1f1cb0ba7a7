"""Every configured upstream's poller, by name: the one face the leases, the watch service and
the monitor see.

Each upstream is polled by a `Poller` of its own, with its own slots, rate caps, circuit breaker
and pacing, so that one upstream's limits or outage never slow the watches of another. A watch
goes to the poller of its `upstream`. The watches of an upstream not configured here are not
claimed here (`WatchLeases`), so processes that poll it take them; one met anyway is not polled
but never dropped: its lease runs out (logged once per upstream name: `poll.unknown_upstream`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import structlog

from service import breaker
from service.poller import Poller
from service.progress import ProgressWriter
from service.store.base import Watch

log = structlog.get_logger("service.pollers")
_WORST_FIRST: tuple[breaker.State, ...] = ("open", "half_open", "closed")


class Pollers:
    def __init__(self, by_name: Mapping[str, Poller], writer: ProgressWriter) -> None:
        self._by_name = dict(by_name)
        self._writer = writer
        self._unknown: set[str] = set()  # upstream names already logged as not configured
        self._forgetting: asyncio.Task[None] | None = None

    def start(self) -> None:
        for poller in self._by_name.values():
            poller.start()
        self._forgetting = asyncio.create_task(self._forget_lost(), name="lost watches")

    async def stop(self, grace_s: float) -> None:
        """Start no more polls; give those in flight `grace_s` to finish, then cancel them."""
        await asyncio.gather(*(poller.stop(grace_s) for poller in self._by_name.values()))
        if self._forgetting is not None:
            self._forgetting.cancel()
            await asyncio.gather(self._forgetting, return_exceptions=True)

    @property
    def running(self) -> bool:
        return all(poller.running for poller in self._by_name.values())

    def adopt(self, watch: Watch, not_before: float = 0.0) -> bool:
        """Start polling a watch this process holds the lease of; False when its upstream is
        not configured here (the watch is left to its lease)."""
        poller = self._by_name.get(watch.upstream)
        if poller is None:
            if watch.upstream not in self._unknown:
                self._unknown.add(watch.upstream)
                log.error(
                    "poll.unknown_upstream", upstream=watch.upstream, watch_id=watch.id,
                    detail="watches of this upstream are left unclaimed here; configure "
                    f"[upstreams.{watch.upstream}] to poll them",
                )  # fmt: skip
            return False
        poller.adopt(watch, not_before)
        return True

    def forget(self, watch_id: str) -> None:
        """Stop polling a watch (cancelled, completed, or its lease lost): the poller holding
        it lets it go; of a watch none holds, only what is pending to write is dropped."""
        holder = next((p for p in self._by_name.values() if p.holds(watch_id)), None)
        if holder is None:
            self._writer.discard(watch_id)
        else:
            holder.forget(watch_id)

    def held(self) -> list[tuple[str, int]]:
        """(id, lease token) of every watch held, for the lease renewals."""
        return [lease for poller in self._by_name.values() for lease in poller.held()]

    @property
    def held_count(self) -> int:
        return sum(poller.held_count for poller in self._by_name.values())

    def due_backlog(self) -> int:
        return sum(poller.due_backlog() for poller in self._by_name.values())

    def throttled(self) -> dict[str, int]:
        """Due polls waiting for a token, a slot or the breaker, by upstream."""
        return {name: poller.throttled for name, poller in self._by_name.items()}

    def circuits(self) -> dict[str, breaker.State]:
        """Each upstream's circuit breaker state."""
        return {name: poller.circuit_state for name, poller in self._by_name.items()}

    @property
    def circuit_state(self) -> breaker.State:
        """The worst of the upstreams' circuit states."""
        states = set(self.circuits().values())
        return next((state for state in _WORST_FIRST if state in states), "closed")

    async def _forget_lost(self) -> None:
        while True:
            self.forget(await self._writer.lost.get())
