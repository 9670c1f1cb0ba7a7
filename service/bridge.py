"""Assembly: builds the long-lived parts from the settings, starts and stops them in order."""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp
import httpx
import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from service import http_clients, ssrf
from service import store as stores
from service.api.responses import registration_body
from service.auth import Access, Authenticator, RateLimiter
from service.clock import Clock, SystemClock
from service.config import Settings, mask_url_password
from service.errors import StoreError, StoreUnavailable
from service.event_feed import EventFeed
from service.event_hub import EventHub
from service.generate import GenerateService
from service.metrics import Metrics
from service.monitor import Monitor
from service.redelivery import RedeliveryService
from service.sender import InlineSender, ProcessSender, Sender
from service.sign_outs import SignOuts
from service.store.base import Store
from service.store.health import StoreHealth
from service.streams import OpenStreams
from service.subscriptions import SubscriptionService
from service.upstream import UpstreamClient
from service.vault import Vault
from service.watches import WatchService
from service.worker import Worker, run_scheduled

log = structlog.get_logger("service.bridge")
# How often new work is claimed: unclaimed watches, and due deliveries (also claimed as soon as
# there is room for them).
CLAIM_S = 1.0
HOUSEKEEPING_S = 3600.0
GAUGES_S = 10.0


@dataclass(frozen=True)
class Job:
    """A periodic upkeep job: its name, its interval, what it runs."""

    name: str
    seconds: float
    run: Callable[[], Awaitable[None]]
    at_once: bool = False  # also when the scheduler starts


