"""What only the PostgreSQL backend does: several replicas on one database, migrations under a
lock, driver errors translated, storage kept cheap to update.

Each replica is a `PostgresStore` with a pool of its own, all on one fresh schema.
"""

from __future__ import annotations

import asyncio
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from typing import cast
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from structlog.testing import capture_logs

from service import store as stores
from service.errors import ConfigError, LeaseLost, StoreError, StoreUnavailable
from service.store import migrations
from service.store.base import Delivery, Recorded, Watch
from service.store.postgres import PostgresStore
from tests.integration.conftest import POSTGRES_URL, postgres_schema
from tests.integration.test_store_contract import (
    LEASE_S,
    T0,
    TENANT,
    A,
    B,
    C,
    attempt,
    completion,
    new_delivery,
    new_watch,
    progress,
)
from tests.outage import TcpProxy

pytestmark = pytest.mark.postgres

REPLICAS = 4
PASSWORD = "s3cr3t-Pa55"
FAR_LEASE = T0 + 10_000.0  # later than every lease set here


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    async with postgres_schema() as name:
        yield name


@pytest.fixture
async def admin(schema: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to the test server, outside every store."""
    connection = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": schema})
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def replicas(schema: str) -> AsyncIterator[list[PostgresStore]]:
    """Open stores on one schema, each with its own pool, as replicas of the bridge have."""
    opened = []
    try:
        for _ in range(REPLICAS):
            replica = PostgresStore(POSTGRES_URL, schema=schema, pool_max=4)
            await replica.open()
            opened.append(replica)
        yield opened
    finally:
        for replica in opened:
            await replica.close()


def with_url_parts(
    *, user: str | None = None, password: str, port: str | None = None, database: str | None = None
) -> str:
    """The test server's URL with a password (and maybe user, port or database) put in."""
    parts = urlsplit(POSTGRES_URL)
    host = parts.hostname or "127.0.0.1"
    netloc = (
        f"{user or parts.username or 'postgres'}:{password}@{host}:{port or parts.port or 5432}"
    )
    path = f"/{database}" if database else parts.path
    return urlunsplit(parts._replace(netloc=netloc, path=path))


def claimers(
    replicas: Sequence[PostgresStore], per_replica: int, round_: int
) -> list[tuple[str, PostgresStore]]:
    """(owner, replica) claiming in `round_`: owners new at each round, whose claims of a
    lease that ran out therefore raise its token (an owner's own would keep it)."""
    named = [(f"replica-{i}-{round_}", replica) for i, replica in enumerate(replicas)]
    return named * per_replica


def assert_disjoint(batches: Sequence[Sequence[Watch] | Sequence[Delivery]]) -> set[str]:
    """No id was handed out twice; the ids handed out."""
    counts = Counter(item.id for batch in batches for item in batch)
    assert [item for item, n in counts.items() if n > 1] == []
    return set(counts)


# Several replicas claiming at once.


async def test_replicas_never_claim_the_same_watch_while_its_lease_holds(
    replicas: list[PostgresStore],
) -> None:
    """Round after round, many concurrent claims split the watches: none twice, none left out."""
    first = replicas[0]
    registered = {
        (await first.insert_watch(new_watch(next_poll_at=T0 + n % 7))).id for n in range(120)
    }
    # 4 replicas x 6 concurrent claims x 8 = 192 places for 120 watches: every claim contends.

    for round_ in range(4):
        now = T0 + round_ * (LEASE_S + 1)  # every lease of the previous round has expired
        batches = await asyncio.gather(
            *(
                replica.claim_watches(owner, now, now + LEASE_S, 8)
                for owner, replica in claimers(replicas, 6, round_)
            )
        )

        assert assert_disjoint(batches) == registered
        assert {w.lease_token for batch in batches for w in batch} == {round_ + 1}
        while_held = await asyncio.gather(
            *(replica.claim_watches(C, now + LEASE_S - 1, FAR_LEASE, 8) for replica in replicas)
        )
        assert all(batch == [] for batch in while_held)


async def test_replicas_never_claim_the_same_delivery_while_its_lease_holds(
    replicas: list[PostgresStore],
) -> None:
    """Round after round, concurrent delivery claims split the pending deliveries exactly."""
    first = replicas[0]
    watch = await first.insert_watch(new_watch(), lease_owner=A, lease_until=FAR_LEASE)
    news = [new_delivery() for _ in range(150)]
    for chunk in range(0, len(news), 50):
        batch = news[chunk : chunk + 50]
        recorded = await first.record_progress(A, T0, [progress(watch, deliveries=batch)])
        assert recorded == Recorded(lost=set(), deliveries=50)

    for round_ in range(4):
        now = T0 + round_ * (LEASE_S + 1)
        batches = await asyncio.gather(
            *(
                replica.claim_deliveries(owner, now, now + LEASE_S, 10)
                for owner, replica in claimers(replicas, 6, round_)
            )
        )

        assert assert_disjoint(batches) == {new.id for new in news}
        assert {d.lease_token for batch in batches for d in batch} == {round_ + 1}
        while_held = await asyncio.gather(
            *(replica.claim_deliveries(C, now + LEASE_S - 1, FAR_LEASE, 10) for replica in replicas)
        )
        assert all(batch == [] for batch in while_held)


async def test_a_claim_racing_a_stale_completion_lets_exactly_one_win(
    replicas: list[PostgresStore],
) -> None:
    """Claims of expired leases racing their old holder's completions: each watch goes to one."""
    holder, *others = replicas
    watches = [
        await holder.insert_watch(new_watch(), lease_owner=A, lease_until=T0 + LEASE_S)
        for _ in range(40)
    ]
    now = T0 + LEASE_S + 1

    async def complete(watch: Watch) -> str | None:
        try:
            await holder.complete_watch(A, now, completion(watch), now + LEASE_S)
        except LeaseLost:
            return None
        return watch.id

    claims = [other.claim_watches(B, now, now + LEASE_S, 5) for other in others for _ in range(4)]
    results = await asyncio.gather(*(complete(watch) for watch in watches), *claims)

    completed = {watch_id for watch_id in results[: len(watches)] if watch_id is not None}
    claimed = assert_disjoint(cast(list[list[Watch]], results[len(watches) :]))
    assert completed.isdisjoint(claimed)
    assert completed | claimed == {watch.id for watch in watches}
    for watch in watches:
        stored = await holder.get_watch(TENANT, watch.id)
        assert stored is not None
        assert stored.status == ("delivering" if watch.id in completed else "active")


async def test_set_writes_to_the_same_watches_do_not_deadlock(
    replicas: list[PostgresStore],
) -> None:
    """Renewals and progress flushes of one holder, concurrent and in opposite orders, all apply."""
    store_a, store_b, _, _ = replicas
    watches = [
        await store_a.insert_watch(new_watch(), lease_owner=A, lease_until=T0 + 1)
        for _ in range(60)
    ]
    held = [(watch.id, 1) for watch in watches]

    for round_ in range(10):
        now = T0 + round_
        renewed, lost, renewed_backwards, lost_backwards = await asyncio.gather(
            store_a.renew_watch_leases(A, held, now + LEASE_S),
            store_b.record_progress(A, now, [progress(w, next_poll_at=now) for w in watches]),
            store_b.renew_watch_leases(A, held[::-1], now + LEASE_S),
            store_a.record_progress(A, now, [progress(w, next_poll_at=now) for w in watches[::-1]]),
        )

        assert renewed == renewed_backwards == {watch.id for watch in watches}
        assert lost == lost_backwards == Recorded(lost=set(), deliveries=0)


async def test_a_cancel_racing_the_final_attempt_lets_exactly_one_win(
    replicas: list[PostgresStore],
) -> None:
    """Cancels racing the attempts of final deliveries: each watch ends one way, none deadlocks."""
    store_a, store_b, _, _ = replicas
    held = []
    for _ in range(30):
        watch = await store_a.insert_watch(new_watch(), lease_owner=A, lease_until=T0 + LEASE_S)
        [final] = await store_a.complete_watch(A, T0, completion(watch), T0 + LEASE_S)
        held.append(final)

    async def deliver(delivery: Delivery) -> bool:
        try:
            await store_a.record_attempt(A, delivery, attempt(delivery), "succeeded", T0 + 1)
        except LeaseLost:
            return False
        return True

    outcomes = await asyncio.gather(
        *(deliver(delivery) for delivery in held),
        *(store_b.cancel_watch(TENANT, delivery.watch_id, T0 + 1) for delivery in held),
    )

    for delivery, delivered in zip(held, outcomes[: len(held)], strict=True):
        stored = await store_a.get_watch(TENANT, delivery.watch_id)
        assert stored is not None
        assert stored.status == ("delivered" if delivered else "cancelled")
        assert isinstance(delivered, bool)
        assert len(await store_a.list_attempts(TENANT, stored.id)) == int(delivered)


# A stale holder, on another replica.


async def test_a_stale_watch_holder_is_fenced_after_another_replica_took_over(
    replicas: list[PostgresStore],
) -> None:
    """After B re-claimed A's expired lease, A's renewal, progress, completion and release are
    rejected and change nothing; B's writes are applied."""
    store_a, store_b, store_c, _ = replicas
    watch = await store_a.insert_watch(new_watch(), lease_owner=A, lease_until=T0 + LEASE_S)
    [taken] = await store_b.claim_watches(B, T0 + LEASE_S + 1, T0 + 3 * LEASE_S, 10)
    later = T0 + LEASE_S + 2

    assert await store_a.renew_watch_leases(A, [(watch.id, 1)], FAR_LEASE) == set()
    recorded = await store_a.record_progress(
        A, later, [progress(watch, deliveries=[new_delivery()])]
    )
    assert recorded == Recorded(lost={watch.id}, deliveries=0)
    with pytest.raises(LeaseLost):
        await store_a.complete_watch(A, later, completion(watch), FAR_LEASE)
    await store_a.release_watches(A, [(watch.id, 1)])

    assert await store_c.get_watch(TENANT, watch.id) == taken
    assert await store_c.claim_watches(C, later, FAR_LEASE, 10) == []
    assert await store_c.claim_deliveries(C, FAR_LEASE, FAR_LEASE + LEASE_S, 10) == []
    token = taken.lease_token
    assert (await store_b.record_progress(B, later, [progress(watch, token=token)])).lost == set()
    await store_b.complete_watch(B, later, completion(watch, token=token), later + LEASE_S)


async def test_a_stale_delivery_holder_is_fenced_after_another_replica_took_over(
    replicas: list[PostgresStore],
) -> None:
    """After B re-claimed A's expired delivery lease, A's attempt is rejected and not logged."""
    store_a, store_b, _, _ = replicas
    watch = await store_a.insert_watch(new_watch(), lease_owner=A, lease_until=T0 + LEASE_S)
    [delivery] = await store_a.complete_watch(A, T0, completion(watch), T0 + LEASE_S)
    [taken] = await store_b.claim_deliveries(B, T0 + LEASE_S + 1, T0 + 3 * LEASE_S, 10)

    with pytest.raises(LeaseLost):
        await store_a.record_attempt(A, delivery, attempt(delivery), "succeeded", T0 + LEASE_S + 2)

    assert await store_b.list_attempts(TENANT, watch.id) == []
    await store_b.record_attempt(B, taken, attempt(taken), "succeeded", T0 + LEASE_S + 3)
    stored = await store_a.get_watch(TENANT, watch.id)
    assert stored is not None
    assert (stored.status, stored.attempts) == ("delivered", 1)


async def test_open_leaves_the_leases_of_other_replicas(replicas: list[PostgresStore]) -> None:
    """A replica starting while others run does not free their leases (SQLite does, alone)."""
    store_a, _, _, _ = replicas
    watch = await store_a.insert_watch(new_watch(), lease_owner=A, lease_until=T0 + LEASE_S)
    late = PostgresStore(POSTGRES_URL, schema=store_a.schema)
    await late.open()
    try:
        assert await late.claim_watches(B, T0 + 1, T0 + LEASE_S, 10) == []
        assert await store_a.renew_watch_leases(A, [(watch.id, 1)], FAR_LEASE) == {watch.id}
    finally:
        await late.close()


# Migrations.


async def test_replicas_starting_together_each_open(schema: str, admin: asyncpg.Connection) -> None:
    """Opened at once on an empty database, every replica starts and each migration is recorded
    once."""
    starting = [PostgresStore(POSTGRES_URL, schema=schema) for _ in range(REPLICAS)]
    try:
        await asyncio.gather(*(replica.open() for replica in starting))
        recorded = await admin.fetch("SELECT version FROM schema_migrations ORDER BY version")
    finally:
        for replica in starting:
            await replica.close()

    assert [row[0] for row in recorded] == [version for version, _ in migrations.load("postgres")]


async def test_concurrent_migrations_apply_each_version_exactly_once(
    replicas: list[PostgresStore], schema: str, admin: asyncpg.Connection
) -> None:
    """On a schema dropped under them, concurrent migrate calls: one applies every version, the
    others none."""
    versions = [version for version, _ in migrations.load("postgres")]
    await admin.execute(f"DROP SCHEMA {schema} CASCADE")

    applied = await asyncio.gather(*(replica.migrate() for replica in replicas for _ in range(2)))

    assert sorted(applied) == [[]] * (2 * REPLICAS - 1) + [versions]
    await replicas[0].insert_watch(new_watch())


# Errors at the boundary.


async def test_an_unreachable_server_is_a_store_error_without_the_password() -> None:
    """Nothing listening: StoreError naming host, port and database, and no password anywhere."""
    refused = PostgresStore(f"postgresql://bridge:{PASSWORD}@127.0.0.1:1/bridge")

    with pytest.raises(
        StoreError, match=r"^cannot connect to PostgreSQL at 127\.0\.0\.1:1/bridge: "
    ) as raised:
        await refused.open()

    assert PASSWORD not in "".join(traceback.format_exception(raised.value))
    await refused.close()


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(with_url_parts(password=PASSWORD, database="no_such_db"), id="no-database"),
        pytest.param(with_url_parts(user="no_such_role", password=PASSWORD), id="no-role"),
        pytest.param(with_url_parts(password=PASSWORD, port="notaport"), id="bad-port"),
    ],
)
async def test_connection_errors_never_show_the_password(schema: str, url: str) -> None:
    """Whatever the server or the URL refuses, the StoreError and its whole traceback omit the
    password."""
    failing = PostgresStore(url)

    with pytest.raises(StoreError, match=r"^cannot connect to PostgreSQL at ") as raised:
        await failing.open()

    assert PASSWORD not in "".join(traceback.format_exception(raised.value))
    await failing.close()


