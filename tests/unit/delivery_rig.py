"""A `Deliverer` as the worker builds it, on the memory store and a fake clock, with receivers
behind an `httpx.MockTransport`: what the deliverer's unit tests share."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from service.clock import FakeClock
from service.config import DeliverySettings
from service.delivery import Deliverer
from service.delivery_leases import DeliveryLeases, DeliveryObserver
from service.sender import InlineSender
from service.store.base import (
    Attempt,
    AttemptOutcome,
    AttemptRecord,
    Completion,
    Delivery,
    NewDelivery,
    NewEvent,
    callback_host,
)
from service.store.memory import MemoryStore
from tests.integration.test_store_contract import FAR, T0, new_watch
from tests.unit.fake_time import run_for, run_until

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SLOW, FAST = "http://slow.example:8001", "http://fast.example:8002"
OWNER = "me"
LEASE_S = 15.0


def delivery(n: int, host: str = SLOW, tenant: str = "") -> Delivery:
    return Delivery(
        id=f"msg_{host[-4:]}_{n}",
        watch_id=f"wch_{n}",
        event_type="job.succeeded",
        body=b'{"n": %d}' % n,
        final=True,
        attempts=0,
        lease_token=7,
        callback_url=f"{host}/hooks/{n}",
        callback_method="POST",
        callback_headers={},
        secret=SECRET,
        tenant=tenant,
    )


def keys(d: Delivery) -> tuple[str, str]:
    return callback_host(d.callback_url), d.tenant


class Store(MemoryStore):
    """The memory store, recording the shares each delivery claim asked for; while `gate` is
    unset, commits of outcomes wait (the grouping of outcomes into commits, which a store that
    commits at once cannot show), and lease renewals while `renewals` is."""

    def __init__(self) -> None:
        super().__init__()
        self.claims: list[dict[str, Any]] = []
        self.commits: list[int] = []
        self.gate, self.renewals = asyncio.Event(), asyncio.Event()
        self.gate.set()
        self.renewals.set()

    async def claim_deliveries(
        self, owner: str, now: float, lease_until: float, limit: int, **shares: Any
    ) -> list[Delivery]:
        self.claims.append({"limit": limit, **shares})
        return await super().claim_deliveries(owner, now, lease_until, limit, **shares)

    async def renew_delivery_leases(
        self, owner: str, held: Sequence[tuple[str, int]], lease_until: float
    ) -> set[str]:
        await self.renewals.wait()
        return await super().renew_delivery_leases(owner, held, lease_until)

    async def record_attempts(self, owner: str, records: Sequence[AttemptRecord]) -> set[str]:
        await self.gate.wait()
        self.commits.append(len(records))
        return await super().record_attempts(owner, records)


async def held(store: MemoryStore, *deliveries: Delivery) -> list[Delivery]:
    """Each of `deliveries` as the store hands it to the deliverer: the final callback delivery
    (its id, URL, body and tenant) of a watch of its own, claimed by OWNER."""
    found = []
    for d in deliveries:
        watch = new_watch(id=f"wch_{d.id}", tenant=d.tenant, callback_url=d.callback_url)
        await store.insert_watch(replace(watch, secret=SECRET), lease_owner=OWNER, lease_until=FAR)
        own = NewDelivery(d.id, d.event_type, d.body, final=True)
        final = NewEvent(f"evt_{d.id}", d.event_type, True, d.body, own)
        done = Completion(watch.id, 1, "succeeded", None, final)
        found += await store.complete_watch(OWNER, T0, done, FAR)
    return found


async def due(store: MemoryStore, *deliveries: Delivery) -> None:
    """Each of `deliveries` due in `store`, claimed by nobody."""
    claimed = await held(store, *deliveries)
    await store.release_deliveries(OWNER, [(d.id, d.lease_token) for d in claimed])


def recorded(store: MemoryStore) -> list[str]:
    """The deliveries whose attempts were committed, in that order."""
    return [attempt.delivery_id for attempt in store.attempts]


def released(store: MemoryStore) -> list[str]:
    """The pending deliveries nobody holds: handed back."""
    return [
        d.id for d in store.deliveries.values() if d.status == "pending" and d.lease.owner is None
    ]


Answer = Callable[[httpx.Request], httpx.Response]


@dataclass
class Receivers:
    """An HTTP transport: the slow host answers once `open_slow` is set, others at once; an
    answer of `answers` by path when there is one, else a 200."""

    answers: dict[str, Answer] = field(default_factory=dict)
    open_slow: asyncio.Event = field(default_factory=asyncio.Event)
    requests: list[httpx.Request] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [str(request.url) for request in self.requests]

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.host == "slow.example":
            await self.open_slow.wait()
        answer = self.answers.get(request.url.path)
        if answer is not None:
            return answer(request)
        return httpx.Response(200, stream=Body(b'{"ok": true}'))


class Body(httpx.AsyncByteStream):
    """An answer body streamed as a real connection's is (the deliverer reads it capped)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def __aiter__(self) -> Any:
        yield self._data


class Outcomes:
    """A delivery observer: the outcome of each attempt recorded, by delivery id."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, AttemptOutcome]] = []

    def attempted(
        self, delivery: Delivery, attempt: Attempt, outcome: AttemptOutcome, now: float
    ) -> None:
        self.seen.append((delivery.id, outcome))


@dataclass
class Rig:
    store: Store
    receivers: Receivers
    deliverer: Deliverer
    clock: FakeClock
    outcomes: Outcomes

    async def until(self, predicate: Callable[[], Any], what: str) -> None:
        await run_until(self.clock, predicate, what)

    async def run_for(self, seconds: float) -> None:
        await run_for(self.clock, seconds)

    async def held(self, *deliveries: Delivery) -> list[Delivery]:
        return await held(self.store, *deliveries)

    async def due(self, *deliveries: Delivery) -> None:
        await due(self.store, *deliveries)

    async def drain(self, grace_s: float) -> list[tuple[str, int]]:
        """`Deliverer.drain`, the clock moving meanwhile."""
        draining = asyncio.ensure_future(self.deliverer.drain(grace_s))
        await self.until(draining.done, "drained")
        return draining.result()

    async def submit(self, *deliveries: Delivery) -> None:
        """Hand the deliverer each of `deliveries`, as claimed from the store."""
        for claimed in await held(self.store, *deliveries):
            self.deliverer.submit(claimed)


@contextlib.asynccontextmanager
async def running(
    answers: Mapping[str, Answer] | None = None,
    sender_type: type[InlineSender] = InlineSender,
    **settings: Any,
) -> AsyncIterator[Rig]:
    """A deliverer on a new memory store and a fake clock, and receivers, with these
    DeliverySettings (by default a retry 5 s after a failure, no jitter); drained afterwards."""
    delivery_settings = DeliverySettings(**{"retry_schedule_s": (5.0,), "jitter": 0, **settings})
    store, clock, outcomes = Store(), FakeClock(T0), Outcomes()
    receivers = Receivers(dict(answers or {}))
    async with httpx.MockTransport(receivers) as transport:
        sender = sender_type(
            transport, delivery_settings.timeout_s, delivery_settings.max_response_bytes
        )
        observer: DeliveryObserver = outcomes
        leases = DeliveryLeases(store, clock, OWNER, LEASE_S, observer)
        deliverer = Deliverer(leases, sender, delivery_settings, clock)
        rig = Rig(store, receivers, deliverer, clock, outcomes)
        yield rig
        receivers.open_slow.set()
        store.gate.set()
        await rig.drain(5.0)