@dataclass
class Bridge:
    settings: Settings
    clock: Clock
    store: Store
    worker: Worker
    watches: WatchService
    redelivery: RedeliveryService
    generation: GenerateService
    subscriptions: SubscriptionService
    feed: EventFeed
    streams: OpenStreams  # held by API clients and dashboards, per tenant
    monitor: Monitor
    sign_outs: SignOuts
    scheduler: AsyncIOScheduler
    access: Access
    metrics: Metrics
    upstream_http: Mapping[str, httpx.AsyncBaseTransport]  # by upstream
    sender: Sender
    lookups: ssrf.HostLookups  # of callback hosts, at registration
    # The stopping of in-flight work that `drain` begins and `stop` awaits.
    stopping: asyncio.Task[None] | None = field(default=None, init=False)

    @classmethod
    def build(cls, settings: Settings, clock: Clock | None = None) -> Bridge:
        clock = clock or SystemClock()
        owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        # One view of the store's health for every caller: one log line per outage.
        store = stores.from_settings(settings.store, StoreHealth(clock))
        metrics = Metrics(settings.upstream_names)
        # Each upstream has connections of its own: one that hangs holds none of another's.
        upstream_http = {
            name: http_clients.transport(
                aiohttp.TCPConnector(
                    limit=settings.upstream_named(name)[0].max_concurrency, limit_per_host=0
                )
            )
            for name in settings.upstream_names
        }
        upstreams = {
            name: _upstream_client(name, settings, upstream_http[name], metrics)
            for name in settings.upstream_names
        }
        vault = Vault(settings.security.encryption_keys)
        # Clients waiting on a watch (long-poll, event stream) wake when its events commit.
        hub = EventHub()
        sender = _sender(settings, metrics)
        lookups = ssrf.HostLookups(clock, settings.security.callback_dns_timeout_s)
        worker = Worker.build(
            store, upstreams, sender, settings, clock, owner, metrics,
            vault=vault, notify=hub.publish,
        )  # fmt: skip
        watches = WatchService(
            store, worker.poller, worker.deliverer, owner, settings, clock, registration_body,
            vault, lookups,
        )  # fmt: skip
        redelivery = RedeliveryService(store, watches, worker.deliverer, settings, clock)
        subscriptions = SubscriptionService(store, settings, clock, sender, vault, lookups)
        feed = EventFeed(store, watches, hub, settings.api.sse_keepalive_s, settings.api.max_wait_s)
        streams = OpenStreams(settings.api.max_streams_per_tenant)
        generation = GenerateService(watches, upstreams, settings, store.health)
        scheduler = AsyncIOScheduler()
        monitor = Monitor(store, worker.poller, worker.deliverer, metrics, hub, scheduler, clock)
        access = Access(
            tokens=Authenticator(settings.auth.tokens),
            failures=RateLimiter(
                settings.auth.failed_auth_per_minute / 60, settings.auth.failed_auth_burst, clock
            ),
            registrations=RateLimiter(
                settings.auth.registrations_per_s, settings.auth.registration_burst, clock
            ),
        )
        return cls(
            settings, clock, store, worker, watches, redelivery, generation, subscriptions, feed,
            streams, monitor, SignOuts(store), scheduler, access, metrics, upstream_http, sender,
            lookups,
        )  # fmt: skip

    def upkeep(self) -> list[Job]:
        """The periodic jobs, with their intervals."""
        worker = self.worker
        # A lease is renewed once a third of it has passed: a renewal may fail, and the next
        # still comes before the lease runs out.
        renew_s = self.settings.store.lease_s / 3
        return [
            Job("claim-deliveries", CLAIM_S, worker.deliverer.claim),
            Job("claim-watches", CLAIM_S, worker.leases.claim),
            Job("renew-watch-leases", renew_s, worker.leases.renew),
            Job("renew-delivery-leases", renew_s, worker.deliverer.renew),
            Job("gauges", GAUGES_S, self.refresh_gauges, at_once=True),
            Job("housekeeping", HOUSEKEEPING_S, self.housekeeping),
        ]

    async def start(self) -> None:
        await self.store.open()
        await self.sender.start()
        await self.worker.start()
        for job in self.upkeep():
            first = {"next_run_time": datetime.now(UTC)} if job.at_once else {}
            self.scheduler.add_job(
                run_scheduled, "interval", args=(job.name, job.run), seconds=job.seconds,
                id=job.name, max_instances=1, coalesce=True, misfire_grace_time=None, **first,
            )  # fmt: skip
        self.scheduler.start()
        store = mask_url_password(self.settings.store.url)
        log.info("bridge.started", owner=self.worker.owner, store=store)
        if self.settings.security.encryption_key is None:
            log.warning(
                "bridge.secrets_in_clear",
                detail="security.encryption_key is not set: signing secrets, callback header "
                "values and stored idempotent answers are kept in clear in the store; set it "
                "from `webhook-bridge new-encryption-key`",
            )

    def drain(self) -> None:
        """Begin shutting down (SIGTERM), at once: readiness fails, no poll or delivery is
        claimed any more, waiting clients (long-polls, event streams) are answered, and the
        polls and deliveries in flight get `server.shutdown_grace_s`, once, before their leases
        are released. `stop` awaits the rest."""
        if self.monitor.draining:
            return
        self.monitor.drain()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.feed.hub.close()
        self.stopping = asyncio.create_task(
            self.worker.stop(self.settings.server.shutdown_grace_s), name="bridge stop"
        )

    async def stop(self) -> None:
        self.drain()
        assert self.stopping is not None
        await self.stopping
        for transport in self.upstream_http.values():
            await transport.aclose()
        await self.sender.aclose()
        self.lookups.close()
        await self.store.close()
        log.info("bridge.stopped")

    async def housekeeping(self) -> None:
        """Purge old bodies and sessions; a store error is the upkeep job's (`run_logged`)."""
        retention_s = self.settings.delivery.payload_retention_days * 86400
        now = self.clock.now()
        purged = await self.store.purge_bodies(now - retention_s)
        # Signed-out sessions whose cookies have expired: nothing can present them now.
        forgotten = await self.store.purge_revoked_sessions(now)
        if purged:
            log.info("housekeeping.purged", deliveries=purged)
        if forgotten:
            log.info("housekeeping.purged_sign_outs", sessions=forgotten)

    async def refresh_gauges(self) -> None:
        """Watches per status come from the store, so they are counted every few seconds,
        not at each scrape. While the store refuses writes, a write is tried too: a bridge
        with nothing to write sees the end of the outage all the same."""
        try:
            if self.store.health.refusing_writes:
                await self.store.ping(write=True)
            counts = await self.store.count_watches()
            due = await self.store.count_due_deliveries(self.clock.now())
        except StoreUnavailable:
            return  # logged once for the whole outage (`StoreHealth`)
        except StoreError as error:
            log.warning("metrics.count_failed", error=str(error))
            return
        for status, count in counts.items():
            self.metrics.watches.labels(status).set(count)
        self.metrics.delivery_backlog.set(due)


def _upstream_client(
    name: str, settings: Settings, transport: httpx.AsyncBaseTransport, metrics: Metrics
) -> UpstreamClient:
    limits = settings.upstream_named(name)[0]
    return UpstreamClient(
        transport, limits.root, limits.request_timeout_s, bridge_key=limits.bridge_key,
        observe=functools.partial(metrics.polled, name), reader=limits.reader(),
    )  # fmt: skip


def _sender(settings: Settings, metrics: Metrics) -> Sender:
    if settings.delivery.sender == "process":
        return ProcessSender(
            settings.delivery, settings.security, settings.log,
            on_exit=lambda _code: metrics.sender_exits.inc(),
        )  # fmt: skip
    transport = http_clients.delivery_transport(settings.delivery, settings.security)
    return InlineSender(
        transport, settings.delivery.timeout_s, settings.delivery.max_response_bytes
    )