async def test_query_errors_are_store_errors(
    replicas: list[PostgresStore], admin: asyncpg.Connection
) -> None:
    """A failing statement (here: its table dropped) raises StoreError naming the server."""
    await admin.execute("DROP TABLE attempts")

    with pytest.raises(StoreError, match=r"PostgreSQL at .*attempts") as failed:
        await replicas[0].list_attempts(TENANT, "wch_1")

    # A statement the server refuses is not an outage: nothing for a client to wait for.
    assert not isinstance(failed.value, StoreUnavailable)
    assert replicas[0].health.reason is None


@pytest.fixture
async def behind_a_proxy(schema: str) -> AsyncIterator[tuple[TcpProxy, PostgresStore]]:
    """An open store whose connections go through a proxy the test can cut."""
    server = urlsplit(POSTGRES_URL)
    proxy = TcpProxy((server.hostname or "127.0.0.1", server.port or 5432))
    proxy.start()
    store = PostgresStore(
        urlunsplit(server._replace(netloc=f"{server.username}@127.0.0.1:{proxy.port}")),
        schema=schema,
    )
    await store.open()
    try:
        yield proxy, store
    finally:
        proxy.stop()  # whether the test left it running or not
        proxy.start()
        await store.close()
        proxy.stop()


async def test_a_connection_cut_in_a_transaction_makes_the_store_unavailable(
    behind_a_proxy: tuple[TcpProxy, PostgresStore],
) -> None:
    """A statement on a connection the server dropped in the middle of a transaction fails with
    the driver's "connection is closed" (an InterfaceError, not a connection error): that is
    an outage too, not a failure of the bridge (which would log an error for every flush)."""
    proxy, store = behind_a_proxy

    async def cut_in_a_transaction() -> None:
        async with store._transaction() as connection:
            await connection.execute("SELECT 1")
            closed = asyncio.Event()
            connection.add_termination_listener(lambda _: closed.set())
            proxy.stop()
            async with asyncio.timeout(10):
                await closed.wait()
            await connection.execute("SELECT 1")

    with pytest.raises(StoreUnavailable, match="connection is closed"):
        await cut_in_a_transaction()
    assert store.health.reason is not None


