"""The per-host delivery limit: its bookkeeping (`Slots`, one tenant) and the `Deliverer`
around it, on the memory store, with an HTTP transport of the test's own at the edge."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from typing import Any, cast

import httpx
import pytest

from service.clock import FakeClock
from service.config import DeliverySettings
from service.delivery import LINE, ClaimPlan, Deliverer
from service.sender import InlineSender
from service.slots import Slots
from service.store.base import (
    AttemptRecord,
    Completion,
    Delivery,
    NewDelivery,
    NewEvent,
    Store,
    callback_host,
)
from service.store.memory import MemoryStore
from tests.integration.test_store_contract import FAR, T0, new_watch

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SLOW, FAST = "http://slow.example:8001", "http://fast.example:8002"


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


def host_slots(per_host: int, line: int = LINE) -> Slots[Delivery]:
    """The two limits with room for any number of one tenant's: the per-host one alone."""
    return Slots(keys, per_host, 4096, line)


def host_plan(plan: ClaimPlan) -> tuple[int, int, dict[str, int]]:
    return plan.limit, plan.per_host, plan.host_limits


# The bookkeeping.


def test_host_slots_run_then_wait_then_release() -> None:
    """Up to `per_host` run, as many more wait in line, the rest go back; other hosts are apart."""
    slots = host_slots(per_host=2, line=1)
    decisions = [slots.admit(delivery(n)) for n in range(6)]
    assert decisions == ["run", "run", "wait", "wait", "release", "release"]
    assert slots.admit(delivery(0, FAST)) == "run"
    assert slots.hosts.limits() == {SLOW: 0, FAST: 3}
    assert slots.hosts.room("https://idle.example") == 4
    assert [d.id for d in slots.hosts.waiting(SLOW)] == [delivery(2).id, delivery(3).id]
    assert slots.hosts.waiting(FAST) == []


def test_host_slots_pass_a_freed_slot_to_the_next_waiting_in_order() -> None:
    """An ended attempt hands its slot to the oldest waiting delivery; with none, it frees it."""
    slots = host_slots(per_host=1, line=1)
    assert [slots.admit(delivery(n)) for n in range(3)] == ["run", "wait", "release"]
    assert slots.done(delivery(0)) == [delivery(1)]
    assert slots.hosts.running(SLOW) == 1  # taken over by delivery 1
    assert slots.done(delivery(1)) == []
    assert slots.hosts.running(SLOW) == 0
    assert slots.hosts.limits() == {}
    assert slots.admit(delivery(4)) == "run"


def test_host_slots_line_is_a_multiple_of_the_limit() -> None:
    """With a line of 3, a host takes 2 running and 6 waiting before any goes back."""
    slots = host_slots(per_host=2, line=3)
    decisions = [slots.admit(delivery(n)) for n in range(9)]
    assert decisions == ["run"] * 2 + ["wait"] * 6 + ["release"]
    assert slots.hosts.room(SLOW) == 0
    assert slots.done(delivery(0)) == [delivery(2)]
    assert slots.hosts.room(SLOW) == 1


def test_host_slots_forget_idle_hosts() -> None:
    """A host with nothing running or waiting takes no memory: thousands of hosts come and go."""
    slots = host_slots(per_host=4)
    for n in range(5000):
        host = f"https://h{n}.example"
        assert slots.admit(delivery(n, host)) == "run"
        assert slots.done(delivery(n, host)) == []
    assert slots.hosts.limits() == {}
    assert slots.tenants.limits() == {}


