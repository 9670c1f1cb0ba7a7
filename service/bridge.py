"""Assembly: builds the long-lived parts from the settings, starts and stops them in order."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp
import httpx
import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from service import http_clients
from service import store as stores
from service.api.responses import registration_body
from service.auth import Access, Authenticator, RateLimiter
from service.clock import Clock, SystemClock
from service.config import Settings
from service.delivery import Deliverer
from service.dispatcher import Dispatcher
from service.errors import StoreError, StoreUnavailable
from service.event_feed import EventFeed
from service.event_hub import EventHub
from service.generate import GenerateService
from service.metrics import Metrics
from service.monitor import Monitor
from service.sender import InlineSender, ProcessSender, Sender
from service.sign_outs import SignOuts
from service.store.base import Store
from service.store.health import StoreHealth
from service.streams import OpenStreams
from service.subscriptions import SubscriptionService
from service.upstream import UpstreamClient
from service.vault import Vault
from service.watches import WatchService

log = structlog.get_logger("service.bridge")
TICK_S = 1.0
HOUSEKEEPING_S = 3600.0
GAUGES_S = 10.0


@dataclass
class Bridge:
    settings: Settings
    clock: Clock
    store: Store
    dispatcher: Dispatcher
    deliverer: Deliverer
    watches: WatchService
    generation: GenerateService
    subscriptions: SubscriptionService
    feed: EventFeed
    streams: OpenStreams  # held by API clients and dashboards, per tenant
    monitor: Monitor
    sign_outs: SignOuts
    scheduler: AsyncIOScheduler
    access: Access
    metrics: Metrics
    upstream_http: httpx.AsyncBaseTransport
    sender: Sender
    # The stopping of in-flight work that `drain` begins and `stop` awaits.
    stopping: asyncio.Task[None] | None = field(default=None, init=False)

    @classmethod
    def build(cls, settings: Settings, clock: Clock | None = None) -> Bridge:
        clock = clock or SystemClock()
        owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        # One view of the store's health for every caller: one log line per outage.
        store = stores.from_settings(settings.store, StoreHealth(clock))
        upstream_limit = settings.upstream.max_concurrency
        upstream_http = http_clients.transport(
            aiohttp.TCPConnector(limit=upstream_limit, limit_per_host=0)
        )
        sender = _sender(settings)
        bridge_key = settings.upstream.api_key
        upstream = UpstreamClient(
            upstream_http,
            settings.upstream.root,
            settings.upstream.request_timeout_s,
            bridge_key=None if bridge_key is None else bridge_key.get_secret_value(),
        )
        vault = Vault(settings.security.encryption_keys)
        deliverer = Deliverer(store, sender, settings.delivery, clock, owner, vault=vault)
        # Clients waiting on a watch (long-poll, event stream) wake when its events commit.
        hub = EventHub()
        dispatcher = Dispatcher(
            store, upstream, deliverer, settings, clock, owner, vault=vault, notify=hub.publish
        )
        watches = WatchService(store, dispatcher, settings, clock, registration_body, vault)
        subscriptions = SubscriptionService(store, settings, clock, vault)
        feed = EventFeed(store, hub, settings.api.sse_keepalive_s, settings.api.max_wait_s)
        streams = OpenStreams(settings.api.max_streams_per_tenant)
        generation = GenerateService(watches, upstream, settings, store.health)
        scheduler = AsyncIOScheduler()
        metrics = Metrics()
        monitor = Monitor(store, dispatcher, deliverer, metrics, hub, scheduler, clock)
        upstream.observe = metrics.polled
        deliverer.on_outcome = metrics.attempted
        if isinstance(sender, ProcessSender):
            sender.on_exit = lambda _code: metrics.sender_exits.inc()
        dispatcher.lateness = metrics.poll_lateness.observe
        dispatcher.on_circuit = metrics.circuit_changed
        access = Access(
            tokens=Authenticator(settings.auth.tokens),
            failures=RateLimiter(
                settings.auth.failed_auth_per_minute / 60, settings.auth.failed_auth_burst, clock
            ),
            registrations=RateLimiter(
                settings.auth.registrations_per_s, settings.auth.registration_burst, clock
            ),
            subscription_changes=RateLimiter(
                settings.auth.subscription_changes_per_min / 60,
                settings.auth.subscription_change_burst,
                clock,
            ),
        )
        return cls(
            settings, clock, store, dispatcher, deliverer, watches, generation, subscriptions,
            feed, streams, monitor, SignOuts(store), scheduler, access, metrics, upstream_http,
            sender,
        )  # fmt: skip

    async def start(self) -> None:
        await self.store.open()
        await self.sender.start()
        await self.dispatcher.start()
        self.scheduler.add_job(
            self.dispatcher.tick, "interval", seconds=TICK_S, id="dispatch",
            max_instances=1, coalesce=True, misfire_grace_time=None,
        )  # fmt: skip
        self.scheduler.add_job(
            self.refresh_gauges, "interval", seconds=GAUGES_S, id="gauges",
            max_instances=1, coalesce=True, next_run_time=datetime.now(UTC),
        )  # fmt: skip
        self.scheduler.add_job(
            self.housekeeping, "interval", seconds=HOUSEKEEPING_S, id="housekeeping",
            max_instances=1, coalesce=True,
        )  # fmt: skip
        self.scheduler.start()
        log.info("bridge.started", owner=self.dispatcher.owner, store=_safe_url(self))
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
            self.dispatcher.stop(self.settings.server.shutdown_grace_s), name="bridge stop"
        )

    async def stop(self) -> None:
        self.drain()
        assert self.stopping is not None
        await self.stopping
        await self.upstream_http.aclose()
        await self.sender.aclose()
        await self.store.close()
        log.info("bridge.stopped")

    async def housekeeping(self) -> None:
        retention_s = self.settings.delivery.payload_retention_days * 86400
        now = self.clock.now()
        try:
            purged = await self.store.purge_bodies(now - retention_s)
            # Signed-out sessions whose cookies have expired: nothing can present them now.
            forgotten = await self.store.purge_revoked_sessions(now)
        except StoreUnavailable:
            return  # logged once for the whole outage (`StoreHealth`); next hour, then
        except StoreError as error:
            log.error("housekeeping.failed", error=str(error))
            return
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


def _sender(settings: Settings) -> Sender:
    if settings.delivery.sender == "process":
        return ProcessSender(settings.delivery, settings.security, settings.log)
    transport = http_clients.delivery_transport(settings.delivery, settings.security)
    return InlineSender(
        transport, settings.delivery.timeout_s, settings.delivery.max_response_bytes
    )


def _safe_url(bridge: Bridge) -> str:
    url = bridge.settings.store.url
    return url.split("@", 1)[-1] if "@" in url else url