async def test_a_server_cut_off_makes_the_store_unavailable_until_it_is_back(
    behind_a_proxy: tuple[TcpProxy, PostgresStore],
) -> None:
    """With its connections cut and new ones refused, every call raises StoreUnavailable naming
    the server; once it is reachable again the store works on by itself, and its health logged
    the outage once, then its end."""
    proxy, store = behind_a_proxy
    first = await store.insert_watch(new_watch())
    calls: list[Callable[[], Awaitable[object]]] = [
        store.ping,
        lambda: store.insert_watch(new_watch()),
        lambda: store.get_watch(TENANT, first.id),
    ]
    with capture_logs() as logs:
        proxy.stop()
        for call in calls:
            with pytest.raises(
                StoreUnavailable, match=rf"^PostgreSQL at 127\.0\.0\.1:{proxy.port}/"
            ) as cut:
                await call()
            assert not cut.value.refusing_writes
        down = store.health.reason

        proxy.start()
        await store.ping()
        second = await store.insert_watch(new_watch())
    assert await store.get_watch(TENANT, second.id) == second

    assert down == cut.value.message
    assert store.health.reason is None
    assert [line["event"] for line in logs] == ["store.unavailable", "store.recovered"]


async def test_calls_before_open_and_after_close_raise_store_error(schema: str) -> None:
    """A store not open (yet, or any more) answers StoreError, as a store that is down would."""
    store = PostgresStore(POSTGRES_URL, schema=schema)
    with pytest.raises(StoreError, match="not open"):
        await store.ping()

    await store.open()
    await store.ping()
    await store.close()

    with pytest.raises(StoreError, match="not open"):
        await store.ping()


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_from_url_picks_postgres(scheme: str) -> None:
    """Both PostgreSQL schemes choose this backend, sized by default, without connecting."""
    chosen = stores.from_url(f"{scheme}://bridge@db.internal:5432/bridge")

    assert isinstance(chosen, PostgresStore)
    assert (chosen.where, chosen.pool_min, chosen.pool_max) == ("db.internal:5432/bridge", 1, 10)


