"""The store contract for the dashboard's trends (`Store.outcome_buckets`), run against every
backend (`store` fixture), every moment given explicitly: which bucket each ending falls in, each
watch counted once whatever its attempts, only the callbacks' final deliveries, the tenant's
own, and the latency percentiles by nearest rank."""

from __future__ import annotations

from dataclasses import replace

import pytest

from service.store.base import AttemptOutcome, Delivery, OutcomeBucket, Store, Watch
from tests.integration.test_store_contract import (
    LEASE_S,
    OTHER_TENANT,
    T0,
    A,
    attempt,
    register,
)
from tests.integration.test_store_events import event, finish, subscribe

HOUR = 3600.0
SINCE = T0
COUNT = 24
END = SINCE + COUNT * HOUR


async def ended_job(
    store: Store,
    at: float,
    event_type: str = "job.succeeded",
    error_code: str | None = None,
    *,
    callback: bool = True,
    **changes: object,
) -> tuple[Watch, list[Delivery]]:
    """A watch whose job ended at `at` (its final event recorded then); the final deliveries,
    held by A."""
    watch = await register(store, owner=A, lease_until=at + LEASE_S, **changes)
    final = replace(event(event_type, callback=callback), error_code=error_code)
    return watch, await finish(store, watch, final, now=at)


async def deliver(
    store: Store, delivery: Delivery, at: float, outcome: AttemptOutcome = "succeeded"
) -> None:
    """One attempt of `delivery` (held by A) at `at`, ending it with `outcome`."""
    await store.record_attempt(A, delivery, attempt(delivery, outcome, started_at=at), outcome, at)


async def buckets(store: Store, tenant: str = "acme") -> list[OutcomeBucket]:
    return await store.outcome_buckets(tenant, SINCE, HOUR, COUNT)


def nonzero(found: list[OutcomeBucket]) -> dict[int, tuple[object, ...]]:
    """The buckets with anything in them, by index: (succeeded, failed, timed out, delivered,
    undelivered, p50, p90)."""
    return {
        i: (b.succeeded, b.failed, b.timed_out, b.delivered, b.undelivered,
            b.latency_p50_s, b.latency_p90_s)
        for i, b in enumerate(found)
        if (b.succeeded, b.failed, b.timed_out, b.delivered, b.undelivered) != (0, 0, 0, 0, 0)
    }  # fmt: skip


async def test_every_bucket_is_there_when_nothing_ended(store: Store) -> None:
    """An empty store: `count` buckets, oldest first, each starting `bucket_s` after the one
    before, all zeros and no latency."""
    found = await buckets(store)

    assert [b.start for b in found] == [SINCE + i * HOUR for i in range(COUNT)]
    assert found[0] == OutcomeBucket(SINCE, 0, 0, 0, 0, 0, None, None)
    assert nonzero(found) == {}


async def test_jobs_count_once_by_outcome_in_the_bucket_of_their_final_event(store: Store) -> None:
    """A job counts in the bucket its final event was recorded in (from `since` included to
    the end excluded), by outcome: timed out apart, every other failure as failed. Progress
    events and jobs still running count nowhere."""
    await ended_job(store, SINCE)  # the first moment of bucket 0
    await ended_job(store, SINCE + HOUR - 0.001, "job.failed", "generation_failed")
    await ended_job(store, SINCE + HOUR, "job.failed", "timeout")  # bucket 1 starts
    await ended_job(store, SINCE + HOUR + 5, "job.failed", "not_found")
    await ended_job(store, SINCE + 23 * HOUR + 10, "job.failed", "unauthorized")
    await ended_job(store, END - 0.5)  # the last bucket
    await ended_job(store, SINCE - 0.001)  # before the first
    await ended_job(store, END)  # after the last
    await register(store, owner=A)  # still running: no final event

    assert nonzero(await buckets(store)) == {
        0: (1, 1, 0, 0, 0, None, None),
        1: (0, 1, 1, 0, 0, None, None),
        23: (1, 1, 0, 0, 0, None, None),
    }


async def test_only_the_tenants_own_endings_count(store: Store) -> None:
    """Another tenant's jobs and webhooks are not counted, nor the other way round."""
    _, [mine] = await ended_job(store, SINCE + 10)
    await deliver(store, mine, SINCE + 11)
    _, [theirs] = await ended_job(store, SINCE + 20, "job.failed", "timeout", tenant=OTHER_TENANT)
    await deliver(store, theirs, SINCE + 21, "failed")

    assert nonzero(await buckets(store)) == {0: (1, 0, 0, 1, 0, 1.0, 1.0)}
    assert nonzero(await buckets(store, OTHER_TENANT)) == {0: (0, 0, 1, 0, 1, None, None)}


