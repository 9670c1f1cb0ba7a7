"""The store contract for searching a tenant's watches (`WatchFilter`), run against every
backend (`store` fixture): by the start of a job id, by a metadata key's value, by creation
time, by upstream, combined with the other filters and paging, and counted as listed. On
PostgreSQL and SQLite, the prefix search is answered from an index (their query plans)."""

from __future__ import annotations

from dataclasses import replace

from service.store import postgres, sqlite
from service.store.base import Store, WatchFilter
from service.store.postgres import PostgresStore
from service.store.sqlite import SQLiteStore
from tests.integration.test_store_contract import OTHER_TENANT, T0, TENANT, ids, listed, register


async def test_job_id_prefix_finds_the_jobs_that_start_with_it(store: Store) -> None:
    """A prefix finds every job id starting with it, case and `_` taken literally."""
    a1 = await register(store, job_id="ord-100")
    a2 = await register(store, job_id="ord-1001")
    b = await register(store, job_id="ORD-100")
    c = await register(store, job_id="ordx100")
    d = await register(store, job_id="or_d-1")
    await register(store, tenant=OTHER_TENANT, job_id="ord-100")

    assert await listed(store, job_id_prefix="ord-100") == [a2.id, a1.id]
    assert await listed(store, job_id_prefix="ord") == [c.id, a2.id, a1.id]
    assert await listed(store, job_id_prefix="ORD") == [b.id]
    assert await listed(store, job_id_prefix="or_") == [d.id]
    assert await listed(store, job_id_prefix="ord-1001x") == []


async def test_metadata_value_matches_strings_and_numbers(store: Store) -> None:
    """A key's value matches a string equal to it, or a number it writes; nothing else."""
    text = await register(store, metadata={"order": "1234", "customer": "Ann"})
    number = await register(store, metadata={"order": 1234})
    decimal = await register(store, metadata={"order": 12.5})
    await register(store, metadata={"order": "12345"})
    await register(store, metadata={"order": True, "x": {"order": "1234"}})
    await register(store, metadata={"order": ["1234"]})
    await register(store, metadata=None)
    await register(store, tenant=OTHER_TENANT, metadata={"order": "1234"})

    assert await listed(store, metadata=("order", "1234")) == [number.id, text.id]
    assert await listed(store, metadata=("order", "12.5")) == [decimal.id]
    assert await listed(store, metadata=("customer", "Ann")) == [text.id]
    assert await listed(store, metadata=("customer", "ann")) == []
    assert await listed(store, metadata=("order", "true")) == []
    assert await listed(store, metadata=("x.order", "1234")) == []


async def test_metadata_keys_and_values_beyond_ascii_are_found(store: Store) -> None:
    """A key or value with characters beyond ASCII (and a key with a quote or a dot in it)
    matches as written."""
    cafe = await register(store, metadata={"café": "crème", 'say "hi".now': "ok"})
    await register(store, metadata={"cafe": "crème"})

    assert await listed(store, metadata=("café", "crème")) == [cafe.id]
    assert await listed(store, metadata=('say "hi".now', "ok")) == [cafe.id]
    assert await listed(store, metadata=("café", "creme")) == []


async def test_created_range_is_from_inclusive_to_exclusive(store: Store) -> None:
    """created_from <= created_at < created_to."""
    early = await register(store, created_at=T0)
    middle = await register(store, created_at=T0 + 60)
    late = await register(store, created_at=T0 + 120)

    assert await listed(store, created_from=T0 + 60) == [late.id, middle.id]
    assert await listed(store, created_to=T0 + 120) == [middle.id, early.id]
    assert await listed(store, created_from=T0 + 1, created_to=T0 + 120) == [middle.id]


async def test_upstream_finds_the_watches_of_that_upstream(store: Store) -> None:
    """An upstream's name finds its watches only, whatever their job ids: the same job id on
    two upstreams is two jobs, each found by its own upstream's name."""
    here = await register(store, job_id="job-1")
    there = await register(store, job_id="job-1", upstream="runway")
    other = await register(store, job_id="job-2", upstream="fal")
    await register(store, tenant=OTHER_TENANT, job_id="job-1", upstream="runway")

    assert await listed(store, upstream="default") == [here.id]
    assert await listed(store, upstream="runway") == [there.id]
    assert await listed(store, upstream="fal") == [other.id]
    assert await listed(store, upstream="runway", job_id_prefix="job-2") == []
    assert await listed(store, upstream="luma") == []
    assert await listed(store) == [other.id, there.id, here.id]
    assert await listed(store, job_id="job-1", upstream="runway") == [there.id]


async def test_search_combines_with_filters_and_pages(store: Store) -> None:
    """The search narrows the other filters, pages with before_id and counts every page."""
    found = [await register(store, job_id=f"ord-{n}", metadata={"shop": "eu"}) for n in range(5)]
    cancelled = await register(store, job_id="ord-9", metadata={"shop": "eu"})
    await store.cancel_watch(TENANT, cancelled.id, T0 + 1)
    await register(store, job_id="ord-8", metadata={"shop": "us"})
    search = WatchFilter(job_id_prefix="ord-", metadata=("shop", "eu"))
    active = replace(search, status="active")

    first = await store.list_watches(TENANT, active, limit=3)
    rest = await store.list_watches(TENANT, active, limit=3, before_id=first[-1].id)
    assert ids(first) + ids(rest) == ids(found[::-1])
    assert await store.count_matching(TENANT, active) == 5
    assert await store.count_matching(TENANT, replace(search, status="cancelled")) == 1
    assert await store.count_matching(TENANT, replace(search, outcome="cancelled")) == 1
    assert await store.count_matching(TENANT) == 7
    assert await store.count_matching(OTHER_TENANT) == 0


async def test_job_id_prefix_uses_an_index(unopened_sql_store: Store) -> None:
    """The prefix search, as the backend writes it, is a range on an index of (tenant, job_id),
    not a scan."""
    store = unopened_sql_store
    await store.open()
    prefix = WatchFilter(job_id_prefix="job-12")
    if isinstance(store, SQLiteStore):
        where, params = sqlite._where(TENANT, prefix)
        plan = await store._run(
            lambda db: db.execute(
                f"EXPLAIN QUERY PLAN SELECT id FROM watches WHERE {where}"  # noqa: S608
                " ORDER BY id DESC LIMIT 51",
                params,
            ).fetchall()
        )
        text = " ".join(str(row[-1]) for row in plan)
        assert "watches_tenant_job (tenant=? AND job_id>? AND job_id<?)" in text
    elif isinstance(store, PostgresStore):
        for n in range(300):
            await register(store, job_id=f"job-{n}")
        where, args = postgres._where(TENANT, prefix)
        async with store._transaction() as db:
            await db.execute("ANALYZE watches")
            await db.execute("SET LOCAL enable_seqscan = off")
            rows = await db.fetch(f"EXPLAIN SELECT id FROM watches WHERE {where}", *args)  # noqa: S608
        text = " ".join(row[0] for row in rows)
        assert "watches_tenant_job_prefix" in text
        assert "job_id ~>=~ 'job-12'::text" in text
    await store.close()
