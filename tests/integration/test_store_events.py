"""The store contract for events and subscriptions, run against every backend (`store` fixture).

Fan-out: each recorded event is kept, delivered to the watch's callback when it has one and asked
for the type, and to every active subscription of the tenant that lists the type.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import asyncpg
import pytest

from service.errors import LeaseLost
from service.store import migrations
from service.store.base import (
    AttemptOutcome,
    AttemptRecord,
    Delivery,
    DeliveryRecord,
    NewDelivery,
    NewEvent,
    Recorded,
    Redelivery,
    Store,
    Subscription,
    Watch,
    callback_host,
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
    WATCH_UPSTREAM_MIGRATION,
    A,
    B,
    C,
    attempt,
    completion,
    old_schema,
    pending_ids,
    progress,
    register,
    reread,
)

FINAL = ("job.succeeded", "job.failed")
EVERY = ("job.queued", "job.processing", *FINAL)
_serial = itertools.count(1)


def new_subscription(**changes: Any) -> Subscription:
    """An active subscription as the service layer builds it; `changes` override any field."""
    serial = next(_serial)
    subscription = Subscription(
        id=f"sub_{serial:010d}",
        tenant=TENANT,
        url=f"https://sub{serial}.example/in",
        events=FINAL,
        secret=f"sealed-secret-{serial}",
        headers={"X-Sub": f"sealed-{serial}"},
        final_statuses=(404, 409),
        status="active",
        created_at=T0,
        updated_at=T0,
    )
    return replace(subscription, **changes)


def event(event_type: str, *, callback: bool = True) -> NewEvent:
    """An event of `event_type` whose envelope differs from its callback body (raw format)."""
    serial = next(_serial)
    final = event_type in FINAL
    body = b'{"id": "evt_%d", "type": "%s"}' % (serial, event_type.encode())
    delivery = NewDelivery(f"msg_cb{serial:08d}", event_type, b'{"raw": %d}' % serial, final)
    return NewEvent(f"evt_{serial:010d}", event_type, final, body, delivery if callback else None)


async def subscribe(store: Store, **changes: Any) -> Subscription:
    return await store.insert_subscription(new_subscription(**changes))


async def finish(
    store: Store, watch: Watch, final: NewEvent, now: float = T0 + 1
) -> list[Delivery]:
    """Complete `watch` (held by A, token 1) with `final`; the deliveries A now holds."""
    done = replace(completion(watch), event=final)
    return await store.complete_watch(A, now, done, now + LEASE_S)


# Fan-out.


async def test_a_final_event_goes_to_the_callback_and_every_matching_subscription(
    store: Store,
) -> None:
    """complete_watch answers the callback's delivery first, then one per subscription sent as
    the subscription says (URL, POST, headers, secret, final statuses) with the envelope; every
    delivery names the event, and each endpoint has its own webhook id."""
    first, second = await subscribe(store), await subscribe(store, events=EVERY)
    watch = await register(store, owner=A, callback_method="PUT", final_statuses=(422,))
    final = event("job.succeeded")
    assert final.callback is not None

    callback, *subscribed = await finish(store, watch, final)

    assert (callback.id, callback.body, callback.subscription_id) == (
        final.callback.id, final.callback.body, None,
    )  # fmt: skip
    assert (callback.callback_url, callback.callback_method) == (watch.callback_url, "PUT")
    assert callback.final_statuses == (422,)
    assert [d.subscription_id for d in subscribed] == [first.id, second.id]
    for delivery, subscription in zip(subscribed, (first, second), strict=True):
        assert delivery == Delivery(
            id=delivery.id,
            watch_id=watch.id,
            event_type="job.succeeded",
            body=final.body,
            final=True,
            attempts=0,
            lease_token=1,
            callback_url=subscription.url,
            callback_method="POST",
            callback_headers=subscription.headers,
            secret=subscription.secret,
            created_at=T0 + 1,
            subscription_id=subscription.id,
            event_id=final.id,
            final_statuses=(404, 409),
            tenant=watch.tenant,
        )
    assert len({callback.id, *(d.id for d in subscribed)}) == 3
    assert callback.event_id == final.id
    assert (await reread(store, watch)).status == "delivering"
    # Claimed by A: nobody else gets them before the lease runs out.
    assert await store.claim_deliveries(B, T0 + 2, FAR, 10) == []


async def test_subscriptions_get_only_the_types_they_list_and_only_of_their_tenant(
    store: Store,
) -> None:
    """A progress event goes to a subscription listing its type, not to one listing only final
    events, nor to another tenant's; a watch that did not ask for it sends no callback."""
    finals = await subscribe(store)
    every = await subscribe(store, events=EVERY)
    await subscribe(store, tenant=OTHER_TENANT, events=EVERY)
    watch = await register(store, owner=A, lease_until=FAR)
    processing = event("job.processing", callback=False)

    recorded = await store.record_progress(A, T0 + 1, [progress(watch, events=[processing])])

    assert recorded == Recorded(lost=set(), deliveries=1)  # the one subscription listing it

    claimed = await store.claim_deliveries(B, T0 + 1, T0 + 1 + LEASE_S, 10)
    assert [(d.subscription_id, d.event_id, d.body) for d in claimed] == [
        (every.id, processing.id, processing.body)
    ]
    assert finals.id not in {d.subscription_id for d in claimed}


