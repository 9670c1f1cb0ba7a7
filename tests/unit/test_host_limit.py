"""The per-host delivery limit: its bookkeeping (`Slots`, one tenant) and the `Deliverer`
around it, on the memory store and a fake clock, with an HTTP transport of the test's own at
the edge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from service import claims
from service.delivery import LINE
from service.sender import InlineSender
from service.slots import Slots
from service.store.base import Delivery, callback_host
from tests.unit.delivery_rig import (
    FAST,
    OWNER,
    SLOW,
    Rig,
    delivery,
    due,
    held,
    keys,
    recorded,
    released,
    running,
)
from tests.unit.fake_time import settle


def host_slots(per_host: int, line: int = LINE) -> Slots[Delivery]:
    """The two limits with room for any number of one tenant's: the per-host one alone."""
    return Slots(keys, per_host, 4096, line)


def host_plan(plan: claims.ClaimPlan) -> tuple[int, int, dict[str, int]]:
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


# The deliverer, on the memory store and a fake clock.

LIMITS: dict[str, Any] = {"max_concurrency": 8, "max_per_host": 2, "max_per_tenant": 8}


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    # One tenant, whose limit is the global one: the per-host limit alone.
    async with running(**LIMITS) as running_deliverer:
        yield running_deliverer


async def test_a_slow_host_only_holds_its_own_slots(rig: Rig) -> None:
    """Ten deliveries to a host that does not answer take two slots; the fast host's go through
    at once; six wait (held, leases renewed, no global slot), two go back to the store."""
    store, receivers, deliverer = rig.store, rig.receivers, rig.deliverer
    await rig.submit(*(delivery(n) for n in range(10)))
    await rig.submit(*(delivery(n, FAST) for n in range(3)))
    await rig.until(lambda: len(recorded(store)) == 3, "the fast host's three recorded")
    assert {store.deliveries[d].host for d in recorded(store)} == {FAST}
    assert len([u for u in receivers.urls if "slow" in u]) == 2
    assert deliverer.in_flight == 2  # only the slow host's two
    assert deliverer.free_slots == 6
    assert released(store) == [delivery(8).id, delivery(9).id]
    held_ids = {delivery_id for delivery_id, _ in deliverer.held()}
    assert held_ids == {delivery(n).id for n in range(8)}
    assert host_plan(deliverer.claim_plan()) == (6, 2, {SLOW: 0})

    receivers.open_slow.set()
    await rig.until(lambda: len(recorded(store)) == 11, "the slow host's eight recorded")
    assert sorted(recorded(store)[3:]) == sorted(delivery(n).id for n in range(8))
    await rig.until(lambda: deliverer.held() == [], "nothing held once all is recorded")
    assert deliverer.claim_plan().host_limits == {}


async def test_outcomes_are_committed_together_and_only_then_done() -> None:
    """Outcomes arriving while a commit runs share the next one; none counts before it commits."""
    async with running(**LIMITS) as rig:
        rig.store.gate.clear()
        await rig.submit(*(delivery(n, f"http://h{n}.example") for n in range(6)))
        await rig.until(lambda: len(rig.receivers.requests) == 6, "six requests sent")
        await settle()
        assert rig.outcomes.seen == []  # sent, not committed: not done
        assert len(rig.deliverer.held()) == 6  # still held: their leases are renewed
        rig.store.gate.set()
        await rig.until(lambda: len(rig.outcomes.seen) == 6, "six outcomes")
        assert sum(rig.store.commits) == 6
        assert len(rig.store.commits) < 6


async def test_drain_hands_back_waiting_and_unfinished_deliveries(rig: Rig) -> None:
    """On shutdown, what waited for its host and what was still in flight are returned for
    release; nothing waiting is started."""
    store, receivers, deliverer = rig.store, rig.receivers, rig.deliverer
    await rig.submit(*(delivery(n) for n in range(4)))
    await rig.until(lambda: len(receivers.requests) == 2, "two slow requests in flight")
    abandoned = await rig.drain(0.05)
    assert sorted(abandoned) == sorted((delivery(n).id, 1) for n in range(4))
    assert recorded(store) == []
    assert len(receivers.requests) == 2
    assert deliverer.held() == []


