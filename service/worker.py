"""The worker: the parts that poll and deliver, built complete, started and stopped in order.

```
WatchLeases --claims watches for--> Pollers --what polls saw--> ProgressWriter
                      (a Poller per upstream)
                                       ^                          |  final events' deliveries,
                                       +---- lost leases (queue) -+  claims after new ones
                                                                  v
                                  Deliverer (claims due deliveries itself) --> Sender
```

Each part depends only on those below it; the writer hands the watches whose lease it found
lost back to the poller through a queue. Their periodic upkeep (claims, renewals) is a list of
named jobs in service/bridge.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import structlog

from service.clock import Clock
from service.config import Settings
from service.delivery import Deliverer
from service.delivery_leases import DeliveryLeases, DeliveryObserver
from service.errors import StoreError, StoreUnavailable
from service.leases import WatchLeases
from service.poller import Poller, PollObserver
from service.pollers import Pollers
from service.progress import ProgressWriter
from service.sender import Sender
from service.store.base import Store
from service.upstream import UpstreamClient
from service.vault import Vault

log = structlog.get_logger("service.worker")


class Observer(PollObserver, DeliveryObserver, Protocol):
    """Told how polling and delivering go: the metrics."""


@dataclass(frozen=True)
class Worker:
    owner: str
    clock: Clock
    leases: WatchLeases
    poller: Pollers
    writer: ProgressWriter
    deliverer: Deliverer

    @classmethod
    def build(
        cls,
        store: Store,
        upstreams: Mapping[str, UpstreamClient],
        sender: Sender,
        settings: Settings,
        clock: Clock,
        owner: str,
        observer: Observer,
        *,
        vault: Vault | None = None,
        notify: Callable[[str], None] | None = None,
        rand: Callable[[], float] = random.random,
    ) -> Worker:
        """The parts, each handed what it uses: a poller per upstream, with the client of each
        name in `upstreams`; `notify` hears of each watch whose events committed."""
        lease_s = settings.store.lease_s
        deliverer = Deliverer(
            DeliveryLeases(store, clock, owner, lease_s, observer),
            sender, settings.delivery, clock, vault=vault, rand=rand,
        )  # fmt: skip
        writer = ProgressWriter(store, deliverer, clock, owner, lease_s, notify)
        by_name = {}
        for name, client in upstreams.items():
            limits, poll = settings.upstream_named(name)
            by_name[name] = Poller(
                client, writer, limits, poll, clock, observer, name=name, vault=vault, rand=rand
            )
        poller = Pollers(by_name, writer)
        leases = WatchLeases(store, poller, settings, clock, owner)
        return cls(owner, clock, leases, poller, writer, deliverer)

    async def start(self) -> None:
        """Start polling, report the watches no process configured like this one polls, and
        claim what is due at once."""
        self.writer.start()
        self.poller.start()
        at_start = {
            "report-unconfigured-upstreams": self.leases.report_unconfigured,
            "claim-deliveries": self.deliverer.claim,
            "claim-watches": self.leases.claim,
        }
        for name, job in at_start.items():
            await run_logged(name, job)

    async def stop(self, grace_s: float) -> None:
        """Claim nothing more; give the polls and attempts in flight `grace_s`, once; write
        what is pending and release every lease, so another process can take over at once."""
        deadline = self.clock.now() + grace_s
        self.leases.close()
        self.deliverer.stop_claiming()
        await self.poller.stop(grace_s)
        await self.writer.stop()
        abandoned = await self.deliverer.stop(deadline - self.clock.now())
        released = 0
        with contextlib.suppress(StoreError):  # else their leases run out instead
            released = await self.leases.release()
        log.info("worker.stopped", released=released, abandoned=abandoned)


async def run_logged(name: str, job: Callable[[], Awaitable[None]]) -> None:
    """Run the upkeep job `name`, its store errors logged: its next run tries again."""
    try:
        await job()
    except StoreUnavailable:
        pass  # logged once per outage by the store's health
    except StoreError as error:
        log.error("upkeep.failed", job=name, error=str(error))


async def run_scheduled(name: str, job: Callable[[], Awaitable[None]]) -> None:
    """`run_logged` as the scheduler runs it, the whole of its task: a run that the scheduler's
    shutdown cancels (the bridge is draining) ends quietly, where the scheduler would log it as
    a failed job with a traceback."""
    try:
        await run_logged(name, job)
    except asyncio.CancelledError:
        log.info("upkeep.cut_short", job=name)
