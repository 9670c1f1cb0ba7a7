"""The store contract for what an operator asks of a watch, run against every backend (`store`
fixture): how its job ended and what became of its delivery (listed, filtered and counted), a
retry made due at once, each attempt's verdict and the start of its answer, and an attempt count
that agrees with the attempt log. Also the migration that brings outcomes to existing watches."""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import replace
from typing import Any

import asyncpg
import pytest

from service.errors import LeaseLost
from service.store import migrations, rules
from service.store.base import (
    Attempt,
    AttemptOutcome,
    AttemptRecord,
    Completion,
    Delivery,
    DeliveryState,
    JobOutcome,
    NewEvent,
    ResponseStart,
    Store,
    Watch,
    WatchFilter,
)
from service.store.postgres import PostgresStore
from service.store.sqlite import SQLiteStore
from tests.integration.conftest import POSTGRES_URL
from tests.integration.test_store_contract import (
    FAR,
    LEASE_S,
    OTHER_TENANT,
    T0,
    TENANT,
    A,
    B,
    attempt,
    delivering,
    ended,
    new_delivery,
    old_schema,
    pending_ids,
    progress,
    register,
    reread,
)
from tests.integration.test_store_events import event, finish, subscribe

# The final events that decide each outcome: (type, error_code).
FINAL_EVENTS: dict[JobOutcome, tuple[str, str | None]] = {
    "succeeded": ("job.succeeded", None),
    "failed": ("job.failed", "generation_failed"),
    "timed_out": ("job.failed", "timeout"),
    "not_found": ("job.failed", "not_found"),
    "unauthorized": ("job.failed", "unauthorized"),
    "bad_request": ("job.failed", "bad_request"),
}


def final_event(outcome: JobOutcome, *, callback: bool = True) -> NewEvent:
    """The final event whose type and error code give `outcome`."""
    event_type, error_code = FINAL_EVENTS[outcome]
    found = event(event_type)
    found = replace(found, error_code=error_code)
    return found if callback else replace(found, callback=None)


async def completed(
    store: Store, outcome: JobOutcome, *, callback: bool = True, now: float = T0, **changes: Any
) -> tuple[Watch, list[Delivery]]:
    """A watch polled by A until its job ended with `outcome`; its final deliveries, held by A."""
    watch = await register(store, owner=A, **changes)
    # The last status seen upstream: a job that timed out was still queued.
    job_status = {"succeeded": "succeeded", "failed": "failed"}.get(outcome, "queued")
    done = Completion(watch.id, 1, job_status, None, final_event(outcome, callback=callback))
    return watch, await store.complete_watch(A, now, done, now + LEASE_S)


def answered(delivery: Delivery, outcome: AttemptOutcome, **changes: Any) -> Attempt:
    """An attempt of `delivery` with `outcome`, its verdict and an answer kept."""
    verdicts = {"succeeded": "succeeded", "retry": "retry", "failed": "final_status",
                "gone": "gone"}  # fmt: skip
    response = ResponseStart('{"error": "nope"}', 17, False, "application/json")
    return replace(
        attempt(delivery, outcome), **{"verdict": verdicts[outcome], "response": response,
                                       **changes}
    )  # fmt: skip


# The job's outcome.


@pytest.mark.parametrize("outcome", list(FINAL_EVENTS))
async def test_the_final_event_decides_the_outcome(store: Store, outcome: JobOutcome) -> None:
    """A completed watch's outcome is what its final event says (its error code for a
    `job.failed`); until then it is `in_progress`."""
    assert (await register(store)).outcome == "in_progress"
    watch, _ = await completed(store, outcome)

    stored = await reread(store, watch)

    assert stored.outcome == outcome
    assert stored.status == "delivering"
    assert await store.list_watches(TENANT, WatchFilter(outcome=outcome)) == [stored]