async def test_refill_claims_when_a_host_left_out_has_room_again(rig: Rig) -> None:
    """A claim that left a full host out is made again once that host has room, not only at
    the next periodic claim; a claim that found nothing more for anyone is not repeated in a
    loop."""
    store, receivers, deliverer = rig.store, rig.receivers, rig.deliverer
    await rig.submit(*(delivery(n) for n in range(8)))  # two run, six wait
    await deliverer.claim()  # the store has nothing for the other hosts
    assert [claim["host_limits"] for claim in store.claims] == [{SLOW: 0}]
    await rig.submit(delivery(0, FAST))
    await rig.until(lambda: len(recorded(store)) == 1, "the fast one recorded")
    assert len(store.claims) == 1  # FAST was not left out, and the last claim found nothing
    receivers.open_slow.set()
    await rig.until(lambda: len(recorded(store)) == 9, "the slow ones recorded")
    refills = store.claims[1:]
    assert 1 <= len(refills) <= 8  # one per freed slot at most, then quiet
    assert refills[0]["host_limits"].get(SLOW, 8) >= 4  # once two thirds of the line are free


async def test_a_claim_takes_what_each_host_has_room_for(rig: Rig) -> None:
    """A host with two running gets room for its line of six; with its line full, none."""
    store, deliverer = rig.store, rig.deliverer
    await rig.submit(*(delivery(n) for n in range(2)))
    assert host_plan(deliverer.claim_plan()) == (6, 2, {SLOW: 6})
    await due(store, *(delivery(n) for n in range(2, 10)))
    await deliverer.claim()
    assert len(deliverer.held()) == 8
    assert deliverer.claim_plan().host_limits == {SLOW: 0}
    assert released(store) == [delivery(8).id, delivery(9).id]  # due, left in the store


async def test_a_waiting_delivery_whose_lease_was_lost_is_dropped(rig: Rig) -> None:
    """A delivery waiting for its host whose lease another process took is never sent; the
    ones in flight and the others waiting are kept."""
    store, receivers, deliverer = rig.store, rig.receivers, rig.deliverer
    await rig.submit(*(delivery(n) for n in range(5)))
    for taken in (delivery(0).id, delivery(3).id):  # in flight, and waiting
        store.deliveries[taken].lease.take("another", rig.clock.now() + 60)
    await deliverer.renew()
    held_ids = {delivery_id for delivery_id, _ in deliverer.held()}
    assert held_ids == {delivery(n).id for n in (0, 1, 2, 4)}
    receivers.open_slow.set()
    await rig.until(lambda: len(deliverer.held()) == 0, "all let go")
    assert sorted(recorded(store)) == sorted(delivery(n).id for n in (1, 2, 4))  # 0's was lost
    assert not [u for u in receivers.urls if u.endswith("/hooks/3")]


async def test_a_redelivered_copy_of_a_held_delivery_is_not_sent_twice(rig: Rig) -> None:
    """Submitting a delivery already held (running or waiting) starts nothing: a copy claimed
    again, its lease having run out, under the token the store kept."""
    store, receivers, deliverer = rig.store, rig.receivers, rig.deliverer
    first, second, third = await held(store, *(delivery(n) for n in range(3)))
    store.deliveries[third.id].lease.until = rig.clock.now()  # its lease ran out
    now = rig.clock.now()
    [again] = await store.claim_deliveries(OWNER, now, now + 15, 10)
    assert again.lease_token == third.lease_token
    for claimed in (first, second, third, again, first):
        deliverer.submit(claimed)
    assert len(deliverer.held()) == 3
    receivers.open_slow.set()
    await rig.until(lambda: len(recorded(store)) == 3, "three recorded")
    assert sorted(recorded(store)) == sorted(delivery(n).id for n in range(3))


class QueueingSender(InlineSender):
    """A sender that, like the sender process, takes more than it makes at once."""

    depth = 2


async def test_a_sender_that_keeps_the_limits_is_handed_depth_times_them() -> None:
    """A sender of depth 2 is handed twice `max_per_host` of a host and twice `max_concurrency`
    in all (it keeps the real limits itself), and the claims plan for as much."""
    async with running(sender_type=QueueingSender, **LIMITS) as rig:
        store, receivers, deliverer = rig.store, rig.receivers, rig.deliverer
        await rig.submit(*(delivery(n) for n in range(20)))
        await rig.until(lambda: len(receivers.requests) == 4, "twice the host's limit sent")
        assert deliverer.in_flight == 4
        assert deliverer.free_slots == 12
        assert host_plan(deliverer.claim_plan()) == (12, 4, {SLOW: 0})
        assert len(released(store)) == 4  # past a line of 12, handed back
        receivers.open_slow.set()
        await rig.until(lambda: len(recorded(store)) == 16, "the held sixteen recorded")