def test_from_url_names_every_backend_for_an_unknown_scheme() -> None:
    """An unknown scheme is a ConfigError pointing to every supported URL form."""
    with pytest.raises(ConfigError, match=r"sqlite:///PATH.*postgresql://.*memory://"):
        stores.from_url("mysql://db/bridge")


async def test_nul_in_upstream_and_receiver_text_is_stored_replaced(
    replicas: list[PostgresStore],
) -> None:
    """PostgreSQL text cannot hold NUL: error texts carrying one are written with U+FFFD instead
    of failing the write (and every retry of it)."""
    store = replicas[0]
    watch = await store.insert_watch(new_watch(), lease_owner=A, lease_until=FAR_LEASE)
    change = replace(progress(watch), last_error="upstream said \x00")
    assert (await store.record_progress(A, T0, [change])).lost == set()
    polled = await store.get_watch(TENANT, watch.id)
    assert polled is not None
    assert polled.last_error == "upstream said \ufffd"
    [delivery] = await store.complete_watch(A, T0 + 1, completion(watch), FAR_LEASE)
    failed = replace(attempt(delivery, "failed"), error="receiver said \x00")

    await store.record_attempt(A, delivery, failed, "failed", T0 + 2)

    stored = await store.get_watch(TENANT, watch.id)
    assert stored is not None
    assert (stored.status, stored.last_error) == ("failed", "receiver said \ufffd")
    [logged] = await store.list_attempts(TENANT, watch.id)
    assert logged.error == "receiver said \ufffd"


# Storage.


async def test_lease_renewals_are_hot_updates(schema: str, admin: asyncpg.Connection) -> None:
    """Claims and renewals change no indexed column, so nearly all are HOT (heap-only) updates."""
    store = PostgresStore(POSTGRES_URL, schema=schema, pool_min=1, pool_max=1)
    await store.open()
    try:
        for _ in range(50):
            await store.insert_watch(new_watch())
        held = [(w.id, w.lease_token) for w in await store.claim_watches(A, T0, T0 + 1, 50)]
        for n in range(20):
            assert len(await store.renew_watch_leases(A, held, T0 + 2 + n)) == 50
        # Statistics reach the shared counters when the backend that counted them flushes.
        async with store._pool.acquire() as connection:
            await connection.execute("SELECT pg_stat_force_next_flush()")
    finally:
        await store.close()

    for _ in range(50):  # the flush happens as that backend goes idle: wait for it a little
        updated, hot = await admin.fetchrow(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables"
            " WHERE schemaname = $1 AND relname = 'watches'",
            schema,
        )
        if updated >= 50 * 21:
            break
        await asyncio.sleep(0.1)
    assert updated == 50 * 21
    assert hot >= 0.9 * updated
