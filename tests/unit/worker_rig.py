"""The worker as the bridge builds it (`Worker.build`), on the memory store and a fake clock,
with the upstream and the receivers behind `httpx.MockTransport`s: what the poller's unit
tests share."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from service import breaker
from service.bridge import CLAIM_S
from service.clock import FakeClock
from service.config import (
    DeliverySettings,
    NamedUpstreamSettings,
    PollSettings,
    Settings,
    StoreSettings,
    UpstreamSettings,
)
from service.errors import StoreError
from service.sender import InlineSender
from service.store.base import Attempt, AttemptOutcome, Delivery, Watch
from service.store.memory import MemoryStore
from service.upstream import UpstreamClient
from service.worker import Worker
from tests.integration.test_store_contract import new_watch
from tests.unit.delivery_rig import Body
from tests.unit.fake_time import run_for, run_until

OWNER = "me"
BRIDGE_KEY = "bw_bridge_key"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
Answer = Callable[[str], httpx.Response]


def queued(job_id: str) -> httpx.Response:
    return httpx.Response(200, json={"id": job_id, "status": "queued", "queue_position": 3})


def succeeded(job_id: str) -> httpx.Response:
    return httpx.Response(200, json={"id": job_id, "status": "succeeded", "output": {}})


@dataclass
class Request:
    at: float  # on the fake clock
    job_id: str
    key: str | None  # the bearer token


@dataclass
class Upstream:
    """The upstream job API: `answer` gives each job's answer (queued, by default), after
    `duration_s` of the fake clock; every request is kept."""

    clock: FakeClock
    answer: Answer = queued
    duration_s: float = 0.0
    requests: list[Request] = field(default_factory=list)

    def jobs(self) -> list[str]:
        return [request.job_id for request in self.requests]

    def times(self, job_id: str) -> list[float]:
        """When `job_id` was polled, from the first request of the test."""
        start = self.requests[0].at
        return [round(r.at - start, 6) for r in self.requests if r.job_id == job_id]

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        job_id = request.url.path.rsplit("/", 1)[-1]
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ") or None
        self.requests.append(Request(self.clock.now(), job_id, bearer))
        if self.duration_s:
            await self.clock.sleep(self.duration_s)
        return self.answer(job_id)


@dataclass
class Observed:
    """The worker's observer: what the metrics would be told."""

    lateness: list[float] = field(default_factory=list)
    transitions: list[breaker.Transition] = field(default_factory=list)
    circuits: list[str] = field(default_factory=list)  # the upstream of each transition
    attempts: list[tuple[str, AttemptOutcome]] = field(default_factory=list)

    def poll_started(self, upstream: str, lateness_s: float) -> None:
        self.lateness.append(lateness_s)

    def circuit_changed(self, upstream: str, change: breaker.Transition) -> None:
        self.transitions.append(change)
        self.circuits.append(upstream)

    def attempted(
        self, delivery: Delivery, attempt: Attempt, outcome: AttemptOutcome, now: float
    ) -> None:
        self.attempts.append((delivery.id, outcome))

    def states(self) -> list[str]:
        return [change.after for change in self.transitions]


def settings(**sections: dict[str, Any]) -> Settings:
    """Settings for these tests: fixed 2.5 s polls without jitter, no retry jitter, changed by
    `sections` (`upstream={...}`, `poll={...}`, ...); `upstreams={name: {...}}` adds named
    upstreams at http://<name>.example, polled as the default one is."""
    upstream: dict[str, Any] = {"base_url": "http://upstream.example", "api_key": BRIDGE_KEY}
    named = {
        name: NamedUpstreamSettings(
            **({"base_url": f"http://{name}.example", "api_key": BRIDGE_KEY} | changes),
            poll=PollSettings(strategy="fixed", jitter=0.0),
        )
        for name, changes in sections.get("upstreams", {}).items()
    }
    poll: dict[str, Any] = {"strategy": "fixed", "jitter": 0.0}
    delivery: dict[str, Any] = {"jitter": 0.0}
    return Settings(
        upstream=UpstreamSettings(**(upstream | sections.get("upstream", {}))),
        poll=PollSettings(**(poll | sections.get("poll", {}))),
        delivery=DeliverySettings(**(delivery | sections.get("delivery", {}))),
        store=StoreSettings(url="memory://", **sections.get("store", {})),
        upstreams=named,
    )


