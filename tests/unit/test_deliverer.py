"""The deliverer's timing and leases, on the memory store and a fake clock (no real sleep):
the retry schedule with Retry-After, and leases lost while an attempt is in flight."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx

from service.store.base import ResponseStart
from tests.unit.delivery_rig import (
    FAST,
    OWNER,
    SLOW,
    Body,
    Rig,
    delivery,
    recorded,
    running,
)


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
