"""Assembly: builds the long-lived parts from the settings, starts and stops them in order."""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import httpx
import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from service import http_clients
from service import store as stores
from service.auth import Authenticator, RateLimiter
from service.clock import Clock, SystemClock
from service.config import Settings
from service.delivery import Deliverer
from service.dispatcher import Dispatcher
from service.errors import StoreError
from service.event_feed import EventFeed
from service.event_hub import EventHub
from service.generate import GenerateService
from service.metrics import Metrics
from service.sender import InlineSender, ProcessSender, Sender
from service.store.base import Store
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
    scheduler: AsyncIOScheduler
    auth: Authenticator
    limiter: RateLimiter  # registrations
    subscription_limiter: RateLimiter  # subscription changes
    metrics: Metrics
    upstream_http: httpx.AsyncClient
    sender: Sender
    draining: bool = False

    @classmethod
    def build(cls, settings: Settings, clock: Clock | None = None) -> Bridge:
        clock = clock or SystemClock()
        owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        store = stores.from_settings(settings.store)
        upstream_limit = settings.upstream.max_concurrency
        upstream_http = http_clients.http_client(
            http_clients.session(aiohttp.TCPConnector(limit=upstream_limit, limit_per_host=0)),
            settings.upstream.request_timeout_s,
        )
        sender = _sender(settings)
        upstream = UpstreamClient(
            upstream_http, settings.upstream.root, settings.upstream.request_timeout_s
        )
        vault = Vault(settings.security.encryption_keys)
        deliverer = Deliverer(store, sender, settings.delivery, clock, owner, vault=vault)
        # Clients waiting on a watch (long-poll, event stream) wake when its events commit.
        hub = EventHub()
        dispatcher = Dispatcher(
            store, upstream, deliverer, settings, clock, owner, vault=vault, notify=hub.publish
        )
        watches = WatchService(store, dispatcher, settings, clock, vault)
        subscriptions = SubscriptionService(store, settings, clock, vault)
        feed = EventFeed(store, hub, settings.api.sse_keepalive_s)
        streams = OpenStreams(settings.api.max_streams_per_tenant)
        generation = GenerateService(watches, upstream, settings)
        scheduler = AsyncIOScheduler()
        metrics = Metrics()
        upstream.observe = metrics.polled
        deliverer.on_outcome = metrics.attempted
        if isinstance(sender, ProcessSender):
            sender.on_exit = lambda _code: metrics.sender_exits.inc()
        dispatcher.lateness = metrics.poll_lateness.observe
        dispatcher.on_circuit = metrics.circuit_changed
        auth = Authenticator(settings.auth.tokens)
        limiter = RateLimiter(
            settings.auth.registrations_per_s, settings.auth.registration_burst, clock
        )
        subscription_limiter = RateLimiter(
            settings.auth.subscription_changes_per_min / 60,
            settings.auth.subscription_change_burst,
            clock,
        )
        return cls(
            settings, clock, store, dispatcher, deliverer, watches, generation, subscriptions,
            feed, streams, scheduler, auth, limiter, subscription_limiter, metrics, upstream_http,
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

    async def stop(self) -> None:
        self.draining = True
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        await self.dispatcher.stop(self.settings.server.shutdown_grace_s)
        await self.upstream_http.aclose()
        await self.sender.aclose()
        await self.store.close()
        log.info("bridge.stopped")

    async def housekeeping(self) -> None:
        retention_s = self.settings.delivery.payload_retention_days * 86400
        try:
            purged = await self.store.purge_bodies(self.clock.now() - retention_s)
        except StoreError as error:
            log.error("housekeeping.failed", error=str(error))
            return
        if purged:
            log.info("housekeeping.purged", deliveries=purged)

    async def refresh_gauges(self) -> None:
        """Watches per status come from the store, so they are counted every few seconds,
        not at each scrape."""
        try:
            counts = await self.store.count_watches()
            due = await self.store.count_due_deliveries(self.clock.now())
        except StoreError as error:
            log.warning("metrics.count_failed", error=str(error))
            return
        for status, count in counts.items():
            self.metrics.watches.labels(status).set(count)
        self.metrics.delivery_backlog.set(due)

    def render_metrics(self) -> bytes:
        self.metrics.held_watches.set(self.dispatcher.held_count)
        self.metrics.poll_backlog.set(self.dispatcher.due_backlog())
        self.metrics.throttled.set(self.dispatcher.throttled)
        self.metrics.deliveries_in_flight.set(self.deliverer.in_flight)
        return self.metrics.render()

    async def ready(self) -> str | None:
        """None when ready, else why not."""
        if self.draining:
            return "draining: the bridge is shutting down"
        if not self.scheduler.running or not self.dispatcher.running:
            return "the scheduler is not running"
        try:
            await self.store.ping()
        except StoreError as error:
            return f"the store does not answer: {error}"
        return None


def _sender(settings: Settings) -> Sender:
    if settings.delivery.sender == "process":
        return ProcessSender(settings.delivery, settings.security, settings.log)
    client = http_clients.delivery_client(settings.delivery, settings.security)
    return InlineSender(client, settings.delivery.timeout_s, settings.delivery.max_response_bytes)


def _safe_url(bridge: Bridge) -> str:
    url = bridge.settings.store.url
    return url.split("@", 1)[-1] if "@" in url else url