@dataclass
class Rig:
    clock: FakeClock
    store: MemoryStore
    upstream: Upstream
    receivers: list[httpx.Request]
    worker: Worker
    observed: Observed
    settings: Settings

    async def run_for(self, seconds: float) -> None:
        await run_for(self.clock, seconds)

    async def until(self, predicate: Callable[[], Any], what: str, within_s: float = 60) -> None:
        await run_until(self.clock, predicate, what, within_s)

    @contextlib.asynccontextmanager
    async def upkeep(self) -> AsyncIterator[None]:
        """The worker's claims and lease renewals running on the fake clock as the bridge
        schedules them (`Bridge.upkeep`), a run the store refuses tried again at the next."""
        worker, renew_s = self.worker, self.settings.store.lease_s / 3
        jobs = [
            (CLAIM_S, worker.deliverer.claim), (CLAIM_S, worker.leases.claim),
            (renew_s, worker.leases.renew), (renew_s, worker.deliverer.renew),
        ]  # fmt: skip

        async def every(seconds: float, job: Callable[[], Awaitable[None]]) -> None:
            while True:
                await self.clock.sleep(seconds)
                with contextlib.suppress(StoreError):
                    await job()

        tasks = [asyncio.ensure_future(every(seconds, job)) for seconds, job in jobs]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def watch(self, job_id: str, **changes: Any) -> Watch:
        """A watch of `job_id` registered now, as the service layer builds it."""
        fields: dict[str, Any] = {
            "job_id": job_id,
            "created_at": self.clock.now(),
            "callback_url": f"https://receiver.example/{job_id}",
            "events": ("job.succeeded", "job.failed"),
            "payload_format": "envelope",
            "secret": SECRET,
            "poll_interval_s": 2.5,
            "timeout_s": 300.0,
        }
        return new_watch(**(fields | changes))

    async def register(self, job_id: str, **changes: Any) -> Watch:
        """Register a watch of `job_id` as `WatchService` does: committed with this process's
        lease, then adopted by the poller."""
        lease_until = self.clock.now() + self.settings.store.lease_s
        stored = await self.store.insert_watch(
            self.watch(job_id, **changes), lease_owner=OWNER, lease_until=lease_until
        )
        self.worker.poller.adopt(stored)
        return stored


@contextlib.asynccontextmanager
async def running(
    upstream_answer: Answer = queued,
    duration_s: float = 0.0,
    store_type: type[MemoryStore] = MemoryStore,
    stored: Sequence[Watch] = (),
    **sections: dict[str, Any],
) -> AsyncIterator[Rig]:
    """A started worker with these settings (see `settings`), on a store of `store_type` that
    holds the `stored` watches when it starts; stopped afterwards."""
    clock = FakeClock()
    store = store_type(clock)
    for watch in stored:
        await store.insert_watch(watch)
    upstream = Upstream(clock, upstream_answer, duration_s)
    received: list[httpx.Request] = []

    def receive(request: httpx.Request) -> httpx.Response:
        received.append(request)
        return httpx.Response(204, stream=Body(b""))

    config = settings(**sections)
    observed = Observed()
    async with (
        httpx.MockTransport(upstream) as upstream_http,
        httpx.MockTransport(receive) as receiver_http,
    ):
        clients = {
            name: UpstreamClient(
                upstream_http, limits.root, limits.request_timeout_s, bridge_key=BRIDGE_KEY,
                reader=limits.reader(),
            )
            for name in config.upstream_names
            for limits in [config.upstream_named(name)[0]]
        }  # fmt: skip
        sender = InlineSender(receiver_http, 15.0, 4096)
        worker = Worker.build(
            store,
            clients,
            sender,
            config,
            clock,
            OWNER,
            observed,
            rand=lambda: 0.5,
        )
        rig = Rig(clock, store, upstream, received, worker, observed, config)
        await worker.start()
        yield rig
        stopping = asyncio.ensure_future(worker.stop(1.0))
        await run_until(clock, stopping.done, "stopped")
