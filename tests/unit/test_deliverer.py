"""The deliverer's timing and leases, on the memory store and a fake clock (no real sleep):
the retry schedule with Retry-After, and leases lost while an attempt is in flight."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx
import pytest

from service.errors import StoreUnavailable
from service.store.base import ResponseStart
from tests.unit.delivery_rig import (
    FAST,
    OWNER,
    SLOW,
    Body,
    Rig,
    delivery,
    recorded,
    released,
    running,
)
from tests.unit.fake_time import settle


async def claims_every_second(rig: Rig, seconds: int) -> None:
    """Run `seconds` of the fake clock with the periodic claim of due deliveries."""
    for _ in range(seconds):
        await rig.deliverer.claim()
        await rig.run_for(1.0)


def busy(retry_after: str | None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after else {}
    return httpx.Response(503, headers=headers, stream=Body(b""))


async def test_retries_follow_the_schedule_and_retry_after() -> None:
    """A 503 asking for 120 s is retried after 120 s, not the schedule's 5; the next 503,
    without Retry-After, after the schedule's 300 s; the third attempt succeeds."""
    answers = iter([busy("120"), busy(None), httpx.Response(200, stream=Body(b""))])
    async with running({"/hooks/0": lambda _: next(answers)}, retry_schedule_s=(5.0, 300.0)) as rig:
        store, start = rig.store, rig.clock.now()
        [claimed] = await rig.held(delivery(0, FAST))
        await store.release_deliveries(OWNER, [(claimed.id, claimed.lease_token)])
        await claims_every_second(rig, 500)
        attempts = store.attempts
        assert [a.started_at - start for a in attempts] == [0, 120, 420]
        assert [a.status_code for a in attempts] == [503, 503, 200]
        assert [a.next_attempt_at - start if a.next_attempt_at else None for a in attempts] == [
            120,
            420,
            None,
        ]
        assert rig.outcomes.seen == [(claimed.id, o) for o in ("retry", "retry", "succeeded")]
        assert store.deliveries[claimed.id].status == "succeeded"


async def test_an_attempt_keeps_the_start_of_the_answer_and_why_retries_stopped() -> None:
    """A final status ends the retries at once: the attempt says so, keeps the receiver's
    answer (asked for uncompressed) as text with its type, and its watch's count agrees."""
    gone_for_good = httpx.Response(
        404, headers={"Content-Type": "application/json"},
        stream=Body(b'{"error": "no such order"}'),
    )  # fmt: skip
    async with running({"/hooks/0": lambda _: gone_for_good}) as rig:
        [claimed] = await rig.held(replace(delivery(0, FAST), final_statuses=(404,)))
        claimed = replace(claimed, final_statuses=(404,))
        rig.deliverer.submit(claimed)
        await rig.until(lambda: rig.store.attempts, "an attempt")

        [attempt] = rig.store.attempts
        assert (attempt.status_code, attempt.error, attempt.next_attempt_at) == (
            404, "HTTP 404", None,
        )  # fmt: skip
        assert attempt.verdict == "final_status"
        assert attempt.response == ResponseStart(
            '{"error": "no such order"}', 26, False, "application/json"
        )
        assert rig.receivers.requests[0].headers["accept-encoding"] == "identity"
        assert rig.store.deliveries[claimed.id].status == "failed"
        assert rig.store.watches[claimed.watch_id].attempts == 1


async def test_an_attempt_whose_lease_was_lost_is_not_counted() -> None:
    """An attempt in flight when another process took its delivery's lease is not recorded
    (that process records its own); the delivery is let go."""
    async with running() as rig:
        await rig.submit(delivery(0, SLOW))
        await rig.until(lambda: rig.deliverer.in_flight == 1, "in flight")
        rig.store.deliveries[delivery(0).id].lease.take("another", rig.clock.now() + 60)
        rig.receivers.open_slow.set()
        await rig.until(lambda: rig.deliverer.held() == [], "let go")
        assert recorded(rig.store) == []
        assert rig.outcomes.seen == []


async def one_sent_one_waiting(rig: Rig) -> None:
    """Two deliveries to one host claimed by the rig's deliverer (one slot per host): the first
    being sent, the second waiting for the host."""
    await rig.due(delivery(0), delivery(1))
    await rig.deliverer.claim()
    await rig.deliverer.claim()
    await rig.until(lambda: rig.deliverer.in_flight == 1, "one in flight")
    assert len(rig.deliverer.held()) == 2


