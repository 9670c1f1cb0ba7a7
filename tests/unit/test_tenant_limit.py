"""The per-tenant delivery limit: its bookkeeping beside the per-host one (`Slots`) and the
`Deliverer` around it, on the memory store and a fake clock, with an HTTP transport of the
test's own at the edge."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from service.slots import Slots
from service.store.base import Delivery
from tests.unit.delivery_rig import (
    FAST,
    SLOW,
    Rig,
    delivery,
    due,
    keys,
    recorded,
    released,
    running,
)

OTHER_SLOW = "http://slow.example:8003"  # another host (its port) that answers late too
A, B = "acme", "globex"


def slots(per_host: int, per_tenant: int, line: int = 1) -> Slots[Delivery]:
    return Slots(keys, per_host, per_tenant, line)


# The bookkeeping.


def test_a_tenant_runs_at_most_its_limit_whatever_its_hosts() -> None:
    """A tenant's deliveries to hosts with room still wait once the tenant has `per_tenant`
    running, in its own line (then go back); another tenant's run."""
    limits = slots(per_host=2, per_tenant=3)
    ours = [delivery(n, f"http://h{n % 3}.example", A) for n in range(10)]
    decisions = [limits.admit(d) for d in ours]
    assert decisions == ["run"] * 3 + ["wait"] * 3 + ["release"] * 4
    assert limits.tenants.waiting(A) == ours[3:6]
    assert limits.hosts.limits() == {f"http://h{n}.example": 3 for n in range(3)}  # one runs
    assert limits.tenants.limits() == {A: 0}
    assert limits.admit(delivery(0, "http://h0.example", B)) == "run"
    assert limits.tenants.running(A) == 3


def test_a_freed_tenant_slot_goes_to_its_oldest_waiting_delivery() -> None:
    """When one of a tenant's attempts ends, its next waiting delivery takes the slot."""
    limits = slots(per_host=2, per_tenant=2)
    first, second, third = (delivery(n, f"http://h{n}.example", A) for n in range(3))
    assert [limits.admit(d) for d in (first, second, third)] == ["run", "run", "wait"]
    assert limits.done(first) == [third]
    assert limits.tenants.running(A) == 2
    assert limits.done(second) == []
    assert limits.done(third) == []
    assert limits.tenants.limits() == {}
    assert limits.hosts.limits() == {}


def test_a_delivery_waiting_for_its_tenant_holds_no_slot_of_its_host() -> None:
    """A delivery whose host freed a slot while its tenant had none goes to the front of its
    tenant's line and leaves the host's slot to another tenant; the tenant's next slot is its."""
    limits = slots(per_host=1, per_tenant=2)
    theirs = delivery(0, SLOW, B)
    first, second = delivery(1, FAST, A), delivery(2, OTHER_SLOW, A)
    assert [limits.admit(d) for d in (theirs, first, second)] == ["run"] * 3
    waiting = delivery(3, SLOW, A)  # its host is full: in the host's line
    assert limits.admit(waiting) == "wait"
    later = delivery(4, "http://later.example", A)  # its tenant is full: in the tenant's line
    assert limits.admit(later) == "wait"

    assert limits.done(theirs) == []  # SLOW is free, but A is not: `waiting` moves on
    assert limits.tenants.waiting(A) == [waiting, later]
    assert limits.admit(delivery(5, SLOW, B)) == "run"  # SLOW's slot went to B
    assert limits.done(delivery(5, SLOW, B)) == []
    assert limits.done(first) == [waiting]  # A's slot: first in its line
    assert limits.done(second) == [later]


def test_deliveries_moving_to_their_tenants_line_keep_the_order_they_waited_in() -> None:
    """Two deliveries a freed host slot cannot start (their tenant is full) go to the front of
    the tenant's line, the older first, ahead of one that waited for the tenant alone."""
    limits = slots(per_host=1, per_tenant=1, line=2)
    theirs, ours = delivery(0, SLOW, B), delivery(1, FAST, A)
    assert [limits.admit(d) for d in (theirs, ours)] == ["run", "run"]
    older, newer = delivery(2, SLOW, A), delivery(3, SLOW, A)  # SLOW is full
    later = delivery(4, OTHER_SLOW, A)  # A is full
    assert [limits.admit(d) for d in (older, newer, later)] == ["wait"] * 3
    assert limits.done(theirs) == []  # SLOW free, A not: both move on
    assert limits.tenants.waiting(A) == [older, newer, later]
    assert limits.done(ours) == [older]