async def test_one_flush_fans_out_every_watch_of_a_tenant(store: Store) -> None:
    """Several watches of one tenant recording events in one flush each reach the subscription;
    a watch whose lease was lost records nothing."""
    subscription = await subscribe(store, events=EVERY)
    watches = [await register(store, owner=A, lease_until=FAR) for _ in range(3)]
    stale = await register(store, owner=A, lease_until=FAR)
    events = [event("job.queued") for _ in range(4)]
    changes = [progress(w, events=[e]) for w, e in zip(watches, events, strict=False)]

    recorded = await store.record_progress(
        A, T0 + 1, [*changes, progress(stale, token=7, events=[events[3]])]
    )

    assert recorded == Recorded(lost={stale.id}, deliveries=6)
    claimed = await store.claim_deliveries(B, T0 + 1, T0 + 1 + LEASE_S, 20)
    by_endpoint = {(d.event_id, d.subscription_id) for d in claimed}
    assert by_endpoint == {(e.id, s) for e in events[:3] for s in (None, subscription.id)}
    assert await store.watch_events(TENANT, stale.id) == []


async def test_a_flush_written_again_records_its_events_once(store: Store) -> None:
    """A flush written again, as after a commit applied whose answer was lost (an outage may do
    that), is applied, and records each of its events and their deliveries once: it is not
    refused, which would fail every later flush it is part of."""
    subscription = await subscribe(store, events=EVERY)
    watch = await register(store, owner=A, lease_until=FAR)
    change = progress(watch, events=[event("job.queued")])
    assert await store.record_progress(A, T0 + 1, [change]) == Recorded(set(), 2)

    assert await store.record_progress(A, T0 + 2, [change]) == Recorded(set(), 0)

    assert len(await store.watch_events(TENANT, watch.id)) == 1
    endpoints = [d.subscription_id for d in await store.watch_deliveries(TENANT, watch.id)]
    assert endpoints == [None, subscription.id]


async def test_a_watch_without_a_callback_completes_and_its_events_go_to_subscriptions(
    store: Store,
) -> None:
    """callback_url None is kept; the final event makes the watch `completed` at once (ended),
    and only the subscriptions' deliveries are returned."""
    subscription = await subscribe(store)
    watch = await register(store, owner=A, callback_url=None, callback_headers={}, secret="")
    assert (await reread(store, watch)).callback_url is None
    final = event("job.failed", callback=False)

    [delivery] = await finish(store, watch, final, T0 + 3)

    assert (delivery.subscription_id, delivery.body) == (subscription.id, final.body)
    stored = await reread(store, watch)
    assert (stored.status, stored.completed_at, stored.job_status) == (
        "completed", T0 + 3, "succeeded",
    )  # fmt: skip
    await store.record_attempt(A, delivery, attempt(delivery, "failed"), "failed", T0 + 4)
    assert (await reread(store, watch)).status == "completed"
    assert (await store.count_watches(TENANT))["completed"] == 1