async def test_cancelling_forgets_the_queue_position_and_keeps_an_ended_jobs_outcome(
    store: Store,
) -> None:
    """A watch cancelled while its job was queued keeps no queue position and has the outcome
    `cancelled`; one cancelled while delivering keeps its job's outcome (its delivery is the
    part cancelled)."""
    queued = await register(store, owner=A)
    await store.record_progress(A, T0, [progress(queued, job_status="queued", queue_position=7)])
    assert (await reread(store, queued)).queue_position == 7
    failed, _ = await completed(store, "timed_out")

    gave_up = await store.cancel_watch(TENANT, queued.id, T0 + 1)
    while_delivering = await store.cancel_watch(TENANT, failed.id, T0 + 1)

    assert gave_up is not None
    assert (gave_up.status, gave_up.queue_position, gave_up.outcome) == ("cancelled", None,
                                                                          "cancelled")  # fmt: skip
    assert await reread(store, queued) == gave_up
    assert while_delivering is not None
    assert (while_delivering.status, while_delivering.outcome) == ("cancelled", "timed_out")


async def test_watches_are_listed_and_counted_by_outcome_and_delivery_state(store: Store) -> None:
    """Every delivery state is reachable, and a listing by outcome or by delivery state (or
    both, with a status) finds exactly the watches `rules.delivery_state` puts there; the counts
    per status and outcome are those of the tenant only."""
    polling = await register(store)
    no_callback, _ = await completed(store, "succeeded", callback=False)
    delivered, [d1] = await completed(store, "failed")
    await store.record_attempt(A, d1, answered(d1, "succeeded"), "succeeded", T0 + 1)
    failed, [d2] = await completed(store, "not_found")
    await store.record_attempt(A, d2, answered(d2, "failed"), "failed", T0 + 1)
    gone, [d3] = await completed(store, "succeeded")
    await store.record_attempt(A, d3, answered(d3, "gone"), "gone", T0 + 1)
    pending, _ = await completed(store, "timed_out")
    cut_short, _ = await completed(store, "unauthorized")
    await store.cancel_watch(TENANT, cut_short.id, T0 + 2)
    before_end = await register(store)
    await store.cancel_watch(TENANT, before_end.id, T0 + 2)
    await register(store, tenant=OTHER_TENANT)

    expected: dict[DeliveryState, list[Watch]] = {
        "none": [before_end, no_callback, polling],
        "pending": [pending],
        "delivered": [delivered],
        "failed": [gone, failed],
        "cancelled": [cut_short],
    }
    for state, watches in expected.items():
        found = await store.list_watches(TENANT, WatchFilter(delivery=state))
        assert [w.id for w in found] == [w.id for w in watches], state
        assert all(rules.delivery_state(w.status, w.outcome) == state for w in found)
    succeeded = await store.list_watches(TENANT, WatchFilter(outcome="succeeded"))
    assert [w.id for w in succeeded] == [gone.id, no_callback.id]
    both = await store.list_watches(TENANT, WatchFilter(outcome="succeeded", delivery="failed"))
    assert [w.id for w in both] == [gone.id]
    assert await store.list_watches(TENANT, WatchFilter(status="gone", delivery="delivered")) == []
    assert await store.count_outcomes(TENANT) == {
        ("active", "in_progress"): 1, ("completed", "succeeded"): 1,
        ("delivered", "failed"): 1, ("failed", "not_found"): 1, ("gone", "succeeded"): 1,
        ("delivering", "timed_out"): 1, ("cancelled", "unauthorized"): 1,
        ("cancelled", "cancelled"): 1,
    }  # fmt: skip
    assert await store.count_outcomes(OTHER_TENANT) == {("active", "in_progress"): 1}


# Retrying now.