async def test_deliveries_held_across_an_outage_longer_than_their_leases_are_sent_once() -> None:
    """Deliveries held while a store outage outlasts their leases (one in flight, one waiting
    for its host) are claimed again by this process when the store is back: each is sent once
    and recorded under the token the store kept, not dropped at the next renewal or refused at
    its record and sent again once that lease has run out."""
    async with running(max_per_host=1) as rig:
        store, deliverer = rig.store, rig.deliverer
        await one_sent_one_waiting(rig)
        store.outage = StoreUnavailable("the server is restarting")
        with pytest.raises(StoreUnavailable):
            await deliverer.renew()
        await rig.run_for(20)
        store.outage = None
        await deliverer.claim()  # both: their leases ran out
        await deliverer.renew()
        rig.receivers.open_slow.set()
        await claims_every_second(rig, 30)
        assert rig.receivers.urls == [f"{SLOW}/hooks/0", f"{SLOW}/hooks/1"]
        assert sorted(recorded(store)) == [delivery(0).id, delivery(1).id]
        assert deliverer.held() == []


async def test_an_outcome_under_way_as_its_delivery_is_claimed_again_is_committed() -> None:
    """An outcome being committed while this process claims its delivery again (its lease ran
    out) is committed, and the delivery is not sent a second time."""
    async with running() as rig:
        store, deliverer = rig.store, rig.deliverer
        await rig.due(delivery(0))
        await deliverer.claim()
        store.gate.clear()
        rig.receivers.open_slow.set()
        await rig.until(lambda: rig.receivers.requests, "sent")
        await rig.run_for(16)  # its outcome waits to be committed; its lease runs out
        await deliverer.claim()
        store.gate.set()
        await claims_every_second(rig, 30)
        assert rig.receivers.urls == [f"{SLOW}/hooks/0"]
        assert recorded(store) == [delivery(0).id]
        assert deliverer.held() == []


async def test_a_renewal_under_way_as_a_waiting_delivery_is_claimed_again_keeps_it() -> None:
    """A renewal under way while this process claims its deliveries again (their leases ran
    out) does not drop the one waiting for its host: it is sent as soon as the host is free,
    not once its lease has run out."""
    async with running(max_per_host=1) as rig:
        store, deliverer = rig.store, rig.deliverer
        await one_sent_one_waiting(rig)
        await rig.run_for(16)  # not renewed: their leases ran out
        store.renewals.clear()
        renewing = asyncio.ensure_future(deliverer.renew())
        await settle()
        await deliverer.claim()
        store.renewals.set()
        await renewing
        rig.receivers.open_slow.set()
        freed_at = rig.clock.now()
        await claims_every_second(rig, 30)
        assert rig.receivers.urls == [f"{SLOW}/hooks/0", f"{SLOW}/hooks/1"]
        assert [a.started_at for a in store.attempts][1] == freed_at


async def test_a_claim_while_stopping_takes_nothing() -> None:
    """Once stopping, the deliverer claims nothing more, and hands back what it held."""
    async with running() as rig:
        await rig.submit(delivery(0, SLOW))
        await rig.due(delivery(1, FAST))
        stopping = asyncio.ensure_future(rig.deliverer.stop(2.0))
        await asyncio.sleep(0)  # it has begun
        await rig.deliverer.claim()
        await rig.until(stopping.done, "stopped")
        assert rig.store.claims == []
        assert stopping.result() == 1  # the slow one, abandoned after the grace
        assert [d.lease.owner for d in rig.store.deliveries.values()] == [None, None]


async def test_a_stop_hands_back_a_waiting_delivery_claimed_again() -> None:
    """A delivery waiting for its host, claimed again by this process after an outage outlasted
    its lease, is handed back at a stop: free at once for another process, not after that lease
    has run out."""
    async with running(max_per_host=1) as rig:
        store, deliverer = rig.store, rig.deliverer
        await one_sent_one_waiting(rig)
        await rig.run_for(20)  # not renewed: their leases ran out
        await deliverer.claim()  # both again
        stopping = asyncio.ensure_future(deliverer.stop(0.0))
        await rig.until(stopping.done, "stopped")
        assert delivery(1).id in released(store)


async def test_an_unreadable_retry_after_falls_back_to_the_schedule_and_frees_the_host() -> None:
    """A receiver's `Retry-After: ²` (a digit to `str.isdigit`, not to `float`) is ignored
    like any unreadable one: the attempt is recorded, retried on the schedule, and the host's
    slot goes to the next delivery instead of being held for good."""
    unreadable = [(b"Retry-After", "²".encode())]  # as the aiohttp transport reads it
    answers = {"/hooks/0": lambda _: httpx.Response(503, headers=unreadable, stream=Body(b""))}
    async with running(answers, max_per_host=1) as rig:
        store = rig.store
        await rig.due(delivery(0, FAST), delivery(1, FAST))
        await rig.deliverer.claim()
        await rig.until(lambda: len(store.attempts) == 2, "both attempts recorded")
        first = store.attempts[0]
        assert (first.status_code, first.next_attempt_at) == (503, first.started_at + 5.0)
        assert rig.receivers.urls == [f"{FAST}/hooks/0", f"{FAST}/hooks/1"]
        assert rig.deliverer.held() == []