async def test_subscription_attempts_leave_the_watch_alone(store: Store) -> None:
    """Attempts of a subscription's delivery count in the watch, as every attempt its log lists
    does, but neither end it nor become its last error; the attempt log names the subscription
    of each attempt."""
    subscription = await subscribe(store)
    watch = await register(store, owner=A)
    callback, subscribed = await finish(store, watch, event("job.succeeded"))

    await store.record_attempt(A, subscribed, attempt(subscribed, "failed"), "failed", T0 + 2)

    stored = await reread(store, watch)
    assert (stored.status, stored.attempts, stored.last_error) == ("delivering", 1, None)
    await store.record_attempt(A, callback, attempt(callback, "succeeded"), "succeeded", T0 + 3)
    stored = await reread(store, watch)
    assert (stored.status, stored.attempts) == ("delivered", 2)
    log = await store.list_attempts(TENANT, watch.id)
    assert [(a.delivery_id, a.subscription_id) for a in log] == [
        (subscribed.id, subscription.id), (callback.id, None),
    ]  # fmt: skip


# Subscriptions ending.


async def test_gone_on_a_subscription_ends_it_and_only_its_pending_deliveries(
    store: Store,
) -> None:
    """410 from a subscription makes it `gone` and cancels its pending deliveries of every watch;
    the watch, its callback and the other subscriptions go on; later events skip it."""
    leaving, staying = await subscribe(store, events=EVERY), await subscribe(store, events=EVERY)
    watch = await register(store, owner=A, lease_until=FAR)
    other = await register(store, owner=A, lease_until=FAR)
    queued = event("job.queued")
    await store.record_progress(A, T0, [progress(other, events=[queued])])
    _, gone, kept = await finish(store, watch, event("job.succeeded"))
    assert gone.subscription_id == leaving.id

    await store.record_attempt(A, gone, attempt(gone, "gone"), "gone", T0 + 2)

    assert (await reread(store, watch)).status == "delivering"
    found = await store.get_subscription(TENANT, leaving.id)
    assert found is not None
    assert (found.status, found.updated_at) == ("gone", T0 + 2)
    assert await store.list_subscriptions(TENANT) == [staying]
    pending = await store.claim_deliveries(B, FAR, FAR + LEASE_S, 20)
    assert {(d.watch_id, d.subscription_id) for d in pending} == {
        (other.id, None), (other.id, staying.id), (watch.id, None), (watch.id, staying.id),
    }  # fmt: skip
    assert kept.id in {d.id for d in pending}
    later = event("job.processing")
    await store.record_progress(A, FAR, [progress(other, events=[later])])
    fresh = await store.claim_deliveries(B, FAR, FAR + LEASE_S, 20)
    assert {d.subscription_id for d in fresh} == {None, staying.id}


async def test_a_batch_applies_a_subscriptions_410_after_the_records_before_it(
    store: Store,
) -> None:
    """Records of several watches are applied in their order: another watch's attempt to a
    subscription, recorded before the subscription's 410 in the same batch, is kept (its
    delivery failed, its attempt logged), not undone by the 410 that came after it."""
    subscription = await subscribe(store)
    first, second = [await register(store, owner=A, lease_until=FAR) for _ in range(2)]
    [earlier] = await finish(store, first, event("job.succeeded", callback=False))
    [later] = await finish(store, second, event("job.succeeded", callback=False))
    assert (earlier.subscription_id, later.subscription_id) == (subscription.id,) * 2

    lost = await store.record_attempts(
        A, [
            AttemptRecord(later, attempt(later, "failed"), "failed", T0 + 2),
            AttemptRecord(earlier, attempt(earlier, "gone"), "gone", T0 + 2),
        ],
    )  # fmt: skip

    assert lost == set()
    assert [d.status for d in await store.watch_deliveries(TENANT, second.id)] == ["failed"]
    assert [a.delivery_id for a in await store.list_attempts(TENANT, second.id)] == [later.id]
    found = await store.get_subscription(TENANT, subscription.id)
    assert found is not None
    assert found.status == "gone"


async def test_gone_on_the_callback_spares_the_subscriptions_deliveries(store: Store) -> None:
    """410 from the watch's callback ends the watch and its callback deliveries; the
    subscriptions still get the events already recorded."""
    subscription = await subscribe(store, events=EVERY)
    watch = await register(store, owner=A, lease_until=FAR)
    await store.record_progress(A, T0, [progress(watch, events=[event("job.queued")])])
    claimed = await store.claim_deliveries(B, T0, T0 + LEASE_S, 10)
    # Due together: the callback's first here, whatever the claim's order among them.
    callback, subscribed = sorted(claimed, key=lambda d: d.subscription_id is not None)
    assert (callback.subscription_id, subscribed.subscription_id) == (None, subscription.id)

    await store.record_attempt(B, callback, attempt(callback, "gone"), "gone", T0 + 1)

    assert (await reread(store, watch)).status == "gone"
    assert await pending_ids(store) == {subscribed.id}


