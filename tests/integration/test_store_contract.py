"""The store contract (`service/store/base.py`), run against every backend by the `store` fixture.

Only the `Store` interface is used, and every time is passed explicitly: no test reads a clock or
sleeps. A lease is observed through what others can claim and which fenced writes are accepted.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import pytest

from service.errors import LeaseLost
from service.store import migrations
from service.store.base import (
    WATCH_STATUSES,
    Attempt,
    AttemptOutcome,
    AttemptRecord,
    Completion,
    Delivery,
    DuplicateIdempotencyKey,
    Idempotency,
    JobOfAnotherTenant,
    NewDelivery,
    NewEvent,
    Progress,
    Recorded,
    Redelivery,
    Store,
    Watch,
    WatchFilter,
    callback_host,
)

T0 = 1_700_000_000.0
LEASE_S = 30.0
FAR = T0 + 100_000.0  # every lease set in these tests has expired by then
A, B, C = "worker-a", "worker-b", "worker-c"
TENANT, OTHER_TENANT = "acme", "globex"
# The answer a receiver gave for each outcome.
STATUS_CODE: dict[AttemptOutcome, int] = {
    "retry": 503,
    "succeeded": 200,
    "failed": 500,
    "gone": 410,
}
ENDS_WATCH = [
    pytest.param("succeeded", "delivered", id="succeeded"),
    pytest.param("failed", "failed", id="failed"),
    pytest.param("gone", "gone", id="gone"),
]

# Ids are time-ordered like real ones: a later builder call gets a greater id.
_serial = itertools.count(1)


# Builders.


def new_watch(**changes: Any) -> Watch:
    """A new watch as the service layer builds it; `changes` override any field."""
    created_at = changes.get("created_at", T0)
    watch = Watch(
        id=f"wch_{next(_serial):010d}",
        tenant=TENANT,
        job_id="job-1",
        callback_url="https://receiver.example/hooks",
        callback_method="POST",
        callback_headers={"X-Trace": "on"},
        metadata={"order": 42, "tags": ["a", "b"]},
        events=("job.progress", "job.completed"),
        payload_format="standard",
        secret="whsec_c2VjcmV0",
        poll_interval_s=5.0,
        timeout_s=3600.0,
        upstream_api_key=None,
        created_at=created_at,
        updated_at=created_at,
        next_poll_at=created_at,
    )
    return replace(watch, **changes)


def new_delivery(*, final: bool = False) -> NewDelivery:
    serial = next(_serial)
    event_type = "job.completed" if final else "job.progress"
    return NewDelivery(f"msg_{serial:010d}", event_type, b'{"n": %d}' % serial, final)


def event_of(callback: NewDelivery) -> NewEvent:
    """The event a callback delivery is of (its envelope is the delivery's body here)."""
    event_id = f"evt_{next(_serial):010d}"
    return NewEvent(event_id, callback.event_type, callback.final, callback.body, callback)


def progress(
    watch: Watch,
    *,
    token: int = 1,
    deliveries: Sequence[NewDelivery] = (),
    events: Sequence[NewEvent] = (),
    job_status: str | None = "running",
    queue_position: int | None = None,
    next_poll_at: float = T0 + 5,
) -> Progress:
    """A progress write-back recording `events`, and an event per callback delivery."""
    recorded = [*(event_of(new) for new in deliveries), *events]
    return Progress(watch.id, token, job_status, queue_position, None, next_poll_at, recorded)


def completion(watch: Watch, *, token: int = 1, callback: bool = True) -> Completion:
    """The end of a watch: its final event, with a callback delivery unless told not to."""
    event = event_of(new_delivery(final=True))
    return Completion(
        watch.id, token, "succeeded", None, event if callback else replace(event, callback=None)
    )


def attempt(
    delivery: Delivery,
    outcome: AttemptOutcome = "succeeded",
    *,
    number: int = 1,
    started_at: float = T0,
    next_attempt_at: float | None = None,
) -> Attempt:
    code = STATUS_CODE[outcome]
    return Attempt(
        delivery_id=delivery.id,
        event_type=delivery.event_type,
        number=number,
        started_at=started_at,
        duration_s=0.25,
        status_code=code,
        error=None if code == 200 else f"HTTP {code}",
        next_attempt_at=next_attempt_at,
    )


# Steps through the lifecycle.


# The old schemas of the migration tests hold the watches today's store writes, and it writes
# the upstream column of this migration.
WATCH_UPSTREAM_MIGRATION = 10


def old_schema(below: int) -> Callable[[str], list[tuple[int, str]]]:
    """`migrations.load` as at the schema before migration `below`, with the watches' upstream
    column; `store.migrate()` then applies the others."""
    every = migrations.load
    return lambda backend: [
        m for m in every(backend) if m[0] < below or m[0] == WATCH_UPSTREAM_MIGRATION
    ]


async def register(
    store: Store, *, owner: str | None = None, lease_until: float = T0 + LEASE_S, **changes: Any
) -> Watch:
    """Insert a new watch; claimed by `owner` (token 1) when given."""
    return await store.insert_watch(
        new_watch(**changes), lease_owner=owner, lease_until=lease_until
    )


async def delivering(
    store: Store, *, now: float = T0, lease_until: float | None = None, tenant: str = TENANT
) -> tuple[Watch, Delivery]:
    """A watch polled by A until its final event, whose delivery A holds."""
    watch = await register(store, owner=A, tenant=tenant)
    until = now + LEASE_S if lease_until is None else lease_until
    [delivery] = await store.complete_watch(A, now, completion(watch), until)
    return watch, delivery


async def ended(
    store: Store, outcome: AttemptOutcome, *, now: float = T0 + 1, tenant: str = TENANT
) -> tuple[Watch, Delivery]:
    """A watch whose final delivery ended with `outcome` at `now`, after one attempt."""
    watch, delivery = await delivering(store, tenant=tenant)
    await store.record_attempt(
        A, delivery, attempt(delivery, outcome, started_at=now), outcome, now
    )
    return watch, delivery


async def held_by(store: Store, owner: str, watch: Watch) -> Watch:
    """Claim `watch` (the only claimable one) as `owner` at T0, for LEASE_S."""
    [claimed] = await store.claim_watches(owner, T0, T0 + LEASE_S, 10)
    assert claimed.id == watch.id
    return claimed


# A lease taken over by B at T0 + LEASE_S + 1, then taken back by A once B's ran out.
TAKEN_BACK_AT = T0 + 2 * LEASE_S + 2


async def pending_ids(store: Store) -> set[str]:
    """Ids of every pending delivery (claims them all, far in the future, as a bystander)."""
    return {d.id for d in await store.claim_deliveries("bystander", FAR, FAR + LEASE_S, 1000)}


async def reread(store: Store, watch: Watch) -> Watch:
    """The watch as stored now (it must exist)."""
    found = await store.get_watch(watch.tenant, watch.id)
    assert found is not None
    return found


def ids(watches: Sequence[Watch] | Sequence[Delivery]) -> list[str]:
    return [item.id for item in watches]


async def listed(store: Store, tenant: str = TENANT, **parts: Any) -> list[str]:
    """The ids listed for a filter of `parts`, after checking that count_matching counts as
    many."""
    found = ids(await store.list_watches(tenant, WatchFilter(**parts)))
    assert await store.count_matching(tenant, WatchFilter(**parts)) == len(found)
    return found


# Registration and reading.


async def test_insert_watch_returns_the_watch_as_stored(store: Store) -> None:
    """insert_watch answers the new watch exactly as get_watch reads it back, every field kept."""
    watch = new_watch(upstream_api_key="upk_123", callback_method="PUT", events=("job.failed",))
    bare = new_watch(metadata=None, callback_headers={})

    assert await store.insert_watch(watch) == watch
    assert await store.insert_watch(bare) == bare
    assert await store.get_watch(TENANT, watch.id) == watch
    assert await store.get_watch(TENANT, bare.id) == bare


async def test_get_watch_unknown_id_is_none(store: Store) -> None:
    """get_watch answers None for an id that was never stored."""
    await register(store)

    assert await store.get_watch(TENANT, "wch_unknown") is None


async def test_another_tenant_sees_nothing(store: Store) -> None:
    """No read or write of another tenant finds a watch, its key, its attempts or its counts."""
    key = Idempotency("key-1", "hash-1", b"{}")
    watch = await store.insert_watch(new_watch(), key)
    ended_watch, _ = await ended(store, "failed")
    before = await store.get_watch(TENANT, ended_watch.id)

    assert await store.get_watch(OTHER_TENANT, watch.id) is None
    assert await store.list_watches(OTHER_TENANT) == []
    assert await store.find_idempotency(OTHER_TENANT, "key-1") is None
    assert await store.list_attempts(OTHER_TENANT, ended_watch.id) == []
    assert await store.cancel_watch(OTHER_TENANT, watch.id, T0 + 5) is None
    assert await store.redeliver(OTHER_TENANT, ended_watch.id, T0 + 5) is None
    assert await store.count_watches(OTHER_TENANT) == dict.fromkeys(WATCH_STATUSES, 0)
    assert await store.get_watch(TENANT, watch.id) == watch
    assert await store.get_watch(TENANT, ended_watch.id) == before


async def test_list_watches_newest_first(store: Store) -> None:
    """list_watches answers the tenant's watches by descending (time-ordered) id."""
    registered = [await register(store) for _ in range(3)]
    await register(store, tenant=OTHER_TENANT)

    assert await store.list_watches(TENANT) == registered[::-1]


async def test_list_watches_filters_by_status_and_job(store: Store) -> None:
    """status and job_id each narrow the listing, and combine."""
    first = await register(store, job_id="job-1")
    cancelled = await register(store, job_id="job-1")
    other_job = await register(store, job_id="job-2")
    await store.cancel_watch(TENANT, cancelled.id, T0 + 1)

    assert await listed(store, status="active") == [other_job.id, first.id]
    assert await listed(store, status="cancelled") == [cancelled.id]
    assert await listed(store, job_id="job-1") == [cancelled.id, first.id]
    assert await listed(store, status="active", job_id="job-1") == [first.id]
    assert await listed(store, status="delivered") == []
    assert await listed(store, job_id="job-3") == []


async def test_list_watches_pages_with_before_id(store: Store) -> None:
    """Following before_id from the last id of each page walks every watch once, newest first."""
    registered = [await register(store) for _ in range(5)]

    pages, cursor = [], None
    for _ in range(5):  # bounded: a cursor that does not advance must fail, not hang
        page = await store.list_watches(TENANT, before_id=cursor, limit=2)
        if not page:
            break
        pages.append(ids(page))
        cursor = page[-1].id

    expected = ids(registered[::-1])
    assert pages == [expected[0:2], expected[2:4], expected[4:5]]


async def test_list_watches_before_id_excludes_the_cursor(store: Store) -> None:
    """before_id answers only the watches strictly older than the cursor."""
    first, second, third = [await register(store) for _ in range(3)]

    assert ids(await store.list_watches(TENANT, before_id=third.id)) == [second.id, first.id]
    assert await store.list_watches(TENANT, before_id=first.id) == []


# Idempotency.


async def test_insert_with_idempotency_records_the_key(store: Store) -> None:
    """The key, request hash and response are recorded with the watch and found by tenant+key."""
    key = Idempotency("key-1", "hash-1", b'{"id": "wch_1"}')

    watch = await store.insert_watch(new_watch(), key)

    assert await store.find_idempotency(TENANT, "key-1") == key
    assert await store.get_watch(TENANT, watch.id) == watch


async def test_duplicate_idempotency_key_raises_and_writes_nothing(store: Store) -> None:
    """Reusing a tenant's key raises DuplicateIdempotencyKey; no watch, lease or key is written."""
    key = Idempotency("key-1", "hash-1", b"first")
    first = await store.insert_watch(new_watch(), key)
    second = new_watch()

    with pytest.raises(DuplicateIdempotencyKey):
        await store.insert_watch(
            second, Idempotency("key-1", "hash-2", b"second"), lease_owner=A, lease_until=FAR
        )

    assert await store.get_watch(TENANT, second.id) is None
    assert await store.list_watches(TENANT) == [first]
    assert await store.find_idempotency(TENANT, "key-1") == key
    assert ids(await store.claim_watches(B, T0, T0 + LEASE_S, 10)) == [first.id]


async def test_same_idempotency_key_under_another_tenant_is_independent(store: Store) -> None:
    """Keys are scoped by tenant: another tenant may use the same key for its own watch."""
    mine = Idempotency("key-1", "hash-1", b"mine")
    theirs = Idempotency("key-1", "hash-2", b"theirs")
    await store.insert_watch(new_watch(), mine)

    watch = await store.insert_watch(new_watch(tenant=OTHER_TENANT), theirs)

    assert await store.get_watch(OTHER_TENANT, watch.id) == watch
    assert await store.find_idempotency(TENANT, "key-1") == mine
    assert await store.find_idempotency(OTHER_TENANT, "key-1") == theirs


async def test_find_idempotency_unknown_key_is_none(store: Store) -> None:
    """find_idempotency answers None for a key the tenant never used."""
    await store.insert_watch(new_watch(), Idempotency("key-1", "hash-1", b"{}"))

    assert await store.find_idempotency(TENANT, "key-2") is None


# Jobs started with the shared upstream key (their owner).


async def start_job(store: Store, tenant: str = TENANT, job_id: str = "job-1") -> Watch:
    """The watch of a job the bridge just started for `tenant` with the shared key."""
    return await store.insert_watch(
        new_watch(tenant=tenant, job_id=job_id), shared_key=True, started=True
    )


async def test_a_started_job_is_refused_to_another_tenant_on_the_shared_key(
    store: Store,
) -> None:
    """Another tenant's shared-key watch of a started job raises JobOfAnotherTenant and writes
    nothing: no watch, no idempotency key, nothing to claim."""
    started = await start_job(store)
    theirs = new_watch(tenant=OTHER_TENANT)

    with pytest.raises(JobOfAnotherTenant):
        await store.insert_watch(
            theirs, Idempotency("key-1", "hash-1", b"{}"), shared_key=True,
            lease_owner=A, lease_until=FAR,
        )  # fmt: skip

    assert await store.get_watch(OTHER_TENANT, theirs.id) is None
    assert await store.list_watches(OTHER_TENANT) == []
    assert await store.find_idempotency(OTHER_TENANT, "key-1") is None
    assert ids(await store.claim_watches(B, T0, T0 + LEASE_S, 10)) == [started.id]


async def test_the_owner_and_watches_with_their_own_key_may_watch_a_started_job(
    store: Store,
) -> None:
    """The owner may watch its job again with the shared key; another tenant with a key of
    its own (no `shared_key`) too, since the upstream answers that key alone."""
    await start_job(store)

    again = await store.insert_watch(new_watch(), shared_key=True)
    own_key = await store.insert_watch(
        new_watch(tenant=OTHER_TENANT, upstream_api_key="sealed-key")
    )

    assert await store.get_watch(TENANT, again.id) == again
    assert await store.get_watch(OTHER_TENANT, own_key.id) == own_key


async def test_a_started_job_is_owned_at_its_upstream_only(store: Store) -> None:
    """The same job id at another upstream is another job: another tenant may watch it there
    with that upstream's shared key."""
    await start_job(store)

    elsewhere = await store.insert_watch(
        new_watch(tenant=OTHER_TENANT, upstream="runway"), shared_key=True
    )

    assert await store.get_watch(OTHER_TENANT, elsewhere.id) == elsewhere


async def test_a_job_nobody_started_may_be_watched_by_every_tenant(store: Store) -> None:
    """A job without an owner (started elsewhere, or with a key of its own): every tenant's
    shared-key watch of it is stored."""
    mine = await store.insert_watch(new_watch(), shared_key=True)
    theirs = await store.insert_watch(new_watch(tenant=OTHER_TENANT), shared_key=True)

    assert await store.list_watches(TENANT) == [mine]
    assert await store.list_watches(OTHER_TENANT) == [theirs]


async def test_the_refusal_comes_before_the_idempotency_key(store: Store) -> None:
    """A tenant reusing its key on another tenant's started job hears JobOfAnotherTenant, not
    DuplicateIdempotencyKey; its key still names its first watch."""
    key = Idempotency("key-1", "hash-1", b"first")
    first = await store.insert_watch(new_watch(tenant=OTHER_TENANT, job_id="job-0"), key)
    await start_job(store)

    with pytest.raises(JobOfAnotherTenant):
        await store.insert_watch(
            new_watch(tenant=OTHER_TENANT), Idempotency("key-1", "hash-2", b"x"), shared_key=True
        )

    assert await store.find_idempotency(OTHER_TENANT, "key-1") == key
    assert await store.list_watches(OTHER_TENANT) == [first]


async def test_no_owner_is_recorded_when_the_watch_is_refused(store: Store) -> None:
    """A started job's watch refused for a duplicate key records no owner: other tenants may
    still watch the job."""
    await store.insert_watch(new_watch(job_id="job-0"), Idempotency("key-1", "hash-1", b"x"))

    with pytest.raises(DuplicateIdempotencyKey):
        await store.insert_watch(
            new_watch(), Idempotency("key-1", "hash-2", b"y"), shared_key=True, started=True
        )

    theirs = await store.insert_watch(new_watch(tenant=OTHER_TENANT), shared_key=True)
    assert await store.list_watches(OTHER_TENANT) == [theirs]


async def test_the_first_owner_stays(store: Store) -> None:
    """A job started again for another tenant keeps its first owner."""
    await start_job(store)
    await store.insert_watch(new_watch(tenant=OTHER_TENANT), started=True)

    with pytest.raises(JobOfAnotherTenant):
        await store.insert_watch(new_watch(tenant=OTHER_TENANT), shared_key=True)
    assert await store.insert_watch(new_watch(), shared_key=True)


async def test_a_refused_registration_fails_alone_among_concurrent_ones(store: Store) -> None:
    """Of registrations made at once, the one refused for another tenant's job fails alone."""
    await start_job(store)
    watches = [new_watch(tenant=OTHER_TENANT, job_id=f"job-x{i}") for i in range(10)]
    watches[4] = replace(watches[4], job_id="job-1")

    outcomes = await asyncio.gather(
        *(store.insert_watch(w, shared_key=True, started=True) for w in watches),
        return_exceptions=True,
    )

    assert isinstance(outcomes[4], JobOfAnotherTenant)
    assert [o for i, o in enumerate(outcomes) if i != 4] == watches[:4] + watches[5:]
    assert len(await store.list_watches(OTHER_TENANT)) == 9
    # The others' jobs are now theirs.
    with pytest.raises(JobOfAnotherTenant):
        await store.insert_watch(new_watch(job_id="job-x0"), shared_key=True)


# Concurrent registrations (a backend may commit them together).


async def test_concurrent_registrations_each_get_their_own_outcome(store: Store) -> None:
    """Of 40 registrations at once, the one reusing a key fails alone; the others are stored."""
    taken = Idempotency("key-taken", "hash-0", b"first")
    first = await store.insert_watch(new_watch(), taken)
    watches = [new_watch(job_id=f"job-{i}") for i in range(40)]
    keys = [Idempotency(f"key-{i}", f"hash-{i}", b"%d" % i) for i in range(40)]
    keys[17] = Idempotency("key-taken", "hash-17", b"conflict")

    outcomes = await asyncio.gather(
        *(
            store.insert_watch(watch, key, lease_owner=A, lease_until=FAR)
            for watch, key in zip(watches, keys, strict=True)
        ),
        return_exceptions=True,
    )

    assert isinstance(outcomes[17], DuplicateIdempotencyKey)
    stored = [w for i, w in enumerate(watches) if i != 17]
    assert [o for i, o in enumerate(outcomes) if i != 17] == [
        replace(w, lease_token=1) for w in stored
    ]
    assert await store.get_watch(TENANT, watches[17].id) is None
    assert await store.find_idempotency(TENANT, "key-taken") == taken
    for watch, key in zip(watches, keys, strict=True):
        if key.key != "key-taken":
            assert await store.get_watch(TENANT, watch.id) == replace(watch, lease_token=1)
            assert await store.find_idempotency(TENANT, key.key) == key
    assert len(await store.list_watches(TENANT, limit=100)) == len(stored) + 1
    # The others were committed claimed by A: only the first, unclaimed, is free to take.
    assert ids(await store.claim_watches(B, T0, T0 + LEASE_S, 100)) == [first.id]


async def test_concurrent_registrations_with_one_key_store_one_watch(store: Store) -> None:
    """Registrations racing with the same key: exactly one is stored, the others are refused."""
    watches = [new_watch() for _ in range(5)]
    keys = [Idempotency("key-1", f"hash-{i}", b"%d" % i) for i in range(5)]

    outcomes = await asyncio.gather(
        *(store.insert_watch(w, k) for w, k in zip(watches, keys, strict=True)),
        return_exceptions=True,
    )

    won = [i for i, outcome in enumerate(outcomes) if isinstance(outcome, Watch)]
    assert len(won) == 1
    assert all(
        isinstance(outcome, DuplicateIdempotencyKey)
        for i, outcome in enumerate(outcomes)
        if i not in won
    )
    assert await store.list_watches(TENANT) == [watches[won[0]]]
    assert await store.find_idempotency(TENANT, "key-1") == keys[won[0]]


# Registering a watch already claimed.


async def test_insert_with_lease_owner_commits_the_watch_claimed(store: Store) -> None:
    """With lease_owner the watch has token 1 and nobody else can claim it before lease_until."""
    watch = await register(store, owner=A, lease_until=T0 + LEASE_S)

    assert watch.lease_token == 1
    assert (await store.get_watch(TENANT, watch.id)) == watch
    assert await store.claim_watches(B, T0 + LEASE_S - 1, T0 + 2 * LEASE_S, 10) == []
    [taken] = await store.claim_watches(B, T0 + LEASE_S + 1, T0 + 2 * LEASE_S, 10)
    assert (taken.id, taken.lease_token) == (watch.id, 2)


async def test_insert_with_lease_owner_lets_the_owner_write_back(store: Store) -> None:
    """The registering owner holds token 1: its fenced writes are applied without a claim."""
    watch = await register(store, owner=A)

    assert await store.renew_watch_leases(A, [(watch.id, 1)], T0 + 2 * LEASE_S) == {watch.id}
    assert await store.record_progress(A, T0 + 1, [progress(watch, token=1)]) == Recorded(set(), 0)


# Claiming watches.


async def test_claim_watches_takes_only_active_watches(store: Store) -> None:
    """Delivering, ended and cancelled watches are never claimed for polling."""
    active = await register(store)
    cancelled = await register(store)
    await store.cancel_watch(TENANT, cancelled.id, T0)
    await delivering(store)
    await ended(store, "succeeded")

    assert ids(await store.claim_watches(B, FAR, FAR + LEASE_S, 10)) == [active.id]


async def test_claim_watches_takes_due_soonest_first_up_to_limit(store: Store) -> None:
    """Under `limit`, the watches due soonest are claimed; the rest wait for a later claim."""
    late = await register(store, next_poll_at=T0 + 30)
    soon = await register(store, next_poll_at=T0 + 10)
    middle = await register(store, next_poll_at=T0 + 20)

    first = await store.claim_watches(A, T0 + 100, T0 + 200, 2)
    rest = await store.claim_watches(A, T0 + 100, T0 + 200, 2)

    assert set(ids(first)) == {soon.id, middle.id}
    assert ids(rest) == [late.id]


async def test_claim_watches_takes_watches_not_yet_due(store: Store) -> None:
    """A claim is a lease on polling, not one poll: an unleased active watch is claimed early."""
    watch = await register(store, next_poll_at=T0 + 600)

    assert ids(await store.claim_watches(A, T0, T0 + LEASE_S, 10)) == [watch.id]


async def test_claim_watches_takes_only_the_named_upstreams(store: Store) -> None:
    """A process claims the watches of the upstreams it polls, and leaves the others, however
    overdue, to processes that poll theirs."""
    elsewhere = await register(store, upstream="gone", next_poll_at=T0 - 100)
    here = await register(store, upstream="runway", next_poll_at=T0)
    default = await register(store, next_poll_at=T0 + 1)
    named = ("default", "runway")
    assert ids(await store.claim_watches(A, T0, T0 + LEASE_S, 10, upstreams=named)) == [
        here.id, default.id,
    ]  # fmt: skip
    assert ids(await store.claim_watches(B, T0, T0 + LEASE_S, 10)) == [elsewhere.id]


async def test_claim_watches_raises_the_token_by_one_per_claim(store: Store) -> None:
    """Every claim, after a release or an expiry, answers and stores the next token."""
    watch = await register(store)

    first = await held_by(store, A, watch)
    await store.release_watches(A, [(watch.id, first.lease_token)])
    [second] = await store.claim_watches(B, T0 + 1, T0 + 1 + LEASE_S, 10)
    [third] = await store.claim_watches(C, T0 + 2 + LEASE_S, T0 + 2 + 2 * LEASE_S, 10)

    assert [first.lease_token, second.lease_token, third.lease_token] == [1, 2, 3]
    assert (await store.get_watch(TENANT, watch.id)) == third


async def test_claim_watches_skips_a_held_lease_until_it_expires(store: Store) -> None:
    """While A's lease holds nobody else claims the watch; once expired, B takes it over."""
    watch = await register(store)
    await held_by(store, A, watch)

    assert await store.claim_watches(B, T0 + LEASE_S - 0.5, T0 + 2 * LEASE_S, 10) == []
    assert await store.claim_watches(A, T0 + LEASE_S - 0.5, T0 + 2 * LEASE_S, 10) == []
    [taken] = await store.claim_watches(B, T0 + LEASE_S + 0.5, T0 + 2 * LEASE_S, 10)
    assert (taken.id, taken.lease_token) == (watch.id, 2)


async def test_two_owners_never_claim_the_same_watch(store: Store) -> None:
    """Concurrent claims by two owners split the watches: none is handed to both."""
    registered = {watch.id for watch in [await register(store) for _ in range(6)]}

    got_a, got_b = await asyncio.gather(
        store.claim_watches(A, T0, T0 + LEASE_S, 4), store.claim_watches(B, T0, T0 + LEASE_S, 4)
    )

    assert set(ids(got_a)).isdisjoint(ids(got_b))
    assert set(ids(got_a)) | set(ids(got_b)) == registered
    assert len(got_a) + len(got_b) == 6
    assert await store.claim_watches(C, T0 + 1, T0 + LEASE_S, 10) == []


# Renewing and releasing watch leases.


async def test_renew_extends_only_leases_still_held_with_their_token(store: Store) -> None:
    """Renewal answers the ids held by owner+token; only those outlive their first expiry."""
    first, second = await register(store), await register(store)
    claimed = {w.id: w.lease_token for w in await store.claim_watches(A, T0, T0 + LEASE_S, 10)}

    renewed = await store.renew_watch_leases(
        A, [(first.id, claimed[first.id]), (second.id, claimed[second.id] + 1)], T0 + 3 * LEASE_S
    )

    assert renewed == {first.id}
    after_expiry = T0 + 2 * LEASE_S
    assert ids(await store.claim_watches(B, after_expiry, after_expiry + LEASE_S, 10)) == [
        second.id
    ]


async def test_renew_by_another_owner_renews_nothing(store: Store) -> None:
    """An owner cannot renew a lease it does not hold, even naming the right token."""
    watch = await register(store, owner=A)

    assert await store.renew_watch_leases(B, [(watch.id, 1)], FAR) == set()
    assert ids(await store.claim_watches(C, T0 + LEASE_S + 1, FAR, 10)) == [watch.id]


async def test_renew_skips_a_cancelled_watch(store: Store) -> None:
    """A cancelled watch is not renewed: its holder learns it must stop polling."""
    watch = await register(store, owner=A)
    await store.cancel_watch(TENANT, watch.id, T0 + 1)

    assert await store.renew_watch_leases(A, [(watch.id, 1)], T0 + 2 * LEASE_S) == set()


async def test_renew_skips_a_completed_watch(store: Store) -> None:
    """A watch that became delivering is no longer polled, so its lease is not renewed."""
    watch, _ = await delivering(store)

    assert await store.renew_watch_leases(A, [(watch.id, 1)], T0 + 2 * LEASE_S) == set()


async def test_renew_skips_a_watch_taken_over(store: Store) -> None:
    """After another owner claimed an expired lease, the previous holder's renewal fails."""
    watch = await register(store, owner=A)
    [taken] = await store.claim_watches(B, T0 + LEASE_S + 1, T0 + 3 * LEASE_S, 10)

    assert await store.renew_watch_leases(A, [(watch.id, 1)], FAR) == set()
    assert await store.renew_watch_leases(B, [(watch.id, taken.lease_token)], FAR) == {watch.id}


async def test_release_lets_anyone_claim_at_once(store: Store) -> None:
    """Released watches are claimable immediately, before their lease would have expired."""
    first, second = await register(store, owner=A), await register(store, owner=A)

    await store.release_watches(A, [(first.id, 1), (second.id, 1)])

    claimed = await store.claim_watches(B, T0 + 1, T0 + LEASE_S, 10)
    assert {(w.id, w.lease_token) for w in claimed} == {(first.id, 2), (second.id, 2)}


async def test_release_with_a_stale_token_leaves_the_new_lease(store: Store) -> None:
    """A previous holder releasing with its old token does not free the new holder's lease."""
    watch = await register(store, owner=A)
    await store.claim_watches(B, T0 + LEASE_S + 1, T0 + 3 * LEASE_S, 10)

    await store.release_watches(A, [(watch.id, 1)])

    assert await store.claim_watches(C, T0 + LEASE_S + 2, FAR, 10) == []


async def test_release_with_an_own_older_token_leaves_the_new_lease(store: Store) -> None:
    """An owner that released the watch and claimed it again cannot release the new lease with
    its older token."""
    watch = await register(store, owner=A, lease_until=T0 + LEASE_S)
    await store.release_watches(A, [(watch.id, 1)])
    [again] = await store.claim_watches(A, T0 + 1, T0 + 1 + LEASE_S, 10)

    await store.release_watches(A, [(watch.id, 1)])

    assert again.lease_token == 2
    assert await store.claim_watches(C, T0 + 2, T0 + 2 + LEASE_S, 10) == []


async def test_an_owner_taking_back_its_own_expired_lease_keeps_the_token(store: Store) -> None:
    """A's lease ran out (a store outage outlasted it) and nobody claimed the watch meanwhile:
    A's claim keeps its token, so A's writes made with it still count; another owner's claim
    after that raises it."""
    watch = await register(store, owner=A, lease_until=T0 + LEASE_S)
    [again] = await store.claim_watches(A, T0 + LEASE_S + 1, T0 + 2 * LEASE_S + 1, 10)

    assert again == replace(watch, lease_token=1)
    recorded = await store.record_progress(A, T0 + LEASE_S + 2, [progress(watch, token=1)])
    assert recorded.lost == set()
    assert await store.renew_watch_leases(A, [(watch.id, 1)], T0 + 2 * LEASE_S + 2) == {watch.id}
    [taken] = await store.claim_watches(B, T0 + 2 * LEASE_S + 3, FAR, 10)
    assert taken.lease_token == 2


# Recording progress.


async def test_record_progress_applies_a_change_under_the_lease(store: Store) -> None:
    """With the right owner and token the change is applied and nothing is reported lost."""
    watch = await register(store, owner=A)

    recorded = await store.record_progress(
        A, T0 + 5, [progress(watch, job_status="queued", queue_position=3, next_poll_at=T0 + 9)]
    )

    assert recorded == Recorded(lost=set(), deliveries=0)
    assert await store.get_watch(TENANT, watch.id) == replace(
        watch, job_status="queued", queue_position=3, next_poll_at=T0 + 9, updated_at=T0 + 5
    )


async def test_record_progress_with_a_stale_token_is_lost_and_not_applied(store: Store) -> None:
    """In one batch, a change whose lease was taken over is reported lost and left unapplied."""
    kept = await register(store, owner=A, lease_until=FAR)
    taken = await register(store, owner=A, lease_until=T0 + LEASE_S)
    await store.claim_watches(B, T0 + LEASE_S + 1, FAR, 10)
    kept_delivery, taken_delivery = new_delivery(), new_delivery()

    recorded = await store.record_progress(
        A,
        T0 + LEASE_S + 2,
        [
            progress(kept, deliveries=[kept_delivery]),
            progress(taken, deliveries=[taken_delivery]),
        ],
    )

    assert recorded == Recorded(lost={taken.id}, deliveries=1)
    assert (await reread(store, kept)).job_status == "running"
    untouched = await store.get_watch(TENANT, taken.id)
    assert untouched is not None
    assert (untouched.job_status, untouched.next_poll_at) == (None, T0)
    assert await pending_ids(store) == {kept_delivery.id}


async def test_record_progress_with_an_own_older_token_is_lost(store: Store) -> None:
    """Fencing is by token too: the same owner, having claimed the watch again after another
    owner held it, cannot write with token 1."""
    watch = await register(store, owner=A, lease_until=T0 + LEASE_S)
    await store.claim_watches(B, T0 + LEASE_S + 1, T0 + 2 * LEASE_S + 1, 10)
    [again] = await store.claim_watches(A, TAKEN_BACK_AT, FAR, 10)

    recorded = await store.record_progress(A, TAKEN_BACK_AT, [progress(watch, token=1)])
    assert (again.lease_token, recorded.lost) == (3, {watch.id})
    assert await store.get_watch(TENANT, watch.id) == again


async def test_record_progress_by_another_owner_is_lost(store: Store) -> None:
    """An owner naming the right token of a lease it does not hold gets the change rejected."""
    watch = await register(store, owner=A)

    assert (await store.record_progress(B, T0 + 1, [progress(watch, token=1)])).lost == {watch.id}
    assert await store.get_watch(TENANT, watch.id) == watch


async def test_record_progress_after_cancel_is_lost(store: Store) -> None:
    """Once the watch is cancelled, its holder's change and deliveries are rejected."""
    watch = await register(store, owner=A)
    cancelled = await store.cancel_watch(TENANT, watch.id, T0 + 1)

    recorded = await store.record_progress(
        A, T0 + 2, [progress(watch, deliveries=[new_delivery()])]
    )

    assert recorded == Recorded(lost={watch.id}, deliveries=0)
    assert await store.get_watch(TENANT, watch.id) == cancelled
    assert await pending_ids(store) == set()


async def test_record_progress_under_an_expired_lease_nobody_took(store: Store) -> None:
    """Fencing is by owner and token: an expired lease not yet claimed by anyone still writes."""
    watch = await register(store, owner=A, lease_until=T0 + LEASE_S)

    assert (await store.record_progress(A, T0 + 2 * LEASE_S, [progress(watch)])).lost == set()


async def test_progress_deliveries_are_claimable_at_once(store: Store) -> None:
    """Deliveries recorded with progress are pending, due at once, and carry the callback."""
    watch = await register(store, owner=A)
    first, second = event_of(new_delivery()), event_of(new_delivery())
    recorded = await store.record_progress(A, T0 + 5, [progress(watch, events=[first, second])])
    assert recorded == Recorded(lost=set(), deliveries=2)

    claimed = await store.claim_deliveries(B, T0 + 5, T0 + 5 + LEASE_S, 10)

    assert sorted(claimed, key=lambda d: d.id) == [
        Delivery(
            id=event.callback.id,
            watch_id=watch.id,
            event_type=event.type,
            body=event.callback.body,
            final=False,
            attempts=0,
            lease_token=1,
            callback_url=watch.callback_url or "",
            callback_method=watch.callback_method,
            callback_headers=watch.callback_headers,
            secret=watch.secret,
            created_at=T0 + 5,  # when the event was recorded
            event_id=event.id,
            tenant=watch.tenant,
        )
        for event in (first, second)
        if event.callback is not None
    ]


# Completing a watch.


async def test_complete_watch_hands_the_final_delivery_to_its_owner(store: Store) -> None:
    """The watch becomes delivering and the final delivery is answered claimed by the owner."""
    watch = await register(store, owner=A)
    done = completion(watch)

    [delivery] = await store.complete_watch(A, T0 + 7, done, T0 + 7 + LEASE_S)

    assert done.event.callback is not None
    assert delivery == Delivery(
        id=done.event.callback.id,
        watch_id=watch.id,
        event_type="job.completed",
        body=done.event.callback.body,
        final=True,
        attempts=0,
        lease_token=delivery.lease_token,
        callback_url=watch.callback_url or "",
        callback_method=watch.callback_method,
        callback_headers=watch.callback_headers,
        secret=watch.secret,
        created_at=T0 + 7,  # when the ending was seen
        event_id=done.event.id,
        tenant=watch.tenant,
    )
    stored = await reread(store, watch)
    assert stored.status == "delivering"
    assert (stored.job_status, stored.updated_at) == ("succeeded", T0 + 7)
    assert await store.claim_deliveries(B, T0 + 7 + LEASE_S - 1, FAR, 10) == []
    await store.record_attempt(A, delivery, attempt(delivery), "succeeded", T0 + 8)


async def test_complete_watch_releases_the_watch_lease(store: Store) -> None:
    """After completion the watch lease is gone: renewing and progress are rejected."""
    watch, _ = await delivering(store)

    assert await store.renew_watch_leases(A, [(watch.id, 1)], FAR) == set()
    assert (await store.record_progress(A, T0 + 1, [progress(watch)])).lost == {watch.id}
    assert await store.claim_watches(B, FAR, FAR + LEASE_S, 10) == []


async def test_final_delivery_is_claimable_by_another_after_its_lease(store: Store) -> None:
    """Unattempted past its lease, the final delivery goes to another owner with a higher token."""
    _, delivery = await delivering(store, now=T0, lease_until=T0 + LEASE_S)

    [taken] = await store.claim_deliveries(B, T0 + LEASE_S + 1, T0 + 3 * LEASE_S, 10)

    assert taken.id == delivery.id
    assert taken.lease_token > delivery.lease_token


async def test_complete_watch_with_a_stale_token_raises_and_writes_nothing(store: Store) -> None:
    """A completion after a takeover raises LeaseLost: the watch stays active, no delivery."""
    watch = await register(store, owner=A, lease_until=T0 + LEASE_S)
    [taken] = await store.claim_watches(B, T0 + LEASE_S + 1, FAR, 10)

    with pytest.raises(LeaseLost):
        await store.complete_watch(A, T0 + LEASE_S + 2, completion(watch, token=1), FAR)

    assert await store.get_watch(TENANT, watch.id) == taken
    assert await pending_ids(store) == set()
    assert await store.renew_watch_leases(B, [(watch.id, taken.lease_token)], FAR) == {watch.id}


async def test_complete_watch_with_an_own_older_token_raises(store: Store) -> None:
    """The same owner, having claimed the watch again after another owner held it, cannot
    complete it with token 1."""
    watch = await register(store, owner=A, lease_until=T0 + LEASE_S)
    await store.claim_watches(B, T0 + LEASE_S + 1, T0 + 2 * LEASE_S + 1, 10)
    [again] = await store.claim_watches(A, TAKEN_BACK_AT, FAR, 10)

    with pytest.raises(LeaseLost):
        await store.complete_watch(A, TAKEN_BACK_AT, completion(watch, token=1), FAR)

    assert await store.get_watch(TENANT, watch.id) == again
    assert await pending_ids(store) == set()


async def test_complete_watch_after_cancel_raises(store: Store) -> None:
    """A cancelled watch cannot be completed by its former holder."""
    watch = await register(store, owner=A)
    cancelled = await store.cancel_watch(TENANT, watch.id, T0 + 1)

    with pytest.raises(LeaseLost):
        await store.complete_watch(A, T0 + 2, completion(watch), FAR)

    assert await store.get_watch(TENANT, watch.id) == cancelled
    assert await pending_ids(store) == set()


# Claiming deliveries.


async def test_claim_deliveries_takes_only_due_ones(store: Store) -> None:
    """A delivery scheduled for later is not claimed before its time, and is claimed at it."""
    _, delivery = await delivering(store)
    retry = attempt(delivery, "retry", next_attempt_at=T0 + 60)
    await store.record_attempt(A, delivery, retry, "retry", T0 + 1)

    assert await store.claim_deliveries(B, T0 + 59, T0 + 59 + LEASE_S, 10) == []
    assert ids(await store.claim_deliveries(B, T0 + 60, T0 + 60 + LEASE_S, 10)) == [delivery.id]


async def test_claim_deliveries_takes_oldest_due_first_up_to_limit(store: Store) -> None:
    """Under `limit`, the deliveries due earliest are claimed; the rest wait."""
    watch = await register(store, owner=A, lease_until=FAR)
    late, early, middle = new_delivery(), new_delivery(), new_delivery()
    for now, new in ((T0 + 3, late), (T0 + 1, early), (T0 + 2, middle)):
        await store.record_progress(A, now, [progress(watch, deliveries=[new])])

    first = await store.claim_deliveries(B, T0 + 10, T0 + 10 + LEASE_S, 2)
    rest = await store.claim_deliveries(B, T0 + 10, T0 + 10 + LEASE_S, 2)

    assert set(ids(first)) == {early.id, middle.id}
    assert ids(rest) == [late.id]


async def test_claim_deliveries_breaks_ties_in_due_time_by_id(store: Store) -> None:
    """Deliveries due at the same time are claimed by id, whatever order they were written in."""
    watch = await register(store, owner=A, lease_until=FAR)
    news = [new_delivery() for _ in range(6)]
    for new in reversed(news):
        await store.record_progress(A, T0 + 1, [progress(watch, deliveries=[new])])

    claims = [await store.claim_deliveries(B, T0 + 10, T0 + 10 + LEASE_S, 2) for _ in range(3)]

    assert [ids(claimed) for claimed in claims] == [
        [news[0].id, news[1].id], [news[2].id, news[3].id], [news[4].id, news[5].id],
    ]  # fmt: skip


async def test_claim_deliveries_skips_leased_ones_until_expiry(store: Store) -> None:
    """A claimed delivery is not handed out again while its lease holds, then with token + 1."""
    watch = await register(store, owner=A)
    new = new_delivery()
    await store.record_progress(A, T0, [progress(watch, deliveries=[new])])
    [mine] = await store.claim_deliveries(A, T0, T0 + LEASE_S, 10)

    assert await store.claim_deliveries(B, T0 + LEASE_S - 1, FAR, 10) == []
    [taken] = await store.claim_deliveries(B, T0 + LEASE_S + 1, FAR, 10)
    assert (taken.id, taken.lease_token) == (mine.id, mine.lease_token + 1)


async def test_two_owners_never_claim_the_same_delivery(store: Store) -> None:
    """Concurrent delivery claims by two owners split the pending deliveries."""
    watch = await register(store, owner=A)
    news = [new_delivery() for _ in range(6)]
    await store.record_progress(A, T0, [progress(watch, deliveries=news)])

    got_a, got_b = await asyncio.gather(
        store.claim_deliveries(A, T0, T0 + LEASE_S, 4),
        store.claim_deliveries(B, T0, T0 + LEASE_S, 4),
    )

    assert set(ids(got_a)).isdisjoint(ids(got_b))
    assert set(ids(got_a)) | set(ids(got_b)) == {new.id for new in news}


async def backlog(
    store: Store, url: str, count: int, at: float, tenant: str = TENANT
) -> list[NewDelivery]:
    """`count` progress deliveries of one watch of `tenant` calling back `url`, due from `at`
    on."""
    watch = await register(store, owner=A, lease_until=FAR, callback_url=url, tenant=tenant)
    news = [new_delivery() for _ in range(count)]
    for n, new in enumerate(news):
        await store.record_progress(A, at + n * 0.01, [progress(watch, deliveries=[new])])
    return news


async def test_claim_deliveries_caps_each_host(store: Store) -> None:
    """With `per_host`, one host's big older backlog leaves room for the other hosts' deliveries
    in the same claim, oldest first within each host."""
    slow = await backlog(store, "https://slow.example/hooks", 8, T0)
    fast = await backlog(store, "https://fast.example:8443/a", 2, T0 + 1)
    other = await backlog(store, "https://user:pw@FAST.example:8443/b?x=1", 1, T0 + 2)

    claimed = await store.claim_deliveries(B, T0 + 10, T0 + 10 + LEASE_S, 5, per_host=2)

    assert ids(claimed) == [slow[0].id, slow[1].id, fast[0].id, fast[1].id]
    assert other[0].id not in ids(claimed)  # same host as `fast` (port kept, userinfo not)
    assert {callback_host(d.callback_url) for d in claimed} == {
        "https://slow.example", "https://fast.example:8443",
    }  # fmt: skip


async def test_claim_deliveries_follows_each_hosts_own_limit(store: Store) -> None:
    """`host_limits` sets one host's share (0: none, its deliveries neither claimed nor leased,
    whatever their number), `per_host` the others'."""
    slow = await backlog(store, "https://slow.example/hooks", 50, T0)
    busy = await backlog(store, "https://busy.example/hooks", 4, T0 + 1)
    fast = await backlog(store, "https://fast.example/hooks", 4, T0 + 2)
    limits = {"https://slow.example": 0, "https://busy.example": 1}

    claimed = await store.claim_deliveries(
        B, T0 + 10, T0 + 10 + LEASE_S, 10, per_host=3, host_limits=limits
    )
    assert ids(claimed) == [busy[0].id, *(new.id for new in fast[:3])]
    # Every host with due deliveries gets its share, however large an older backlog is.
    again = await store.claim_deliveries(B, T0 + 10, T0 + 10 + LEASE_S, 10, per_host=4)
    assert ids(again) == [new.id for new in (*slow[:4], *busy[1:], fast[3])]


async def test_two_owners_claiming_per_host_never_claim_the_same_delivery(store: Store) -> None:
    """Concurrent per-host claims by two owners split the due deliveries too."""
    news = await backlog(store, "https://receiver.example/hooks", 6, T0)
    got_a, got_b = await asyncio.gather(
        store.claim_deliveries(A, T0 + 1, T0 + 1 + LEASE_S, 4, per_host=4, host_limits={}),
        store.claim_deliveries(B, T0 + 1, T0 + 1 + LEASE_S, 4, per_host=4, host_limits={}),
    )
    assert set(ids(got_a)).isdisjoint(ids(got_b))
    assert set(ids(got_a)) | set(ids(got_b)) == {new.id for new in news}


async def test_claim_deliveries_caps_each_tenant(store: Store) -> None:
    """With `per_tenant`, one tenant's big older backlog, on several hosts, leaves room for the
    other tenants' deliveries in the same claim, oldest first within each tenant."""
    first = await backlog(store, "https://one.example/hooks", 8, T0)
    second = await backlog(store, "https://two.example/hooks", 8, T0 + 0.5)
    other = await backlog(store, "https://three.example/hooks", 3, T0 + 1, OTHER_TENANT)

    claimed = await store.claim_deliveries(B, T0 + 10, T0 + 10 + LEASE_S, 5, per_tenant=2)

    assert ids(claimed) == [first[0].id, first[1].id, other[0].id, other[1].id]
    assert [d.tenant for d in claimed] == [TENANT, TENANT, OTHER_TENANT, OTHER_TENANT]
    again = await store.claim_deliveries(B, T0 + 10, T0 + 10 + LEASE_S, 5, per_tenant=2)
    assert ids(again) == [first[2].id, first[3].id, other[2].id]
    assert second[0].id not in ids(claimed) + ids(again)


async def test_claim_deliveries_follows_each_tenants_own_limit(store: Store) -> None:
    """`tenant_limits` sets one tenant's share (0: none, its deliveries neither claimed nor
    leased, whatever their number), `per_tenant` the others'."""
    busy = await backlog(store, "https://hooks.example/a", 50, T0)
    other = await backlog(store, "https://hooks.example/b", 4, T0 + 1, OTHER_TENANT)
    third = await backlog(store, "https://elsewhere.example/c", 4, T0 + 2, "initech")
    limits = {TENANT: 0, OTHER_TENANT: 1}

    claimed = await store.claim_deliveries(
        B, T0 + 10, T0 + 10 + LEASE_S, 10, per_tenant=3, tenant_limits=limits
    )
    assert ids(claimed) == [other[0].id, *(new.id for new in third[:3])]
    again = await store.claim_deliveries(B, T0 + 10, T0 + 10 + LEASE_S, 10, per_tenant=4)
    assert ids(again) == [new.id for new in (*busy[:4], *other[1:], third[3])]


async def test_claim_deliveries_keeps_the_host_and_the_tenant_shares_at_once(
    store: Store,
) -> None:
    """A host shared by two tenants gets its share across both, and a tenant its share across
    its hosts: a delivery is claimed only when it fits both."""
    ours = await backlog(store, "https://shared.example/ours", 3, T0)
    theirs = await backlog(store, "https://shared.example/theirs", 3, T0 + 1, OTHER_TENANT)
    elsewhere = await backlog(store, "https://own.example/hooks", 3, T0 + 2)

    claimed = await store.claim_deliveries(
        B, T0 + 10, T0 + 10 + LEASE_S, 10, per_host=3, per_tenant=2
    )

    assert ids(claimed) == [ours[0].id, ours[1].id, theirs[0].id]
    assert elsewhere[0].id not in ids(claimed)  # the tenant's share went to its older ones


async def test_a_tenant_with_many_hosts_does_not_crowd_the_others_out_of_a_claim(
    store: Store,
) -> None:
    """However many hosts a tenant's older deliveries go to, it offers only as many of them as
    its share: a claim of 3 takes one of its deliveries and the other tenant's two."""
    many = [await backlog(store, f"https://h{n}.example/x", 1, T0 + n) for n in range(5)]
    other = await backlog(store, "https://other.example/y", 2, T0 + 10, OTHER_TENANT)

    claimed = await store.claim_deliveries(
        B, T0 + 20, T0 + 20 + LEASE_S, 3, per_tenant=1, tenant_limits={OTHER_TENANT: 2}
    )

    assert ids(claimed) == [many[0][0].id, other[0].id, other[1].id]
    again = await store.claim_deliveries(B, T0 + 20, T0 + 20 + LEASE_S, 3, per_tenant=2)
    assert ids(again) == [many[1][0].id, many[2][0].id]


async def test_record_attempts_commits_a_batch_and_reports_lost_leases(store: Store) -> None:
    """A batch records every attempt still held; one whose lease was taken over is reported
    and changes nothing, the others are recorded all the same."""
    news = await backlog(store, "https://receiver.example/hooks", 3, T0)
    first, second, third = await store.claim_deliveries(A, T0 + 1, T0 + 1 + LEASE_S, 10)
    [taken] = await store.claim_deliveries(
        B, T0 + 2 + LEASE_S, FAR, 1, per_host=1
    )  # the first one's lease ran out and B took it
    assert taken.id == first.id == news[0].id
    second_retry = attempt(second, "retry", next_attempt_at=T0 + 100)
    records = [
        AttemptRecord(first, attempt(first), "succeeded", T0 + 3 + LEASE_S),
        AttemptRecord(second, second_retry, "retry", T0 + 3 + LEASE_S),
        AttemptRecord(third, attempt(third), "succeeded", T0 + 3 + LEASE_S),
    ]

    assert await store.record_attempts(A, records) == {first.id}
    assert await store.record_attempts(A, []) == set()
    [retried] = await store.claim_deliveries(C, T0 + 100, FAR, 10)
    assert (retried.id, retried.attempts) == (second.id, 1)
    await store.record_attempt(B, taken, attempt(taken), "succeeded", T0 + 4 + LEASE_S)


async def test_record_attempts_applies_every_record_of_a_large_batch(store: Store) -> None:
    """A batch of many watches' attempts, more than one statement group holds, changes each
    delivery, attempt log and watch as `record_attempt` would: final deliveries end or retry
    their watch, a progress delivery's answer leaves its watch as it is but for its count."""
    outcomes: list[AttemptOutcome] = ["succeeded", "failed", "retry"]
    held = [await delivering(store) for _ in range(70)]
    watch = await register(store, owner=A, lease_until=FAR)
    await store.record_progress(A, T0, [progress(watch, deliveries=[new_delivery()])])
    [progress_delivery] = await store.claim_deliveries(B, T0, T0 + LEASE_S, 10)
    records = [
        AttemptRecord(
            delivery,
            attempt(delivery, outcome, next_attempt_at=T0 + 100 if outcome == "retry" else None),
            outcome,
            T0 + 2,
        )
        for n, (_, delivery) in enumerate(held)
        for outcome in [outcomes[n % 3]]
    ]
    progress_record = AttemptRecord(
        progress_delivery, attempt(progress_delivery), "succeeded", T0 + 2
    )

    assert await store.record_attempts(A, records) == set()
    assert await store.record_attempts(B, [progress_record]) == set()

    for n, (held_watch, delivery) in enumerate(held):
        stored = await reread(store, held_watch)
        outcome = outcomes[n % 3]
        status = {"succeeded": "delivered", "failed": "failed", "retry": "delivering"}[outcome]
        assert (stored.status, stored.attempts) == (status, 1)
        assert stored.last_error == (
            None if outcome == "succeeded" else f"HTTP {STATUS_CODE[outcome]}"
        )
        assert (stored.completed_at is not None) == (outcome != "retry")
        [logged] = await store.list_attempts(TENANT, held_watch.id)
        assert (logged.delivery_id, logged.status_code) == (delivery.id, STATUS_CODE[outcome])
    progressed = await reread(store, watch)
    assert (progressed.status, progressed.attempts, progressed.last_error) == ("active", 1, None)
    retried = await store.claim_deliveries(C, T0 + 100, FAR, 100)
    assert ids(retried) == [d.id for n, (_, d) in enumerate(held) if n % 3 == 2]
    assert all(d.attempts == 1 for d in retried)


async def test_record_attempts_applies_records_in_their_order(store: Store) -> None:
    """A 410 cancels its watch's other deliveries: a record of one of them after it in the
    batch finds its delivery cancelled (its lease lost); one before it was already recorded."""
    first_watch, second_watch = [await register(store, owner=A) for _ in range(2)]
    news = {watch.id: (new_delivery(), new_delivery()) for watch in (first_watch, second_watch)}
    await store.record_progress(
        A, T0, [progress(w, deliveries=news[w.id]) for w in (first_watch, second_watch)]
    )
    claimed = {d.id: d for d in await store.claim_deliveries(B, T0, T0 + LEASE_S, 10)}
    (gone_1, after), (gone_2, before) = ((claimed[a.id], claimed[b.id]) for a, b in news.values())

    def record(delivery: Delivery, outcome: AttemptOutcome) -> AttemptRecord:
        return AttemptRecord(delivery, attempt(delivery, outcome), outcome, T0 + 1)

    batch = [
        record(gone_1, "gone"), record(after, "succeeded"),
        record(before, "succeeded"), record(gone_2, "gone"),
    ]  # fmt: skip
    assert await store.record_attempts(B, batch) == {after.id}
    assert (await reread(store, first_watch)).status == "gone"
    assert (await reread(store, second_watch)).status == "gone"
    assert [a.delivery_id for a in await store.list_attempts(TENANT, first_watch.id)] == [gone_1.id]
    assert {a.delivery_id for a in await store.list_attempts(TENANT, second_watch.id)} == {
        before.id, gone_2.id,
    }  # fmt: skip


# Recording attempts.


async def test_retry_keeps_the_delivery_pending_and_releases_it(store: Store) -> None:
    """A retry logs the attempt, counts it and frees the delivery for anyone at the next time."""
    watch, delivery = await delivering(store, lease_until=FAR)
    retry = attempt(delivery, "retry", started_at=T0, next_attempt_at=T0 + 60)

    await store.record_attempt(A, delivery, retry, "retry", T0 + 1)

    [again] = await store.claim_deliveries(B, T0 + 60, T0 + 60 + LEASE_S, 10)
    assert (again.id, again.attempts) == (delivery.id, 1)
    assert again.lease_token > delivery.lease_token
    assert await store.list_attempts(TENANT, watch.id) == [retry]
    stored = await store.get_watch(TENANT, watch.id)
    assert stored is not None
    assert (stored.status, stored.attempts) == ("delivering", 1)


@pytest.mark.parametrize(("outcome", "watch_status"), ENDS_WATCH)
async def test_ending_the_final_delivery_ends_the_watch(
    store: Store, outcome: AttemptOutcome, watch_status: str
) -> None:
    """The last attempt of the final delivery sets the watch's end status and attempt count."""
    watch, delivery = await delivering(store)
    retry = attempt(delivery, "retry", number=1, started_at=T0, next_attempt_at=T0 + 10)
    await store.record_attempt(A, delivery, retry, "retry", T0 + 1)
    [again] = await store.claim_deliveries(A, T0 + 10, T0 + 10 + LEASE_S, 10)
    last = attempt(again, outcome, number=2, started_at=T0 + 10)

    await store.record_attempt(A, again, last, outcome, T0 + 11)

    stored = await store.get_watch(TENANT, watch.id)
    assert stored is not None
    assert (stored.status, stored.attempts, stored.completed_at) == (watch_status, 2, T0 + 11)
    assert await store.list_attempts(TENANT, watch.id) == [retry, last]
    assert await pending_ids(store) == set()


@pytest.mark.parametrize("outcome", ["succeeded", "failed"])
async def test_ending_a_progress_delivery_leaves_the_watch_polling(
    store: Store, outcome: AttemptOutcome
) -> None:
    """Success or failure of a non-final delivery changes nothing on its active watch but its
    attempt count."""
    watch = await register(store, owner=A)
    await store.record_progress(A, T0, [progress(watch, deliveries=[new_delivery()])])
    polled = await store.get_watch(TENANT, watch.id)
    [delivery] = await store.claim_deliveries(B, T0, T0 + LEASE_S, 10)

    await store.record_attempt(B, delivery, attempt(delivery, outcome), outcome, T0 + 1)

    assert polled is not None
    counted = replace(polled, attempts=1, updated_at=T0 + 1)
    assert await store.get_watch(TENANT, watch.id) == counted
    assert await store.renew_watch_leases(A, [(watch.id, 1)], FAR) == {watch.id}
    assert await pending_ids(store) == set()


async def test_gone_on_a_progress_delivery_stops_the_watch(store: Store) -> None:
    """410 on any delivery makes the watch gone, cancels its other deliveries and its polling."""
    watch = await register(store, owner=A)
    first, second = new_delivery(), new_delivery()
    await store.record_progress(A, T0, [progress(watch, deliveries=[first, second])])
    claimed = {d.id: d for d in await store.claim_deliveries(B, T0, T0 + LEASE_S, 10)}
    gone = claimed[first.id]

    await store.record_attempt(B, gone, attempt(gone, "gone"), "gone", T0 + 1)

    stored = await store.get_watch(TENANT, watch.id)
    assert stored is not None
    assert stored.status == "gone"
    other = claimed[second.id]
    with pytest.raises(LeaseLost):
        await store.record_attempt(B, other, attempt(other), "succeeded", T0 + 2)
    assert await pending_ids(store) == set()
    assert await store.renew_watch_leases(A, [(watch.id, 1)], FAR) == set()
    assert (await store.record_progress(A, T0 + 2, [progress(watch)])).lost == {watch.id}
    assert await store.claim_watches(C, FAR, FAR + LEASE_S, 10) == []


async def test_gone_on_the_final_delivery_cancels_pending_progress(store: Store) -> None:
    """410 on the final delivery also cancels progress deliveries still pending."""
    watch = await register(store, owner=A)
    await store.record_progress(A, T0, [progress(watch, deliveries=[new_delivery()])])
    [delivery] = await store.complete_watch(A, T0 + 1, completion(watch), T0 + 1 + LEASE_S)

    await store.record_attempt(A, delivery, attempt(delivery, "gone"), "gone", T0 + 2)

    assert (await reread(store, watch)).status == "gone"
    assert await pending_ids(store) == set()


async def test_record_attempt_with_a_stale_token_raises_and_logs_nothing(store: Store) -> None:
    """After a takeover the old holder's attempt raises LeaseLost; the new holder's is applied."""
    watch, delivery = await delivering(store, lease_until=T0 + LEASE_S)
    [taken] = await store.claim_deliveries(B, T0 + LEASE_S + 1, FAR, 10)

    with pytest.raises(LeaseLost):
        await store.record_attempt(A, delivery, attempt(delivery), "succeeded", T0 + LEASE_S + 2)

    stored = await store.get_watch(TENANT, watch.id)
    assert stored is not None
    assert (stored.status, stored.attempts) == ("delivering", 0)
    assert await store.list_attempts(TENANT, watch.id) == []
    await store.record_attempt(B, taken, attempt(taken), "succeeded", T0 + LEASE_S + 3)
    assert (await reread(store, watch)).status == "delivered"


async def test_record_attempt_with_an_own_older_token_raises(store: Store) -> None:
    """The same owner, having claimed the delivery again after another owner held it, cannot
    record with its older token."""
    watch, delivery = await delivering(store, lease_until=T0 + LEASE_S)
    await store.claim_deliveries(B, T0 + LEASE_S + 1, T0 + 2 * LEASE_S + 1, 10)
    [again] = await store.claim_deliveries(A, TAKEN_BACK_AT, FAR, 10)

    with pytest.raises(LeaseLost):
        await store.record_attempt(A, delivery, attempt(delivery), "succeeded", TAKEN_BACK_AT)

    assert again.lease_token == delivery.lease_token + 2
    assert await store.list_attempts(TENANT, watch.id) == []
    await store.record_attempt(A, again, attempt(again), "succeeded", TAKEN_BACK_AT + 1)


async def test_an_owner_taking_back_its_own_expired_delivery_keeps_the_token(
    store: Store,
) -> None:
    """A's delivery lease ran out and nobody claimed it meanwhile: A's claim keeps the token, so
    the outcome of A's attempt under way is recorded."""
    watch, delivery = await delivering(store, lease_until=T0 + LEASE_S)
    [again] = await store.claim_deliveries(A, T0 + LEASE_S + 1, FAR, 10)

    await store.record_attempt(A, delivery, attempt(delivery), "succeeded", T0 + LEASE_S + 2)

    assert again.lease_token == delivery.lease_token
    assert (await reread(store, watch)).status == "delivered"


async def test_record_attempt_by_another_owner_raises(store: Store) -> None:
    """An owner that did not claim the delivery cannot record its attempt, even with its token."""
    watch, delivery = await delivering(store)

    with pytest.raises(LeaseLost):
        await store.record_attempt(B, delivery, attempt(delivery), "succeeded", T0 + 1)

    assert await store.list_attempts(TENANT, watch.id) == []


async def test_record_attempt_releases_the_lease(store: Store) -> None:
    """A second write-back on the same claim is rejected: recording gave up the lease."""
    watch, delivery = await delivering(store, lease_until=FAR)
    retry = attempt(delivery, "retry", next_attempt_at=T0 + 5)
    await store.record_attempt(A, delivery, retry, "retry", T0 + 1)

    with pytest.raises(LeaseLost):
        await store.record_attempt(A, delivery, attempt(delivery, number=2), "succeeded", T0 + 2)

    assert await store.list_attempts(TENANT, watch.id) == [retry]


# Cancelling.


async def test_cancel_an_active_watch(store: Store) -> None:
    """An active watch becomes cancelled: its lease and its pending deliveries go with it."""
    watch = await register(store, owner=A)
    await store.record_progress(A, T0 + 1, [progress(watch, deliveries=[new_delivery()])])

    cancelled = await store.cancel_watch(TENANT, watch.id, T0 + 2)

    assert cancelled is not None
    assert (cancelled.status, cancelled.updated_at) == ("cancelled", T0 + 2)
    assert await store.get_watch(TENANT, watch.id) == cancelled
    assert await pending_ids(store) == set()
    assert await store.renew_watch_leases(A, [(watch.id, 1)], FAR) == set()
    assert await store.claim_watches(B, FAR, FAR + LEASE_S, 10) == []


async def test_cancel_a_delivering_watch(store: Store) -> None:
    """A delivering watch becomes cancelled and the final delivery's holder can no longer write."""
    watch, delivery = await delivering(store)

    cancelled = await store.cancel_watch(TENANT, watch.id, T0 + 1)

    assert cancelled is not None
    assert cancelled.status == "cancelled"
    with pytest.raises(LeaseLost):
        await store.record_attempt(A, delivery, attempt(delivery), "succeeded", T0 + 2)
    assert await store.list_attempts(TENANT, watch.id) == []
    assert await pending_ids(store) == set()


@pytest.mark.parametrize("outcome", ["succeeded", "failed", "gone"])
async def test_cancel_leaves_an_ended_watch_as_it_is(store: Store, outcome: AttemptOutcome) -> None:
    """Cancelling a delivered, failed or gone watch answers it unchanged."""
    watch, _ = await ended(store, outcome)
    before = await store.get_watch(TENANT, watch.id)

    assert await store.cancel_watch(TENANT, watch.id, T0 + 100) == before
    assert await store.get_watch(TENANT, watch.id) == before


async def test_cancel_twice_is_idempotent(store: Store) -> None:
    """A second cancel answers the watch as the first left it."""
    watch = await register(store)
    first = await store.cancel_watch(TENANT, watch.id, T0 + 1)

    assert await store.cancel_watch(TENANT, watch.id, T0 + 2) == first
    assert await store.get_watch(TENANT, watch.id) == first


async def test_cancel_unknown_watch_is_none(store: Store) -> None:
    """cancel_watch answers None for an id that does not exist."""
    assert await store.cancel_watch(TENANT, "wch_unknown", T0) is None


# Redelivering.


@pytest.mark.parametrize("outcome", ["succeeded", "failed", "gone"])
async def test_redeliver_restarts_the_final_delivery(store: Store, outcome: AttemptOutcome) -> None:
    """The same final delivery is pending again from `now`, attempts reset, in series 2; the
    watch delivering."""
    watch, delivery = await ended(store, outcome, now=T0 + 1)

    redelivered = await store.redeliver(TENANT, watch.id, T0 + 100)

    assert redelivered is not None
    assert redelivered.restarted == (delivery.id,)
    assert redelivered.watch.status == "delivering"
    assert await store.get_watch(TENANT, watch.id) == redelivered.watch
    assert await store.claim_deliveries(B, T0 + 99, T0 + 99 + LEASE_S, 10) == []
    [again] = await store.claim_deliveries(B, T0 + 100, T0 + 100 + LEASE_S, 10)
    assert again == replace(delivery, attempts=0, lease_token=again.lease_token, series=2)
    assert again.lease_token > delivery.lease_token


async def test_redelivery_ends_the_watch_again_and_keeps_the_log_by_series(store: Store) -> None:
    """A redelivered watch ends by its new attempts; the attempt log keeps the earlier ones,
    each in its series whatever the attempt said, and the delivery says its latest."""
    watch, _ = await ended(store, "failed", now=T0 + 1)
    await store.redeliver(TENANT, watch.id, T0 + 100)
    [again] = await store.claim_deliveries(B, T0 + 100, T0 + 100 + LEASE_S, 10)
    second = replace(attempt(again, "succeeded", started_at=T0 + 100), series=7)

    await store.record_attempt(B, again, second, "succeeded", T0 + 101)

    stored = await store.get_watch(TENANT, watch.id)
    assert stored is not None
    assert (stored.status, stored.completed_at) == ("delivered", T0 + 101)
    log = await store.list_attempts(TENANT, watch.id)
    assert [(a.started_at, a.series, a.number) for a in log] == [(T0 + 1, 1, 1), (T0 + 100, 2, 1)]
    [delivery] = await store.watch_deliveries(TENANT, watch.id)
    assert (delivery.series, delivery.attempts, delivery.status) == (2, 1, "succeeded")


async def test_each_redelivery_starts_the_next_series(store: Store) -> None:
    """Redelivered twice, a delivery is in series 3, and so is the attempt made then."""
    watch, _ = await ended(store, "failed", now=T0 + 1)
    for n, at in enumerate((T0 + 100, T0 + 200), start=2):
        await store.redeliver(TENANT, watch.id, at)
        [again] = await store.claim_deliveries(B, at, at + LEASE_S, 10)
        assert again.series == n
        await store.record_attempt(
            B, again, attempt(again, "failed", started_at=at), "failed", at + 1
        )

    log = await store.list_attempts(TENANT, watch.id)
    assert [a.series for a in log] == [1, 2, 3]


async def test_redeliver_leaves_an_active_watch_as_it_is(store: Store) -> None:
    """An active watch is answered unchanged and nothing becomes deliverable."""
    watch = await register(store)

    assert await store.redeliver(TENANT, watch.id, T0 + 1) == Redelivery(watch)
    assert await store.get_watch(TENANT, watch.id) == watch
    assert await pending_ids(store) == set()


async def test_redeliver_leaves_a_delivering_watch_as_it_is(store: Store) -> None:
    """A watch still delivering is answered unchanged; its delivery stays with its holder."""
    watch, delivery = await delivering(store)
    before = await reread(store, watch)

    assert await store.redeliver(TENANT, watch.id, T0 + 1) == Redelivery(before)
    assert await store.claim_deliveries(B, T0 + 1, T0 + 1 + LEASE_S, 10) == []
    await store.record_attempt(A, delivery, attempt(delivery), "succeeded", T0 + 2)


async def test_redeliver_leaves_a_cancelled_watch_as_it_is(store: Store) -> None:
    """A cancelled watch is answered unchanged and its cancelled delivery stays cancelled."""
    watch, _ = await delivering(store)
    cancelled = await store.cancel_watch(TENANT, watch.id, T0 + 1)
    assert cancelled is not None

    assert await store.redeliver(TENANT, watch.id, T0 + 2) == Redelivery(cancelled)
    assert await store.get_watch(TENANT, watch.id) == cancelled
    assert await pending_ids(store) == set()


async def test_redeliver_after_the_body_was_purged_leaves_the_watch(store: Store) -> None:
    """With its final body purged a delivered watch is answered unchanged (not `delivering`)."""
    watch, _ = await ended(store, "succeeded", now=T0 + 1)
    before = await reread(store, watch)
    assert await store.purge_bodies(T0 + 2) == 1

    assert await store.redeliver(TENANT, watch.id, T0 + 3) == Redelivery(before)
    assert await pending_ids(store) == set()


async def test_redeliver_unknown_watch_is_none(store: Store) -> None:
    """redeliver answers None for an id that does not exist."""
    assert await store.redeliver(TENANT, "wch_unknown", T0) is None


# The attempt log.


async def test_list_attempts_oldest_first_across_deliveries(store: Store) -> None:
    """Attempts of all the watch's deliveries come by start time, not by recording order."""
    watch = await register(store, owner=A)
    first, second = new_delivery(), new_delivery()
    await store.record_progress(A, T0, [progress(watch, deliveries=[first, second])])
    claimed = {d.id: d for d in await store.claim_deliveries(A, T0, T0 + LEASE_S, 10)}
    early = attempt(claimed[first.id], "succeeded", started_at=T0 + 1)
    late = attempt(claimed[second.id], "failed", started_at=T0 + 2)
    other_watch, _ = await ended(store, "succeeded", now=T0 + 1.5)

    await store.record_attempt(A, claimed[second.id], late, "failed", T0 + 3)
    await store.record_attempt(A, claimed[first.id], early, "succeeded", T0 + 4)

    assert await store.list_attempts(TENANT, watch.id) == [early, late]
    assert len(await store.list_attempts(TENANT, other_watch.id)) == 1


async def test_list_attempts_of_a_watch_never_attempted_is_empty(store: Store) -> None:
    """A watch without attempts, or an unknown id, has an empty log."""
    watch = await register(store)

    assert await store.list_attempts(TENANT, watch.id) == []
    assert await store.list_attempts(TENANT, "wch_unknown") == []


# Dashboard sign-ins.


async def test_a_revoked_session_is_known_and_others_are_not(store: Store) -> None:
    """revoke_session records the id: session_revoked is True for it alone; revoking it again
    changes nothing (its first expiry stays)."""
    assert not await store.session_revoked("s" * 22)

    await store.revoke_session("s" * 22, T0 + 100)
    await store.revoke_session("s" * 22, T0 + 900)

    assert await store.session_revoked("s" * 22)
    assert not await store.session_revoked("t" * 22)
    assert await store.purge_revoked_sessions(T0 + 100) == 1


async def test_purge_revoked_sessions_forgets_only_expired_ones(store: Store) -> None:
    """Ids whose cookie expired at `now` (expires_at <= now) are forgotten and counted; later
    ones are kept."""
    await store.revoke_session("early", T0 + 10)
    await store.revoke_session("at-now", T0 + 20)
    await store.revoke_session("later", T0 + 21)

    assert await store.purge_revoked_sessions(T0 + 9) == 0
    assert await store.purge_revoked_sessions(T0 + 20) == 2

    assert not await store.session_revoked("early")
    assert not await store.session_revoked("at-now")
    assert await store.session_revoked("later")


# Housekeeping.


async def test_purge_bodies_drops_only_ended_succeeded_and_cancelled(store: Store) -> None:
    """Bodies of succeeded and cancelled deliveries ended before the cutoff are dropped, once."""
    delivered, _ = await ended(store, "succeeded", now=T0 + 10)
    failed, failed_delivery = await ended(store, "failed", now=T0 + 10)
    await ended(store, "gone", now=T0 + 10)
    cancelled = await register(store, owner=A)
    await store.record_progress(
        A, T0, [progress(cancelled, deliveries=[new_delivery(), new_delivery()])]
    )
    await store.cancel_watch(TENANT, cancelled.id, T0 + 10)
    polling = await register(store, owner=A)
    pending = new_delivery()
    await store.record_progress(A, T0, [progress(polling, deliveries=[pending])])

    assert await store.purge_bodies(T0 + 5) == 0
    assert await store.purge_bodies(T0 + 11) == 3
    assert await store.purge_bodies(T0 + 11) == 0

    assert len(await store.list_attempts(TENANT, delivered.id)) == 1
    [still_pending] = await store.claim_deliveries(B, T0 + 20, T0 + 20 + LEASE_S, 10)
    assert (still_pending.id, still_pending.body) == (pending.id, pending.body)
    await store.redeliver(TENANT, failed.id, T0 + 20)
    [again] = await store.claim_deliveries(B, T0 + 20, T0 + 20 + LEASE_S, 10)
    assert (again.id, again.body) == (failed_delivery.id, failed_delivery.body)


async def test_count_watches_has_every_status(store: Store) -> None:
    """Counts cover every status, zero when none, per tenant or over all tenants."""
    assert await store.count_watches() == dict.fromkeys(WATCH_STATUSES, 0)
    await register(store)
    await register(store)
    await register(store, tenant=OTHER_TENANT)
    cancelled = await register(store)
    await store.cancel_watch(TENANT, cancelled.id, T0)
    await delivering(store)
    await ended(store, "failed")
    await ended(store, "gone", tenant=OTHER_TENANT)

    none: dict[str, int] = dict.fromkeys(WATCH_STATUSES, 0)
    mine = {"active": 2, "delivering": 1, "failed": 1, "cancelled": 1}
    assert await store.count_watches(TENANT) == {**none, **mine}
    everyone = {**mine, "active": 3, "gone": 1}
    assert await store.count_watches() == {**none, **everyone}


async def test_count_active_by_upstream_counts_every_tenants_active_watches(
    store: Store,
) -> None:
    """Per upstream name, the active watches of all tenants; ended ones and names without an
    active watch are left out."""
    assert await store.count_active_by_upstream() == {}
    await register(store)
    await register(store, upstream="runway")
    await register(store, upstream="runway", tenant=OTHER_TENANT)
    cancelled = await register(store, upstream="fal")
    await store.cancel_watch(TENANT, cancelled.id, T0)

    assert await store.count_active_by_upstream() == {"default": 1, "runway": 2}


async def test_migrate_again_applies_nothing(store: Store) -> None:
    """Opening migrated the schema: later calls, even concurrent ones, apply nothing."""
    watch = await register(store)

    assert await store.migrate() == []
    assert await asyncio.gather(store.migrate(), store.migrate()) == [[], []]
    assert await store.get_watch(TENANT, watch.id) == watch


async def test_ping_answers_on_an_open_store(store: Store) -> None:
    """ping returns quietly when the store answers."""
    assert await store.ping() is None


async def test_metadata_keeps_its_key_order(store: Store) -> None:
    """Metadata comes back with the client's key order (it is echoed in webhook bodies)."""
    metadata = {"zulu": 1, "alpha": {"y": 2, "b": 3}, "mike": [3, 1]}
    await store.insert_watch(new_watch(id="wch_ordered", metadata=metadata))
    got = await store.get_watch(TENANT, "wch_ordered")
    assert got is not None
    assert got.metadata is not None
    assert list(got.metadata) == ["zulu", "alpha", "mike"]
    assert list(got.metadata["alpha"]) == ["y", "b"]


async def test_renew_delivery_leases_extends_only_what_is_still_held(store: Store) -> None:
    """An in-flight delivery's renewed lease keeps others off; a stale token renews nothing."""
    watch = await register(store, owner=A)
    first, second = new_delivery(), new_delivery()
    await store.record_progress(A, T0, [progress(watch, deliveries=[first, second])])
    mine = await store.claim_deliveries(A, T0, T0 + LEASE_S, 10)
    held = [(d.id, d.lease_token) for d in mine]
    stale = [(first.id, mine[0].lease_token - 1)]

    assert await store.renew_delivery_leases(A, held, T0 + 2 * LEASE_S) == {first.id, second.id}
    assert await store.renew_delivery_leases(B, held, FAR) == set()  # not B's to renew
    assert await store.renew_delivery_leases(A, stale, FAR) == set()
    # Past the first lease, still held thanks to the renewal; past the renewed one, free.
    assert await store.claim_deliveries(B, T0 + LEASE_S + 1, FAR, 10) == []
    taken = await store.claim_deliveries(B, T0 + 2 * LEASE_S + 1, FAR, 10)
    assert set(ids(taken)) == {first.id, second.id}


async def test_renew_delivery_leases_skips_ended_deliveries(store: Store) -> None:
    """A delivery that ended (its attempt was recorded) is not renewed."""
    _, delivery = await delivering(store)
    await store.record_attempt(A, delivery, attempt(delivery, "succeeded"), "succeeded", T0 + 1)
    held = [(delivery.id, delivery.lease_token)]
    assert await store.renew_delivery_leases(A, held, FAR) == set()


async def test_release_deliveries_frees_abandoned_attempts(store: Store) -> None:
    """Released deliveries are claimable at once; a stale token releases nothing."""
    _, delivery = await delivering(store, lease_until=FAR)
    await store.release_deliveries(A, [(delivery.id, delivery.lease_token - 1)])
    assert await store.claim_deliveries(B, T0 + 1, FAR, 10) == []

    await store.release_deliveries(A, [(delivery.id, delivery.lease_token)])
    [taken] = await store.claim_deliveries(B, T0 + 1, FAR, 10)
    assert (taken.id, taken.lease_token) == (delivery.id, delivery.lease_token + 1)


async def test_count_due_deliveries_counts_the_unheld_backlog(store: Store) -> None:
    """Only pending, due deliveries without a live lease count as backlog."""
    watch = await register(store, owner=A)
    news = [new_delivery() for _ in range(3)]
    await store.record_progress(A, T0, [progress(watch, deliveries=news)])
    assert await store.count_due_deliveries(T0 - 1) == 0  # not due yet
    assert await store.count_due_deliveries(T0) == 3
    [held] = await store.claim_deliveries(B, T0, T0 + LEASE_S, 1)
    assert await store.count_due_deliveries(T0 + 1) == 2  # one is being attempted
    await store.record_attempt(B, held, attempt(held, "succeeded"), "succeeded", T0 + 2)
    assert await store.count_due_deliveries(T0 + LEASE_S + 1) == 2