def test_host_slots_clear_waiting_returns_what_never_started() -> None:
    """A shutdown takes the waiting deliveries out of line (their leases are to be released)."""
    slots = host_slots(per_host=1, line=1)
    for n in range(3):
        slots.admit(delivery(n))
    assert slots.clear_waiting() == [delivery(1)]
    assert slots.waiting() == []
    assert slots.done(delivery(0)) == []


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("https://receiver.example/hooks", "https://receiver.example"),
        ("http://127.0.0.1:9000/hooks/a?delay_s=15", "http://127.0.0.1:9000"),  # port kept
        ("https://alice:s3cret@API.Example:8443/x", "https://api.example:8443"),  # no userinfo
        ("https://a@b@h.example/", "https://h.example"),  # the last @ ends the userinfo
        ("http://[::1]:8080/p", "http://[::1]:8080"),  # IPv6 literal
        ("https://h.example?next=@evil", "https://h.example"),  # an @ in the query is not one
        ("HTTPS://H.example#top", "https://h.example"),  # case folded
    ],
)
def test_callback_host(url: str, key: str) -> None:
    """The per-host key is scheme, host and port of the URL as written."""
    assert callback_host(url) == key


# The deliverer, with the memory store.

OWNER = "me"


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


async def submit(store: MemoryStore, deliverer: Deliverer, *deliveries: Delivery) -> None:
    """Hand the deliverer each of `deliveries`, as claimed from `store`."""
    for claimed in await held(store, *deliveries):
        deliverer.submit(claimed)


def recorded(store: MemoryStore) -> list[str]:
    """The deliveries whose attempts were committed, in that order."""
    return [attempt.delivery_id for attempt in store.attempts]


def released(store: MemoryStore) -> list[str]:
    """The pending deliveries nobody holds: handed back."""
    return [
        d.id for d in store.deliveries.values() if d.status == "pending" and d.lease.owner is None
    ]


class FakeStore:
    """Records each commit of the deliverer, and makes them wait while `hold` is unset: the
    grouping of outcomes into commits, which the memory store (committing at once) cannot
    show."""

    def __init__(self) -> None:
        self.recorded: list[AttemptRecord] = []
        self.commits: list[int] = []
        self.hold = asyncio.Event()

    async def record_attempts(self, owner: str, records: Sequence[AttemptRecord]) -> set[str]:
        await self.hold.wait()
        self.commits.append(len(records))
        self.recorded.extend(records)
        return set()


class Receivers:
    """An HTTP transport: the slow host answers once `open_slow` is set, others at once."""

    def __init__(self) -> None:
        self.open_slow = asyncio.Event()
        self.requests: list[str] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(str(request.url))
        if request.url.host == "slow.example":
            await self.open_slow.wait()
        return httpx.Response(200, stream=Body(b'{"ok": true}'))