async def test_deleting_a_subscription_cancels_its_deliveries_and_stops_new_ones(
    store: Store,
) -> None:
    """delete_subscription ends an active subscription (and its pending deliveries); deleting
    it again, another tenant's or an unknown one answers None; later events skip it."""
    subscription = await subscribe(store, events=EVERY)
    watch = await register(store, owner=A, lease_until=FAR)
    await store.record_progress(
        A, T0, [progress(watch, events=[event("job.queued", callback=False)])]
    )
    assert await store.delete_subscription(OTHER_TENANT, subscription.id, T0 + 1) is None

    deleted = await store.delete_subscription(TENANT, subscription.id, T0 + 1)

    assert deleted == replace(subscription, status="deleted", updated_at=T0 + 1)
    assert await store.get_subscription(TENANT, subscription.id) == deleted
    assert await store.delete_subscription(TENANT, subscription.id, T0 + 2) is None
    assert await store.delete_subscription(TENANT, "sub_unknown", T0 + 2) is None
    assert await store.list_subscriptions(TENANT) == []
    assert await pending_ids(store) == set()
    [callback] = await finish(store, watch, event("job.succeeded"), T0 + 3)
    assert callback.subscription_id is None


async def test_subscriptions_are_listed_oldest_first_per_tenant(store: Store) -> None:
    """list_subscriptions: the tenant's active ones, oldest first, every field as stored;
    get_subscription does not cross tenants."""
    first = await subscribe(store, headers={}, final_statuses=(), secret="")
    second = await subscribe(store, events=("job.failed",))
    theirs = await subscribe(store, tenant=OTHER_TENANT)

    assert await store.list_subscriptions(TENANT) == [first, second]
    assert await store.list_subscriptions(OTHER_TENANT) == [theirs]
    assert await store.get_subscription(TENANT, theirs.id) is None
    assert await store.get_subscription(OTHER_TENANT, theirs.id) == theirs


# Redelivery.


async def test_redeliver_sends_the_final_event_again_to_callback_and_active_subscriptions(
    store: Store,
) -> None:
    """A delivered watch's final deliveries to its callback and to still-active subscriptions
    become pending again with their ids; a gone subscription's and one still pending stay."""
    done, _, _ = [await subscribe(store) for _ in range(3)]
    watch = await register(store, owner=A)
    callback, to_done, to_gone, to_busy = await finish(store, watch, event("job.succeeded"))
    ends: list[tuple[Delivery, AttemptOutcome]] = [
        (callback, "succeeded"), (to_done, "succeeded"), (to_gone, "gone"),
    ]  # fmt: skip
    for delivery, outcome in ends:
        await store.record_attempt(A, delivery, attempt(delivery, outcome), outcome, T0 + 2)
    await store.record_attempt(
        A, to_busy, attempt(to_busy, "retry", next_attempt_at=T0 + 50), "retry", T0 + 2
    )
    assert (await reread(store, watch)).status == "delivered"

    again = await store.redeliver(TENANT, watch.id, T0 + 10)

    assert again is not None
    assert again.watch.status == "delivering"
    assert set(again.restarted) == {callback.id, to_done.id}
    claimed = await store.claim_deliveries(B, T0 + 10, T0 + 10 + LEASE_S, 10)
    assert {(d.id, d.subscription_id) for d in claimed} == {
        (callback.id, None), (to_done.id, done.id),
    }  # fmt: skip
    assert all((d.attempts, d.series) == (0, 2) for d in claimed)
    # The one still in its retries keeps its schedule and its count.
    later = await store.claim_deliveries(B, T0 + 50, T0 + 50 + LEASE_S, 10)
    assert {d.id: d.attempts for d in later}[to_busy.id] == 1