async def test_retry_makes_a_pending_delivery_due_at_once(store: Store) -> None:
    """A delivery waiting for its next attempt is due at `now` once retried, its attempt count
    unchanged, and whoever claims it then attempts it; retrying it again changes nothing."""
    watch, delivery = await delivering(store)
    wait = answered(delivery, "retry", next_attempt_at=T0 + 3600)
    await store.record_attempt(A, delivery, wait, "retry", T0 + 1)
    assert await store.claim_deliveries(B, T0 + 10, T0 + 10 + LEASE_S, 10) == []

    retried = await store.retry_delivery(TENANT, watch.id, delivery.id, T0 + 10)

    assert retried is not None
    assert (retried.id, retried.status, retried.attempts) == (delivery.id, "pending", 1)
    assert retried.next_attempt_at == T0 + 10
    assert await store.watch_deliveries(TENANT, watch.id) == [retried]
    [claimed] = await store.claim_deliveries(B, T0 + 10, T0 + 10 + LEASE_S, 10)
    assert (claimed.id, claimed.attempts) == (delivery.id, 1)
    again = await store.retry_delivery(TENANT, watch.id, delivery.id, T0 + 20)
    assert again == retried


async def test_retry_leaves_an_attempt_in_flight_to_its_holder(store: Store) -> None:
    """Retrying a delivery whose attempt is in flight takes nothing from its holder: nobody
    else may claim it, and the holder records its attempt as usual."""
    watch, delivery = await delivering(store, lease_until=T0 + LEASE_S)

    await store.retry_delivery(TENANT, watch.id, delivery.id, T0 + 1)

    assert await store.claim_deliveries(B, T0 + 1, T0 + 1 + LEASE_S, 10) == []
    await store.record_attempt(A, delivery, answered(delivery, "succeeded"), "succeeded", T0 + 2)
    assert (await reread(store, watch)).status == "delivered"


async def test_retry_of_an_ended_delivery_changes_nothing(store: Store) -> None:
    """A delivery that ended (here, its attempts ran out) is answered as it is: nothing is
    pending, nothing becomes claimable."""
    watch, delivery = await ended(store, "failed")

    found = await store.retry_delivery(TENANT, watch.id, delivery.id, T0 + 5)

    assert found is not None
    assert (found.status, found.next_attempt_at) == ("failed", None)
    assert await pending_ids(store) == set()


async def test_retry_finds_only_a_delivery_of_the_tenants_watch(store: Store) -> None:
    """Another tenant, another watch of the same tenant or an unknown id finds nothing (None),
    and the delivery stays as it was."""
    watch, delivery = await delivering(store)
    wait = answered(delivery, "retry", next_attempt_at=T0 + 3600)
    await store.record_attempt(A, delivery, wait, "retry", T0 + 1)
    other = await register(store)

    assert await store.retry_delivery(OTHER_TENANT, watch.id, delivery.id, T0 + 2) is None
    assert await store.retry_delivery(TENANT, other.id, delivery.id, T0 + 2) is None
    assert await store.retry_delivery(TENANT, watch.id, "msg_unknown", T0 + 2) is None
    [kept] = await store.watch_deliveries(TENANT, watch.id)
    assert kept.next_attempt_at == T0 + 3600


# The attempt log.


async def test_an_attempt_keeps_its_verdict_and_the_start_of_the_answer(store: Store) -> None:
    """What the deliverer made of an attempt and what the receiver answered (text, size,
    truncation, type), or that it did not answer, are read back as recorded, alone or in a
    batch."""
    watch, delivery = await delivering(store)
    first = answered(
        delivery, "retry", next_attempt_at=T0 + 5,
        response=ResponseStart("é" * 2000, 4096, True, "text/plain; charset=utf-8"),
    )  # fmt: skip
    await store.record_attempt(A, delivery, first, "retry", T0 + 1)
    [again] = await store.claim_deliveries(A, T0 + 5, T0 + 5 + LEASE_S, 10)
    silent = replace(
        attempt(again, "failed", number=2, started_at=T0 + 5), status_code=None,
        error="timed out after 15 s", verdict="exhausted", response=None,
    )  # fmt: skip
    assert await store.record_attempts(A, [AttemptRecord(again, silent, "failed", T0 + 6)]) == set()

    assert await store.list_attempts(TENANT, watch.id) == [first, silent]