async def test_a_webhook_counts_once_where_it_ended_whatever_its_attempts(store: Store) -> None:
    """Retried twice then accepted: one delivered webhook, in the bucket of its acceptance,
    with the time from the final event to then; failed (attempts ran out) and gone (410) are
    undelivered; a pending one and a cancelled one count nowhere."""
    _, [retried] = await ended_job(store, SINCE + 100)
    for number, at in ((1, SINCE + 100), (2, SINCE + 400)):
        early = attempt(retried, "retry", number=number, started_at=at, next_attempt_at=at + 1)
        await store.record_attempt(A, retried, early, "retry", at)
        [retried] = await store.claim_deliveries(A, at + 1, at + 1 + LEASE_S, 1)
    await deliver(store, retried, SINCE + 2 * HOUR + 100)
    _, [failed] = await ended_job(store, SINCE + 5 * HOUR)
    await deliver(store, failed, SINCE + 5 * HOUR + 1, "failed")
    _, [gone] = await ended_job(store, SINCE + 5 * HOUR)
    await deliver(store, gone, SINCE + 5 * HOUR + 2, "gone")
    await ended_job(store, SINCE + 6 * HOUR)  # pending
    cancelled, _ = await ended_job(store, SINCE + 6 * HOUR)
    await store.cancel_watch("acme", cancelled.id, SINCE + 6 * HOUR + 1)

    assert nonzero(await buckets(store)) == {
        0: (1, 0, 0, 0, 0, None, None),
        2: (0, 0, 0, 1, 0, 2 * HOUR, 2 * HOUR),
        5: (2, 0, 0, 0, 2, None, None),
        6: (2, 0, 0, 0, 0, None, None),
    }


async def test_only_the_callbacks_final_deliveries_are_webhooks(store: Store) -> None:
    """A subscription's deliveries, a progress event's delivery and a watch without a callback
    count no webhook; their jobs count."""
    await subscribe(store)
    _, deliveries = await ended_job(store, SINCE + 10)
    for delivery in deliveries:  # the callback's, then the subscription's
        await deliver(store, delivery, SINCE + 20)
    _, [to_subscription] = await ended_job(store, SINCE + 30, callback=False, callback_url=None)
    await deliver(store, to_subscription, SINCE + 40, "failed")

    assert nonzero(await buckets(store)) == {0: (2, 0, 0, 1, 0, 10.0, 10.0)}


@pytest.mark.parametrize(
    ("took", "p50", "p90"),
    [
        ([7.0], 7.0, 7.0),  # one: it is every percentile
        ([3.0, 1.0], 1.0, 3.0),  # ranks ceil(1) and ceil(1.8)
        ([30.0, 1.0, 2.0], 2.0, 30.0),  # ranks ceil(1.5) and ceil(2.7)
        ([float(s) for s in range(10, 0, -1)], 5.0, 9.0),  # ranks 5 and 9 of 1..10
        ([float(s) for s in range(1, 12)], 6.0, 10.0),  # ranks ceil(5.5) and ceil(9.9) of 11
        ([2.0, 2.0, 2.0, 9.0], 2.0, 9.0),  # ties
    ],
)
async def test_latency_percentiles_by_nearest_rank(
    store: Store, took: list[float], p50: float, p90: float
) -> None:
    """The p50 and p90 of the delivered webhooks' times (final event to acceptance) of a bucket
    are the ones of rank ceil(p * n / 100); undelivered ones do not count in them."""
    for seconds in took:
        _, [delivery] = await ended_job(store, SINCE + 100)
        await deliver(store, delivery, SINCE + 100 + seconds)
    _, [failed] = await ended_job(store, SINCE + 100)
    await deliver(store, failed, SINCE + 101, "failed")

    [first, *_] = await buckets(store)
    assert (first.delivered, first.undelivered) == (len(took), 1)
    assert (first.latency_p50_s, first.latency_p90_s) == (pytest.approx(p50), pytest.approx(p90))


async def test_a_redelivered_webhook_counts_where_its_latest_series_ended(store: Store) -> None:
    """Failed, then redelivered and accepted hours later: one delivered webhook, in the bucket
    of the acceptance, its time counted from the final event; while pending it counts nowhere."""
    watch, [delivery] = await ended_job(store, SINCE + 10)
    await deliver(store, delivery, SINCE + 20, "failed")
    assert nonzero(await buckets(store))[0][4] == 1

    await store.redeliver("acme", watch.id, SINCE + 3 * HOUR)
    assert nonzero(await buckets(store)) == {0: (1, 0, 0, 0, 0, None, None)}
    [again] = await store.claim_deliveries(A, SINCE + 3 * HOUR, SINCE + 3 * HOUR + LEASE_S, 1)
    await deliver(store, again, SINCE + 3 * HOUR + 10)

    assert nonzero(await buckets(store)) == {
        0: (1, 0, 0, 0, 0, None, None),
        3: (0, 0, 0, 1, 0, 3 * HOUR, 3 * HOUR),
    }


async def test_buckets_of_any_length(store: Store) -> None:
    """`bucket_s` and `count` are the caller's: one bucket of a day holds all of it."""
    await ended_job(store, SINCE + 10)
    await ended_job(store, SINCE + 23 * HOUR, "job.failed", "timeout")

    [day] = await store.outcome_buckets("acme", SINCE, 24 * HOUR, 1)
    assert (day.start, day.succeeded, day.timed_out) == (SINCE, 1, 1)
