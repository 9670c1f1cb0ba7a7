"""Watch leases: claiming unclaimed watches for the poller, renewing the leases of those it
holds, and releasing them at a shutdown so that another process takes over at once.

`claim` and `renew` are periodic jobs (service/bridge.py names them and their intervals).
"""

from __future__ import annotations

import structlog

from service import throttle
from service.clock import Clock
from service.config import Settings
from service.pollers import Pollers
from service.store.base import Store, Watch

log = structlog.get_logger("service.leases")
# Claimed watches held in memory by one process; more stay in the store for other replicas.
MAX_HELD_WATCHES = 200_000
# Claimed per claim: replicas starting together split the backlog, and a restart with many
# active watches spreads their first polls over a few claims instead of one burst.
CLAIM_BATCH = 1_000


class WatchLeases:
    def __init__(
        self, store: Store, poller: Pollers, settings: Settings, clock: Clock, owner: str
    ) -> None:
        self._store = store
        self._poller = poller
        self._lease_s = settings.store.lease_s
        # Only the watches of upstreams configured here: others are left to processes that
        # poll them.
        self._upstreams = settings.upstream_names
        self._rate_caps = {
            name: settings.upstream_named(name)[0].max_requests_per_s
            for name in settings.upstream_names
        }
        self._clock = clock
        self._owner = owner
        self._closed = False

    async def claim(self) -> None:
        """Claim unclaimed watches, as many as there is room for, and start polling them."""
        room = min(MAX_HELD_WATCHES - self._poller.held_count, CLAIM_BATCH)
        if self._closed or room <= 0:
            return
        now = self._clock.now()
        claimed = await self._store.claim_watches(
            self._owner, now, now + self._lease_s, room, upstreams=self._upstreams
        )
        self._adopt(claimed, now)  # during a shutdown too: `release` then hands them back

    async def report_unconfigured(self) -> None:
        """Warn, once per upstream name, of the active watches of upstreams not configured
        here: they are never claimed here, so nothing else this process does says so."""
        counts = await self._store.count_active_by_upstream()
        for name, count in sorted(counts.items()):
            if name not in self._upstreams:
                log.warning(
                    "watches.upstream_not_configured", upstream=name, watches=count,
                    detail=f"upstream {name!r} is not configured here, so this process does "
                    f"not poll its {count} active watches: add [upstreams.{name}] back to the "
                    "settings, or cancel them "
                    f"(GET /v1/watches?upstream={name}&status=active lists a tenant's)",
                )  # fmt: skip

    def _adopt(self, claimed: list[Watch], now: float) -> None:
        """Adopt claimed watches, spreading the first polls of the overdue ones.

        After a restart (or a replica's death) every claimed watch is overdue, so all would be
        due at once: a burst of a whole batch of requests, and their later polls bunched as
        well. Their first polls are spread evenly over one poll interval instead (over longer
        when a global rate cap needs longer for them), in claim order.
        """
        overdue = sum(1 for w in claimed if max(w.next_poll_at, w.created_at) <= now)
        rank = 0
        for watch in claimed:
            if max(watch.next_poll_at, watch.created_at) > now:
                self._poller.adopt(watch)
                continue
            cap = self._rate_caps.get(watch.upstream, 0.0)
            delay = throttle.spread(rank, overdue, watch.poll_interval_s, cap)
            self._poller.adopt(watch, not_before=now + delay)
            rank += 1

    async def renew(self) -> None:
        """Extend the leases of the watches held; stop polling those no longer ours."""
        held = self._poller.held()
        if not held:
            return
        lease_until = self._clock.now() + self._lease_s
        renewed = await self._store.renew_watch_leases(self._owner, held, lease_until)
        for watch_id, _ in held:
            if watch_id not in renewed:
                self._poller.forget(watch_id)

    def close(self) -> None:
        """Claim nothing more (a shutdown)."""
        self._closed = True

    async def release(self) -> int:
        """Give up the leases of every watch held, so any process may claim them at once; how
        many."""
        held = self._poller.held()
        await self._store.release_watches(self._owner, held)
        return len(held)