class Body(httpx.AsyncByteStream):
    """An answer body streamed as a real connection's is (the deliverer reads it capped)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def __aiter__(self) -> Any:
        yield self._data


async def eventually(predicate: Callable[[], Any], what: str, within_s: float = 5.0) -> None:
    """Until `predicate()` is true; fail at the deadline (no fixed sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    # Polled: the state is the deliverer's own, which signals nothing when it changes.
    while not predicate():
        assert loop.time() < deadline, f"not within {within_s:g} s: {what}"
        await asyncio.sleep(0.001)


@contextlib.asynccontextmanager
async def running(store: Store | None = None, /, **limits: int) -> AsyncIterator[Any]:
    """A deliverer on `store` (a new memory store when None) and receivers, with these limits
    of DeliverySettings and a retry 5 s after a failure; drained afterwards."""
    settings = DeliverySettings(**limits, retry_schedule_s=(5.0,))
    store = MemoryStore() if store is None else store
    receivers = Receivers()
    async with httpx.MockTransport(receivers) as transport:
        sender = InlineSender(transport, settings.timeout_s, settings.max_response_bytes)
        deliverer = Deliverer(store, sender, settings, FakeClock(), OWNER)
        yield store, receivers, deliverer
        receivers.open_slow.set()
        await deliverer.drain(5.0)


LIMITS = {"max_concurrency": 8, "max_per_host": 2, "max_per_tenant": 8}


@pytest.fixture
async def setup() -> AsyncIterator[Any]:
    # One tenant, whose limit is the global one: the per-host limit alone.
    async with running(**LIMITS) as running_deliverer:
        yield running_deliverer


async def test_a_slow_host_only_holds_its_own_slots(setup: Any) -> None:
    """Ten deliveries to a host that does not answer take two slots; the fast host's go through
    at once; six wait (held, leases renewed, no global slot), two go back to the store."""
    store, receivers, deliverer = setup
    await submit(store, deliverer, *(delivery(n) for n in range(10)))
    await submit(store, deliverer, *(delivery(n, FAST) for n in range(3)))
    await eventually(lambda: len(recorded(store)) == 3, "the fast host's three recorded")
    assert {store.deliveries[d].host for d in recorded(store)} == {FAST}
    assert len([u for u in receivers.requests if "slow" in u]) == 2
    await eventually(lambda: deliverer.in_flight == 2, "only the slow host's two in flight")
    assert deliverer.free_slots == 6
    await eventually(lambda: len(released(store)) == 2, "two handed back")
    assert released(store) == [delivery(8).id, delivery(9).id]
    held = {delivery_id for delivery_id, _ in deliverer.held()}
    assert held == {delivery(n).id for n in range(8)}
    assert host_plan(deliverer.claim_plan()) == (6, 2, {SLOW: 0})

    receivers.open_slow.set()
    await eventually(lambda: len(recorded(store)) == 11, "the slow host's eight recorded")
    assert sorted(recorded(store)[3:]) == sorted(delivery(n).id for n in range(8))
    await eventually(lambda: deliverer.held() == [], "nothing held once all is recorded")
    assert deliverer.claim_plan().host_limits == {}


async def test_outcomes_are_committed_together_and_only_then_done() -> None:
    """Outcomes arriving while a commit runs share the next one; none counts before it commits."""
    fake = FakeStore()
    async with running(cast(Store, fake), **LIMITS) as (_, receivers, deliverer):
        outcomes: list[str] = []
        deliverer.on_outcome = lambda d, attempt, outcome, now: outcomes.append(d.id)
        for n in range(6):
            deliverer.submit(delivery(n, f"http://h{n}.example"))
        await eventually(lambda: len(receivers.requests) == 6, "six requests sent")
        await asyncio.sleep(0)
        assert outcomes == []  # sent, not committed: not done
        assert len(deliverer.held()) == 6  # still held: their leases are renewed
        fake.hold.set()
        await eventually(lambda: len(outcomes) == 6, "six outcomes")
        assert sum(fake.commits) == 6
        assert len(fake.commits) < 6


async def test_drain_hands_back_waiting_and_unfinished_deliveries(setup: Any) -> None:
    """On shutdown, what waited for its host and what was still in flight are returned for
    release; nothing waiting is started."""
    store, receivers, deliverer = setup
    await submit(store, deliverer, *(delivery(n) for n in range(4)))
    await eventually(lambda: len(receivers.requests) == 2, "two slow requests in flight")
    abandoned = await deliverer.drain(0.05)
    assert sorted(abandoned) == sorted((delivery(n).id, 1) for n in range(4))
    assert recorded(store) == []
    assert len(receivers.requests) == 2
    assert deliverer.held() == []


def claims_recorded(deliverer: Deliverer) -> list[ClaimPlan]:
    """The plans of the claims the deliverer makes from now on, each finding nothing."""
    claims: list[ClaimPlan] = []

    async def refill() -> None:
        plan = deliverer.claim_plan()
        claims.append(plan)
        deliverer.claimed(plan, [])

    deliverer.refill = refill
    return claims


async def test_refill_claims_when_a_host_left_out_has_room_again(setup: Any) -> None:
    """A claim that left a full host out is made again once that host has room, not only at
    the next tick; a claim that found nothing more for anyone is not repeated in a loop."""
    store, receivers, deliverer = setup
    claims = claims_recorded(deliverer)
    await submit(store, deliverer, *(delivery(n) for n in range(8)))  # two run, six wait
    plan = deliverer.claim_plan()
    assert plan.host_limits == {SLOW: 0}
    deliverer.claimed(plan, [])  # the store had nothing for the other hosts
    await submit(store, deliverer, delivery(0, FAST))
    await eventually(lambda: len(recorded(store)) == 1, "the fast one recorded")
    assert claims == []  # FAST was not left out, and the last claim found nothing
    receivers.open_slow.set()
    await eventually(lambda: len(recorded(store)) == 9, "the slow ones recorded")
    await eventually(lambda: len(claims) >= 1, "a claim once SLOW had room")
    for _ in range(200):  # the event loop goes round; a claim loop would show here
        await asyncio.sleep(0)
    assert len(claims) <= 8  # one per freed slot at most, then quiet
    assert claims[0].host_limits.get(SLOW, 8) >= 4  # topped up once two thirds of the line are free


async def test_a_claim_takes_what_each_host_has_room_for(setup: Any) -> None:
    """A host with two running gets room for its line of six; with its line full, none."""
    store, _, deliverer = setup
    await submit(store, deliverer, *(delivery(n) for n in range(2)))
    plan = deliverer.claim_plan()
    assert host_plan(plan) == (6, 2, {SLOW: 6})
    deliverer.claimed(plan, await held(store, *(delivery(n) for n in range(2, 8))))
    assert len(deliverer.held()) == 8
    assert deliverer.claim_plan().host_limits == {SLOW: 0}
    assert released(store) == []


async def test_a_waiting_delivery_whose_lease_was_lost_is_dropped(setup: Any) -> None:
    """A delivery waiting for its host whose lease could not be renewed is never sent; the
    ones in flight and the others waiting are kept."""
    store, receivers, deliverer = setup
    await submit(store, deliverer, *(delivery(n) for n in range(5)))
    deliverer.lost({delivery(0).id, delivery(3).id, "msg_unknown"})
    held = {delivery_id for delivery_id, _ in deliverer.held()}
    assert held == {delivery(n).id for n in (0, 1, 2, 4)}
    receivers.open_slow.set()
    await eventually(lambda: len(recorded(store)) == 4, "four recorded")
    assert sorted(recorded(store)) == sorted(delivery(n).id for n in (0, 1, 2, 4))
    assert not [u for u in receivers.requests if u.endswith("/hooks/3")]


async def test_a_redelivered_copy_of_a_held_delivery_is_not_sent_twice(setup: Any) -> None:
    """Submitting a delivery already held (running or waiting) changes nothing."""
    store, receivers, deliverer = setup
    first, second, third = await held(store, *(delivery(n) for n in range(3)))
    for claimed in (first, second, third, replace(third, lease_token=2), first):
        deliverer.submit(claimed)
    assert len(deliverer.held()) == 3
    receivers.open_slow.set()
    await eventually(lambda: len(recorded(store)) == 3, "three recorded")
    assert sorted(recorded(store)) == sorted(delivery(n).id for n in range(3))


class QueueingSender(InlineSender):
    """A sender that, like the sender process, takes more than it makes at once."""

    depth = 2


async def test_a_sender_that_keeps_the_limits_is_handed_depth_times_them() -> None:
    """A sender of depth 2 is handed twice `max_per_host` of a host and twice `max_concurrency`
    in all (it keeps the real limits itself), and the claims plan for as much."""
    store, receivers = MemoryStore(), Receivers()
    settings = DeliverySettings(**LIMITS, retry_schedule_s=(5.0,))
    async with httpx.MockTransport(receivers) as transport:
        sender = QueueingSender(transport, settings.timeout_s, settings.max_response_bytes)
        deliverer = Deliverer(store, sender, settings, FakeClock(), OWNER)
        await submit(store, deliverer, *(delivery(n) for n in range(20)))
        await eventually(lambda: len(receivers.requests) == 4, "twice the host's limit sent")
        assert deliverer.in_flight == 4
        assert deliverer.free_slots == 12
        assert host_plan(deliverer.claim_plan()) == (12, 4, {SLOW: 0})
        await eventually(lambda: len(released(store)) == 4, "past a line of 12, handed back")
        receivers.open_slow.set()
        await eventually(lambda: len(recorded(store)) == 16, "the held sixteen recorded")
        await deliverer.drain(5.0)