async def test_an_attempt_of_the_series_before_a_redelivery_is_fenced_off(store: Store) -> None:
    """An attempt still in flight when its delivery was cancelled and redelivered is refused,
    even when its owner has claimed the new series since: it is logged in no series and
    neither counts against the new series nor ends it."""
    subscription = await subscribe(store)
    watch = await register(store, owner=A, callback_url=None)
    [old] = await finish(store, watch, event("job.succeeded", callback=False))
    await store.set_subscription_status(TENANT, subscription.id, "disabled", T0 + 2)
    await store.set_subscription_status(TENANT, subscription.id, "active", T0 + 3)
    await store.redeliver(TENANT, watch.id, T0 + 4)
    [new] = await store.claim_deliveries(A, T0 + 5, T0 + 5 + LEASE_S, 10)
    stale = AttemptRecord(old, attempt(old, "failed", started_at=T0 + 1), "failed", T0 + 6)

    assert await store.record_attempts(A, [stale]) == {old.id}
    with pytest.raises(LeaseLost):
        await store.record_attempt(A, old, stale.attempt, "failed", T0 + 6)

    assert await store.list_attempts(TENANT, watch.id) == []
    [pending] = await store.watch_deliveries(TENANT, watch.id)
    assert (pending.status, pending.attempts, pending.series) == ("pending", 0, 2)
    await store.record_attempt(A, new, attempt(new, started_at=T0 + 5), "succeeded", T0 + 7)
    log = await store.list_attempts(TENANT, watch.id)
    assert [(a.series, a.number, a.status_code) for a in log] == [(2, 1, 200)]


async def test_redeliver_of_a_completed_watch_keeps_it_completed(store: Store) -> None:
    """A watch without a callback is redeliverable: its subscriptions' final deliveries start
    over, and the watch stays `completed`."""
    await subscribe(store)
    watch = await register(store, owner=A, callback_url=None)
    [delivery] = await finish(store, watch, event("job.succeeded", callback=False))
    await store.record_attempt(A, delivery, attempt(delivery, "failed"), "failed", T0 + 2)

    again = await store.redeliver(TENANT, watch.id, T0 + 10)

    assert again is not None
    assert again.watch.status == "completed"
    assert await pending_ids(store) == {delivery.id}


async def test_redeliver_to_chosen_endpoints_only(store: Store) -> None:
    """Named endpoints only: a subscription alone leaves the failed callback (and the watch)
    as they are; the callback alone leaves the subscriptions. A name the event was not
    addressed to, or one still pending, restarts nothing."""
    first = await subscribe(store)
    await subscribe(store)
    watch = await register(store, owner=A)
    callback, to_first, to_second = await finish(store, watch, event("job.succeeded"))
    ends: list[tuple[Delivery, AttemptOutcome]] = [
        (callback, "failed"), (to_first, "succeeded"), (to_second, "failed"),
    ]  # fmt: skip
    for delivery, outcome in ends:
        await store.record_attempt(A, delivery, attempt(delivery, outcome), outcome, T0 + 2)

    only_first = await store.redeliver(TENANT, watch.id, T0 + 10, [first.id])

    assert only_first is not None
    assert (only_first.watch.status, only_first.restarted) == ("failed", (to_first.id,))
    for nothing in ([first.id, "sub_none"], []):
        assert await store.redeliver(TENANT, watch.id, T0 + 11, nothing) == Redelivery(
            only_first.watch
        )
    only_callback = await store.redeliver(TENANT, watch.id, T0 + 12, ["callback"])
    assert only_callback is not None
    assert (only_callback.watch.status, only_callback.restarted) == ("delivering", (callback.id,))
    series = {d.id: d.series for d in await store.watch_deliveries(TENANT, watch.id)}
    assert series == {callback.id: 2, to_first.id: 2, to_second.id: 1}


# Reading events back.


async def test_list_events_newest_first_by_type_and_tenant(store: Store) -> None:
    """Every event is kept whatever its deliveries, read back newest first, filtered by type,
    limited, and never across tenants."""
    watch = await register(store, owner=A, lease_until=FAR)
    theirs = await register(store, owner=A, lease_until=FAR, tenant=OTHER_TENANT)
    queued, processing = event("job.queued", callback=False), event("job.processing")
    await store.record_progress(A, T0 + 1, [progress(watch, events=[queued, processing])])
    await store.record_progress(A, T0 + 2, [progress(theirs, events=[event("job.queued")])])
    final = event("job.failed")
    await finish(store, watch, final, T0 + 3)

    listed = await store.list_events(TENANT)

    assert [(e.id, e.watch_id, e.type, e.final, e.body, e.created_at) for e in listed] == [
        (final.id, watch.id, "job.failed", True, final.body, T0 + 3),
        (processing.id, watch.id, "job.processing", False, processing.body, T0 + 1),
        (queued.id, watch.id, "job.queued", False, queued.body, T0 + 1),
    ]
    some = await store.list_events(TENANT, types=["job.queued", "job.failed"])
    assert [e.id for e in some] == [final.id, queued.id]
    assert [e.id for e in await store.list_events(TENANT, limit=1)] == [final.id]
    assert [e.watch_id for e in await store.list_events(OTHER_TENANT)] == [theirs.id]