async def test_housekeeping_drops_the_answers_kept_past_retention(store: Store) -> None:
    """The text of a receiver's answer is kept as long as the webhook bodies: `purge_bodies`
    drops it from attempts started before the cutoff (their size, truncation and type stay),
    and leaves later ones whole."""
    watch, delivery = await delivering(store)
    old = answered(delivery, "retry", started_at=T0 + 1, next_attempt_at=T0 + 5)
    await store.record_attempt(A, delivery, old, "retry", T0 + 1)
    [again] = await store.claim_deliveries(A, T0 + 5, T0 + 5 + LEASE_S, 10)
    recent = answered(again, "retry", number=2, started_at=T0 + 5, next_attempt_at=T0 + 50)
    await store.record_attempt(A, again, recent, "retry", T0 + 5)

    await store.purge_bodies(T0 + 3)

    assert old.response is not None
    kept = replace(old, response=replace(old.response, body=None))
    assert await store.list_attempts(TENANT, watch.id) == [kept, recent]


async def test_the_attempt_count_agrees_with_the_attempt_log(store: Store) -> None:
    """Every attempt listed counts in the watch: its progress events', its subscriptions' and
    every series of its final event (a redelivery starts a new one, numbered from 1)."""
    await subscribe(store)
    watch = await register(store, owner=A, events=("job.queued", "job.succeeded"))
    queued = new_delivery()
    await store.record_progress(A, T0, [progress(watch, deliveries=[queued])])
    [sent] = await store.claim_deliveries(A, T0, T0 + LEASE_S, 10)
    await store.record_attempt(A, sent, answered(sent, "succeeded"), "succeeded", T0 + 1)
    callback, to_subscription = await finish(store, watch, event("job.succeeded"), now=T0 + 2)
    records = [
        AttemptRecord(callback, answered(callback, "failed", started_at=T0 + 2), "failed", T0 + 3),
        AttemptRecord(to_subscription, answered(to_subscription, "succeeded", started_at=T0 + 2),
                      "succeeded", T0 + 3),
    ]  # fmt: skip
    await store.record_attempts(A, records)
    assert (await reread(store, watch)).status == "failed"
    await store.redeliver(TENANT, watch.id, T0 + 10)
    series = await store.claim_deliveries(A, T0 + 10, T0 + 10 + LEASE_S, 10)
    assert [d.attempts for d in series] == [0, 0]
    for again in series:
        done = answered(again, "succeeded", started_at=T0 + 10)
        await store.record_attempt(A, again, done, "succeeded", T0 + 11)

    stored = await reread(store, watch)
    log = await store.list_attempts(TENANT, watch.id)
    assert (stored.status, stored.attempts, len(log)) == ("delivered", 5, 5)
    assert [a.number for a in log] == [1, 1, 1, 1, 1]
    assert stored.updated_at == T0 + 11


async def test_a_lost_lease_counts_nothing(store: Store) -> None:
    """An attempt whose lease was lost is neither logged nor counted."""
    watch, delivery = await delivering(store)
    await store.cancel_watch(TENANT, watch.id, T0 + 1)

    with pytest.raises(LeaseLost):
        await store.record_attempt(A, delivery, answered(delivery, "succeeded"), "succeeded", FAR)

    assert (await reread(store, watch)).attempts == 0
    assert await store.list_attempts(TENANT, watch.id) == []


# Watches of a database migrated from before outcomes were kept (migration 0006).


# (status, job_status, final event type, its error_code or None, purged) of each old watch.
OLD_WATCHES: list[tuple[str, str | None, str | None, str | None]] = [
    ("active", "queued", None, None),
    ("delivered", "succeeded", "job.succeeded", None),
    ("failed", "queued", "job.failed", "timeout"),
    ("delivered", None, "job.failed", "not_found"),
    ("gone", "processing", "job.failed", "unauthorized"),
    ("completed", None, "job.failed", "bad_request"),
    ("delivered", "failed", "job.failed", "generation_failed"),
    ("cancelled", "queued", None, None),
    ("cancelled", "succeeded", "job.succeeded", None),
    # Final events purged: what the watch says.
    ("delivered", "succeeded", None, None),
    ("failed", "failed", None, None),
    ("failed", "queued", None, None),
]