def test_one_delivery_a_slot_passes_to_carries_on_the_others_are_started() -> None:
    """Of the deliveries that run in an ended one's place (its host's slot to one, its tenant's
    to another), `pass_on` returns the first, to carry on, and gives the others to `start`."""
    limits = slots(per_host=1, per_tenant=1)
    running, for_host, for_tenant = delivery(0, SLOW, A), delivery(1, SLOW, B), delivery(2, FAST, A)
    assert [limits.admit(d) for d in (running, for_host, for_tenant)] == ["run", "wait", "wait"]
    started: list[Delivery] = []
    assert limits.pass_on(running, started.append) == for_host
    assert started == [for_tenant]
    assert limits.pass_on(for_host, started.append) is None  # nothing waits: the slots are free
    assert started == [for_tenant]
    assert limits.hosts.running(SLOW) == 0


def test_slots_forget_idle_tenants_and_drop_what_waits() -> None:
    """A tenant with nothing held takes no memory; waiting deliveries, for a host or for a
    tenant, can be dropped (lost leases) or cleared (a shutdown)."""
    limits = slots(per_host=1, per_tenant=1)
    for n in range(1000):
        tenant = f"tenant-{n}"
        assert limits.admit(delivery(n, FAST, tenant)) == "run"
        assert limits.done(delivery(n, FAST, tenant)) == []
    assert limits.tenants.limits() == {}

    running, for_host, for_tenant = delivery(0, SLOW, A), delivery(1, SLOW, B), delivery(2, FAST, A)
    assert [limits.admit(d) for d in (running, for_host, for_tenant)] == ["run", "wait", "wait"]
    assert limits.drop(lambda d: d.id == for_tenant.id) == [for_tenant]
    assert limits.clear_waiting() == [for_host]
    assert limits.done(running) == []
    assert limits.hosts.limits() == limits.tenants.limits() == {}


# The deliverer, on the memory store and a fake clock.


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    """A deliverer of 4 requests at once, 2 per host and 2 per tenant."""
    async with running(max_concurrency=4, max_per_host=2, max_per_tenant=2) as running_deliverer:
        yield running_deliverer


async def test_a_tenants_slow_receivers_leave_the_others_slots(rig: Rig) -> None:
    """A tenant's deliveries to two slow hosts, more than the global limit, hold only its two
    slots; another tenant's webhook goes out and is recorded meanwhile."""
    store, receivers, deliverer = rig.store, rig.receivers, rig.deliverer
    for n in range(3):
        await rig.submit(delivery(n, SLOW, A), delivery(n, OTHER_SLOW, A))
    await rig.until(lambda: deliverer.in_flight == 2, "the tenant's two requests in flight")
    await rig.submit(delivery(0, FAST, B))
    await rig.until(lambda: len(recorded(store)) == 1, "the other tenant's webhook recorded")
    assert store.deliveries[recorded(store)[0]].tenant == B
    assert len([u for u in receivers.urls if "slow" in u]) == 2
    assert deliverer.free_slots == 2
    assert len(deliverer.held()) == 6  # the tenant's four others wait, held

    receivers.open_slow.set()
    await rig.until(lambda: len(recorded(store)) == 7, "the tenant's six recorded")


async def test_a_claim_takes_what_each_tenant_has_room_for(rig: Rig) -> None:
    """A tenant with two running gets room for its line of six; with its line full, none; a
    tenant not busy here gets `max_per_tenant`."""
    store, deliverer = rig.store, rig.deliverer
    await rig.submit(delivery(0, SLOW, A), delivery(0, OTHER_SLOW, A))
    plan = deliverer.claim_plan()
    assert (plan.per_tenant, plan.tenant_limits) == (2, {A: 6})
    await due(store, *(delivery(n, f"http://h{n}.example", A) for n in range(8)))
    for _ in range(4):  # each takes at most the two free slots' worth
        await deliverer.claim()
    assert [claim["tenant_limits"] for claim in store.claims] == [{A: 6}, {A: 4}, {A: 2}, {A: 0}]
    assert len(deliverer.held()) == 8
    assert len(released(store)) == 2  # due, left in the store


async def test_refill_claims_when_a_tenant_left_out_has_room_again(rig: Rig) -> None:
    """A claim that left a full tenant out is made again once that tenant has room, not only at
    the next periodic claim."""
    store, receivers, deliverer = rig.store, rig.receivers, rig.deliverer
    await rig.submit(*(delivery(n, SLOW if n % 2 else OTHER_SLOW, A) for n in range(8)))
    await deliverer.claim()  # two run, six wait: no room; the store has nothing for the others
    assert [claim["tenant_limits"] for claim in store.claims] == [{A: 0}]
    receivers.open_slow.set()
    await rig.until(lambda: len(recorded(store)) == 8, "the tenant's eight recorded")
    refills = store.claims[1:]
    assert 1 <= len(refills) <= 8  # one per freed slot at most, then quiet
    assert refills[0]["tenant_limits"].get(A) != 0  # made once the tenant had room