async def test_watch_events_oldest_first_after_a_given_event(store: Store) -> None:
    """watch_events: one watch's events in order; `after` one of them, those that follow; after
    an id that is not the watch's, all of them; another tenant's watch, none."""
    watch = await register(store, owner=A, lease_until=FAR)
    other = await register(store, owner=A, lease_until=FAR)
    first, second = event("job.queued"), event("job.processing")
    foreign = event("job.queued")
    await store.record_progress(A, T0 + 1, [progress(watch, events=[first])])
    await store.record_progress(A, T0 + 2, [progress(other, events=[foreign])])
    await store.record_progress(A, T0 + 3, [progress(watch, events=[second])])
    final = event("job.succeeded")
    await finish(store, watch, final, T0 + 4)

    every = [e.id for e in await store.watch_events(TENANT, watch.id)]

    assert every == [first.id, second.id, final.id]
    assert [e.id for e in await store.watch_events(TENANT, watch.id, after=first.id)] == [
        second.id, final.id,
    ]  # fmt: skip
    assert await store.watch_events(TENANT, watch.id, after=final.id) == []
    assert [e.id for e in await store.watch_events(TENANT, watch.id, after=foreign.id)] == every
    assert await store.watch_events(OTHER_TENANT, watch.id) == []


async def test_purge_deletes_old_events_of_ended_watches_only(store: Store) -> None:
    """Housekeeping deletes the events recorded before the cut-off of watches that ended; those
    of a watch still polling stay."""
    ended = await register(store, owner=A, lease_until=FAR, callback_url=None)
    polling = await register(store, owner=A, lease_until=FAR)
    await store.record_progress(A, T0, [progress(polling, events=[event("job.queued")])])
    await finish(store, ended, event("job.succeeded", callback=False), T0)

    await store.purge_bodies(T0 + 1)

    assert await store.watch_events(TENANT, ended.id) == []
    assert len(await store.watch_events(TENANT, polling.id)) == 1


async def test_watch_deliveries_are_the_bodies_sent_in_order_and_of_their_tenant_only(
    store: Store,
) -> None:
    """watch_deliveries lists a watch's deliveries oldest first (the callback's before the
    subscriptions' of one event), each with the body as sent (the callback's in its format, a
    subscription's the envelope), its endpoint, status, attempt count and, while pending, when
    it is due; another tenant reads nothing; a purged body is None."""
    subscription = await subscribe(store)
    watch = await register(store, owner=A, lease_until=FAR)
    queued = event("job.queued")
    await store.record_progress(A, T0, [progress(watch, events=[queued])])
    final = event("job.succeeded")
    callback, to_subscription = await finish(store, watch, final, now=T0 + 1)
    await store.record_attempt(A, callback, attempt(callback), "succeeded", T0 + 2)
    outcome: AttemptOutcome = "retry"
    later = attempt(to_subscription, outcome, next_attempt_at=T0 + 60)
    await store.record_attempt(A, to_subscription, later, outcome, T0 + 2)
    assert queued.callback is not None
    assert final.callback is not None

    found = await store.watch_deliveries(TENANT, watch.id)

    assert found == [
        DeliveryRecord(
            queued.callback.id, "job.queued", False, "pending", 0, queued.callback.body, T0,
            None, queued.id, T0,
        ),
        DeliveryRecord(
            callback.id, "job.succeeded", True, "succeeded", 1, final.callback.body, T0 + 1,
            None, final.id,
        ),
        DeliveryRecord(
            to_subscription.id, "job.succeeded", True, "pending", 1, final.body, T0 + 1,
            subscription.id, final.id, T0 + 60,
        ),
    ]  # fmt: skip
    assert await store.watch_deliveries(OTHER_TENANT, watch.id) == []
    await store.purge_bodies(T0 + 3)
    purged = {d.id: d.body for d in await store.watch_deliveries(TENANT, watch.id)}
    assert purged[callback.id] is None
    assert purged[to_subscription.id] == final.body  # still pending: kept