async def _write_old(store: Store, watches: list[Watch]) -> None:
    """Give each watch of `watches` the status and job status of its row of `OLD_WATCHES`, and
    its final event when it has one, as a store before migration 0006 wrote them."""
    # The upstream's answer is kept verbatim: a NUL in it (which jsonb cannot hold) too.
    rows = [
        (w.id, status, job_status, f"evt_old{n}", event_type,
         b'{"type": "%s", "error_code": %s, "data": {"note": "a\\u0000b"}}' % (
             (event_type or "").encode(), b"null" if code is None else b'"%s"' % code.encode()))
        for n, (w, (status, job_status, event_type, code)) in enumerate(
            zip(watches, OLD_WATCHES, strict=True))
    ]  # fmt: skip
    if isinstance(store, SQLiteStore):
        with contextlib.closing(sqlite3.connect(store.path)) as db, db:
            for watch_id, status, job_status, event_id, event_type, body in rows:
                db.execute("UPDATE watches SET status = ?, job_status = ? WHERE id = ?",
                           (status, job_status, watch_id))  # fmt: skip
                if event_type is not None:
                    db.execute(
                        "INSERT INTO events (id, tenant, watch_id, type, final, body, created_at)"
                        " VALUES (?, ?, ?, ?, 1, ?, ?)",
                        (event_id, TENANT, watch_id, event_type, body, T0),
                    )
        return
    assert isinstance(store, PostgresStore)
    db = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": str(store.schema)})
    try:
        for watch_id, status, job_status, event_id, event_type, body in rows:
            await db.execute("UPDATE watches SET status = $2, job_status = $3 WHERE id = $1",
                             watch_id, status, job_status)  # fmt: skip
            if event_type is not None:
                await db.execute(
                    "INSERT INTO events (id, tenant, watch_id, type, final, body, created_at)"
                    " VALUES ($1, $2, $3, $4, true, $5, $6)",
                    event_id, TENANT, watch_id, event_type, body, T0,
                )  # fmt: skip
    finally:
        await db.close()


async def test_watches_of_a_0005_database_get_their_outcome_once_migrated(
    unopened_sql_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migration 0006 gives each existing watch the outcome `rules.recorded_outcome` decides:
    from its final event while it is kept, else from its last job status, else `cancelled` or
    `unknown`; active ones stay `in_progress`."""
    monkeypatch.setattr(migrations, "load", old_schema(6))
    old = unopened_sql_store
    await old.open()
    watches = [await register(old) for _ in OLD_WATCHES]
    await old.close()
    await _write_old(old, watches)
    monkeypatch.undo()
    store = (
        SQLiteStore(old.path)
        if isinstance(old, SQLiteStore)
        else PostgresStore(POSTGRES_URL, schema=old.schema if isinstance(old, PostgresStore)
                           else None)
    )  # fmt: skip
    await store.open(migrate=False)
    try:
        assert (await store.migrate())[:1] == [6]  # and any later ones
        found = [(await reread(store, w)).outcome for w in watches]
    finally:
        await store.close()
    expected = [rules.recorded_outcome(*row) for row in OLD_WATCHES]  # type: ignore[arg-type]
    assert found == expected
    assert found == [
        "in_progress", "succeeded", "timed_out", "not_found", "unauthorized", "bad_request",
        "failed", "cancelled", "succeeded", "succeeded", "failed", "unknown",
    ]  # fmt: skip


def test_the_old_watches_cover_every_outcome_but_in_progress_ones() -> None:
    """The migration test above meets every outcome the migration can give."""
    given = {rules.recorded_outcome(*row) for row in OLD_WATCHES}  # type: ignore[arg-type]
    assert given == set(FINAL_EVENTS) | {"in_progress", "cancelled", "unknown"}
