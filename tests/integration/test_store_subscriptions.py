"""The store contract for disabling, rotating and the health of subscriptions, run against every
backend (`store` fixture)."""

from __future__ import annotations

from dataclasses import replace

from service.store.base import Store, SubscriptionHealth
from tests.integration.test_store_contract import (
    FAR,
    LEASE_S,
    OTHER_TENANT,
    T0,
    TENANT,
    A,
    attempt,
    pending_ids,
    progress,
    register,
)
from tests.integration.test_store_events import EVERY, event, finish, subscribe


async def test_disabling_cancels_pending_deliveries_and_enabling_gets_later_events(
    store: Store,
) -> None:
    """A disabled subscription is still listed, its pending deliveries are cancelled and new
    events skip it; enabled again, it gets the events recorded from then on."""
    subscription = await subscribe(store, events=EVERY)
    watch = await register(store, owner=A, lease_until=FAR)
    queued = event("job.queued", callback=False)
    await store.record_progress(A, T0, [progress(watch, events=[queued])])
    assert len(await pending_ids(store)) == 1
    assert (
        await store.set_subscription_status(OTHER_TENANT, subscription.id, "disabled", T0) is None
    )

    disabled = await store.set_subscription_status(TENANT, subscription.id, "disabled", T0 + 1)

    assert disabled == replace(subscription, status="disabled", updated_at=T0 + 1)
    assert await store.list_subscriptions(TENANT) == [disabled]
    assert await pending_ids(store) == set()
    later = event("job.processing", callback=False)
    await store.record_progress(A, T0 + 2, [progress(watch, events=[later])])
    assert await pending_ids(store) == set()

    enabled = await store.set_subscription_status(TENANT, subscription.id, "active", T0 + 3)

    assert enabled == replace(subscription, status="active", updated_at=T0 + 3)
    [callback, subscribed] = await finish(store, watch, event("job.succeeded"), T0 + 4)
    assert (callback.subscription_id, subscribed.subscription_id) == (None, subscription.id)


async def test_an_ended_subscription_cannot_be_enabled_but_a_disabled_one_can_be_deleted(
    store: Store,
) -> None:
    """Deleting works from `disabled`; `deleted` is final for status changes and rotations."""
    subscription = await subscribe(store)
    await store.set_subscription_status(TENANT, subscription.id, "disabled", T0 + 1)

    deleted = await store.delete_subscription(TENANT, subscription.id, T0 + 2)

    assert deleted is not None
    assert deleted.status == "deleted"
    assert await store.set_subscription_status(TENANT, subscription.id, "active", T0 + 3) is None
    rotated = await store.rotate_subscription_secret(TENANT, subscription.id, "s2", FAR, T0 + 3)
    assert rotated is None
    assert await store.list_subscriptions(TENANT) == []


async def test_a_rotation_keeps_the_secret_before_and_deliveries_carry_both(store: Store) -> None:
    """rotate_subscription_secret: the new secret, the one before and until when it signs, kept
    and handed with the subscription's deliveries; never across tenants."""
    subscription = await subscribe(store, secret="sealed-old")
    args = (subscription.id, "sealed-new", T0 + 100, T0 + 1)
    assert await store.rotate_subscription_secret(OTHER_TENANT, *args) is None

    rotated = await store.rotate_subscription_secret(TENANT, *args)

    assert rotated == replace(
        subscription, secret="sealed-new", previous_secret="sealed-old",
        previous_secret_until=T0 + 100, updated_at=T0 + 1,
    )  # fmt: skip
    assert await store.get_subscription(TENANT, subscription.id) == rotated
    watch = await register(store, owner=A)
    [_, subscribed] = await finish(store, watch, event("job.succeeded"))
    assert (subscribed.secret, subscribed.previous_secret) == ("sealed-new", "sealed-old")
    assert subscribed.previous_secret_until == T0 + 100


async def test_health_counts_the_attempts_since_a_time_and_names_the_latest_error(
    store: Store,
) -> None:
    """subscription_health: per subscription of the tenant, attempts started since `since`,
    those with a 2xx, and the latest without one; older attempts and other tenants left out."""
    flaky, quiet = await subscribe(store, events=EVERY), await subscribe(store, events=EVERY)
    theirs = await subscribe(store, tenant=OTHER_TENANT, events=EVERY)
    mine = await register(store, owner=A, lease_until=FAR)
    other = await register(store, owner=A, lease_until=FAR, tenant=OTHER_TENANT)
    for watch in (mine, other):
        events = [event("job.queued", callback=False) for _ in range(4)]
        await store.record_progress(A, T0, [progress(watch, events=events)])
    claimed = await store.claim_deliveries(A, T0, T0 + LEASE_S, 100)
    by_sub: dict[str | None, list] = {}  # type: ignore[type-arg]
    for delivery in sorted(claimed, key=lambda d: d.id):
        by_sub.setdefault(delivery.subscription_id, []).append(delivery)
    old, failed, retried, good = by_sub[flaky.id]
    record = store.record_attempt
    await record(A, old, attempt(old, "failed", started_at=T0), "failed", T0)
    await record(A, failed, attempt(failed, "failed", started_at=T0 + 10), "failed", T0 + 10)
    later = attempt(retried, "retry", started_at=T0 + 20, next_attempt_at=FAR)
    await record(A, retried, later, "retry", T0 + 20)
    await record(A, good, attempt(good, "succeeded", started_at=T0 + 30), "succeeded", T0 + 30)
    theirs_one = by_sub[theirs.id][0]
    await record(A, theirs_one, attempt(theirs_one, "failed", started_at=T0 + 10), "failed", T0)

    health = await store.subscription_health(TENANT, T0 + 5)

    assert health == {
        flaky.id: SubscriptionHealth(3, 1, T0 + 20, "HTTP 503", 503),
    }
    assert quiet.id not in health
    assert (await store.subscription_health(OTHER_TENANT, T0))[theirs.id].attempts == 1