# Sending.


async def test_the_per_host_limit_counts_a_subscription_under_its_own_host(
    store: Store,
) -> None:
    """The per-host key of a subscription's delivery is the subscription URL's host, not the
    watch's callback host."""
    await subscribe(store, url="https://user:pw@Hooks.Example:8443/in", events=EVERY)
    watch = await register(store, owner=A, lease_until=FAR, callback_url="https://cb.example/x")
    for n in range(3):
        await store.record_progress(A, T0 + n, [progress(watch, events=[event("job.queued")])])

    claimed = await store.claim_deliveries(B, T0 + 10, T0 + 10 + LEASE_S, 10, per_host=2)
    assert sorted(callback_host(d.callback_url) for d in claimed) == [
        "https://cb.example", "https://cb.example",
        "https://hooks.example:8443", "https://hooks.example:8443",
    ]  # fmt: skip
    await store.release_deliveries(B, [(d.id, d.lease_token) for d in claimed])

    limited = {"https://hooks.example:8443": 0}
    claimed = await store.claim_deliveries(B, T0 + 10, FAR, 10, host_limits=limited)
    assert {d.subscription_id for d in claimed} == {None}
    assert len(claimed) == 3


# Deliveries recorded before each kept its host key (migration 0003).


async def _insert_old_subscription(store: Store, sub: Subscription) -> None:
    """`sub` written as the store wrote it at migration 0002 (before rotations)."""
    row = (
        sub.id, sub.tenant, sub.url, json.dumps(sub.events), sub.secret, json.dumps(sub.headers),
        json.dumps(sub.final_statuses), sub.status, sub.created_at, sub.updated_at,
    )  # fmt: skip
    columns = "id, tenant, url, events, secret, headers, final_statuses, status, created_at"
    sql = f"INSERT INTO subscriptions ({columns}, updated_at) VALUES"
    if isinstance(store, SQLiteStore):
        with contextlib.closing(sqlite3.connect(store.path)) as db, db:
            db.execute(f"{sql} ({', '.join('?' * len(row))})", row)
        return
    assert isinstance(store, PostgresStore)
    db = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": str(store.schema)})
    try:
        places = ", ".join(f"${n}" for n in range(1, len(row) + 1))
        await db.execute(f"{sql} ({places})", *row)
    finally:
        await db.close()


async def _insert_old_deliveries(
    store: Store, rows: Sequence[tuple[str, str, str | None]], host: str | None = None
) -> None:
    """Pending (id, watch id, subscription id) progress deliveries, due at T0, written as the
    store wrote them at migration 0002 (no host key), or with `host` as at 0003 (no tenant)."""
    columns = "id, watch_id, event_type, body, final, status, next_attempt_at, created_at"
    columns += ", subscription_id"
    extra: tuple[str, ...] = ()
    if host is not None:
        columns, extra = f"{columns}, host", (host,)
    if isinstance(store, SQLiteStore):
        with contextlib.closing(sqlite3.connect(store.path)) as db, db:
            db.executemany(
                f"INSERT INTO deliveries ({columns}) VALUES"  # noqa: S608
                f" (?, ?, 'job.queued', x'7b7d', 0, 'pending', ?, ?, ?{', ?' * len(extra)})",
                [(id_, watch_id, T0, T0, sub, *extra) for id_, watch_id, sub in rows],
            )
        return
    assert isinstance(store, PostgresStore)
    db = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": str(store.schema)})
    try:
        await db.executemany(
            f"INSERT INTO deliveries ({columns}) VALUES"  # noqa: S608
            " ($1, $2, 'job.queued', '{}', false, 'pending', $3, $3, $4"
            f"{', $5' * len(extra)})",
            [(id_, watch_id, T0, sub, *extra) for id_, watch_id, sub in rows],
        )
    finally:
        await db.close()


def _reopened(old: Store) -> Store:
    """A new store on the database of `old` (closed)."""
    if isinstance(old, SQLiteStore):
        return SQLiteStore(old.path)
    assert isinstance(old, PostgresStore)
    return PostgresStore(POSTGRES_URL, schema=old.schema)


def _backend(store: Store) -> str:
    return "sqlite" if isinstance(store, SQLiteStore) else "postgres"


async def test_deliveries_of_a_0002_database_are_claimed_by_host_once_migrated(
    unopened_sql_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pending deliveries recorded before migration 0003 (to a watch's callback and to a
    subscription, URLs with credentials, upper case, a port) get their endpoint's host key
    when it is applied, the same key `callback_host` gives: claims cap them per host and leave
    a host alone by that key."""
    every = migrations.load
    monkeypatch.setattr(migrations, "load", old_schema(3))
    old = unopened_sql_store
    await old.open()
    sub = new_subscription(url="https://user:pw@Hooks.Example:8443/in")
    watch = await register(old, callback_url="https://CB.example/x?y=1")
    other = await register(old, callback_url="http://other.example:8080/hooks")
    await old.close()
    await _insert_old_subscription(old, sub)
    await _insert_old_deliveries(
        old,
        [(f"msg_cb{n}", watch.id, None) for n in range(3)]
        + [(f"msg_sub{n}", watch.id, sub.id) for n in range(3)]
        + [("msg_other", other.id, None)],
    )
    monkeypatch.undo()
    store = _reopened(old)
    await store.open(migrate=False)
    try:
        assert await store.migrate() == [
            v for v, _ in every(_backend(old)) if 3 <= v != WATCH_UPSTREAM_MIGRATION
        ]
        claimed = await store.claim_deliveries(B, T0 + 1, FAR, 10, per_host=2)
        assert Counter(callback_host(d.callback_url) for d in claimed) == {
            "https://cb.example": 2, "https://hooks.example:8443": 2,
            "http://other.example:8080": 1,
        }  # fmt: skip
        alone = {"https://cb.example": 0, "https://hooks.example:8443": 0}
        left = await store.claim_deliveries(C, T0 + 1, FAR, 10, per_host=5, host_limits=alone)
        assert left == []
        rest = await store.claim_deliveries(C, T0 + 1, FAR, 10, per_host=5)
        assert sorted(d.id for d in rest) == ["msg_cb2", "msg_sub2"]
    finally:
        await store.close()


# Deliveries recorded before each kept its tenant (migration 0005).


async def test_deliveries_of_a_0003_database_are_claimed_by_tenant_once_migrated(
    unopened_sql_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pending deliveries recorded before migration 0005 (to a watch's callback and to a
    subscription) get their watch's tenant when it is applied: claims cap them per tenant and
    leave a tenant alone by it, and each claimed delivery names its tenant."""
    every = migrations.load
    monkeypatch.setattr(migrations, "load", old_schema(5))
    old = unopened_sql_store
    await old.open()
    sub = new_subscription(url="https://hooks.example/in")
    mine = await register(old, callback_url="https://hooks.example/a")
    theirs = await register(old, tenant=OTHER_TENANT, callback_url="https://hooks.example/b")
    await old.close()
    await _insert_old_subscription(old, sub)
    await _insert_old_deliveries(
        old,
        [(f"msg_mine{n}", mine.id, None) for n in range(2)]
        + [("msg_sub", mine.id, sub.id)]
        + [(f"msg_theirs{n}", theirs.id, None) for n in range(3)],
        host="https://hooks.example",
    )
    monkeypatch.undo()
    store = _reopened(old)
    await store.open(migrate=False)
    try:
        assert await store.migrate() == [
            v for v, _ in every(_backend(old)) if 5 <= v != WATCH_UPSTREAM_MIGRATION
        ]
        claimed = await store.claim_deliveries(B, T0 + 1, FAR, 10, per_tenant=2)
        assert Counter(d.tenant for d in claimed) == {TENANT: 2, OTHER_TENANT: 2}
        alone = {TENANT: 0}
        left = await store.claim_deliveries(C, T0 + 1, FAR, 10, per_tenant=5, tenant_limits=alone)
        assert [(d.id, d.tenant) for d in left] == [("msg_theirs2", OTHER_TENANT)]
        rest = await store.claim_deliveries(C, T0 + 1, FAR, 10, per_tenant=5)
        assert [(d.id, d.tenant) for d in rest] == [("msg_sub", TENANT)]
    finally:
        await store.close()
