"""PostgreSQL backend: any number of processes share one database. See `base.Store`.

Claims lock the rows they take with `FOR NO KEY UPDATE SKIP LOCKED` and lease them in the same
statement, so concurrent claims split the due rows instead of waiting on each other. (NO KEY
UPDATE is the lock an UPDATE takes anyway; unlike FOR UPDATE it does not conflict with the
foreign-key checks of inserted deliveries.) A write that touches a watch and its deliveries locks
the watch first, and set writes take rows in id order, so concurrent writes do not deadlock.

Unlike SQLite, `open` leaves leases alone: other replicas may hold them.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

from service.clock import SystemClock
from service.errors import LeaseLost, MigrationError, StoreError, StoreUnavailable
from service.store import base, buckets, migrations, rules, sql_rows, subscription_health
from service.store.health import StoreHealth

CONNECT_TIMEOUT_S = 10.0
# Held while migrating: replicas starting together apply each migration once, one after another.
# One key for the whole database (every schema): migrations are rare and short.
_MIGRATION_LOCK = 0x7765_6268_6F6F_6B  # "webhook"
# Driver errors, translated into StoreError (ConnectionError and TimeoutError are OSErrors).
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)
# SQLSTATEs of a server that cannot be used for now rather than of a wrong statement (besides
# class 08, connection exceptions): shutting down, restarting or starting up, out of
# connections or memory.
_UNREACHABLE = frozenset({"57P01", "57P02", "57P03", "53300", "53200"})
# ... and of one that answers but refuses writes: read-only (a standby, after a failover), a
# full disk, an I/O error.
_REFUSING_WRITES = frozenset({"25006", "53100", "58030"})
# The probe of `ping(write=True)`: the last migration's row rewritten as it is, a write that
# a read-only or full server refuses.
_WRITE_PROBE = (
    "UPDATE schema_migrations SET applied_at = applied_at"
    " WHERE version = (SELECT max(version) FROM schema_migrations)"
)

_W_WATCH_COLUMNS = ", ".join(f"w.{name}" for name in sql_rows.WATCH_FIELDS)
# A subscription delivery is sent as the subscription says (`s` is left-joined).
_DELIVERY_COLUMNS = (
    "d.id, d.watch_id, d.event_type, d.body, d.final, d.attempts, d.lease_token,"
    " coalesce(s.url, w.callback_url) AS callback_url,"
    " CASE WHEN s.id IS NULL THEN w.callback_method ELSE 'POST' END AS callback_method,"
    " coalesce(s.headers, w.callback_headers) AS callback_headers,"
    " coalesce(s.secret, w.secret) AS secret, d.created_at, d.subscription_id, d.event_id,"
    " coalesce(s.final_statuses, w.final_statuses) AS final_statuses, d.tenant,"
    " coalesce(s.previous_secret, '') AS previous_secret, s.previous_secret_until, d.series"
)
# The watch's deliveries ($1 watch, $2 tenant; only $3 when not null), in `watch_deliveries`
# order.
_DELIVERY_RECORDS = (
    "SELECT d.id, d.event_type, d.final, d.status, d.attempts, d.body, d.created_at,"
    " d.subscription_id, d.event_id,"
    " CASE WHEN d.status = 'pending' THEN d.next_attempt_at END AS next_attempt_at, d.series"
    " FROM deliveries d JOIN watches w ON w.id = d.watch_id WHERE w.id = $1 AND w.tenant = $2"
    " AND ($3::text IS NULL OR d.id = $3)"
    " ORDER BY d.created_at, d.subscription_id IS NOT NULL, d.subscription_id, d.id"
)
# The watches of ($2 ids, $3 tokens) that $1 holds, locked in id order, so that set writes to the
# same watches (a renewal and a progress flush, say) wait for each other instead of deadlocking.
_HELD = (
    "WITH held AS (SELECT w.id FROM watches w"
    " JOIN unnest($2::text[], $3::bigint[]) AS h (id, token) ON w.id = h.id"
    " AND w.lease_token = h.token WHERE w.lease_owner = $1 ORDER BY w.id FOR NO KEY UPDATE OF w)"
)
# The pending deliveries of ($2 ids, $3 tokens) that $1 holds, locked in id order.
_HELD_DELIVERIES = (
    "WITH held AS (SELECT d.id FROM deliveries d"
    " JOIN unnest($2::text[], $3::bigint[]) AS h (id, token) ON d.id = h.id"
    " AND d.lease_token = h.token WHERE d.lease_owner = $1 AND d.status = 'pending'"
    " ORDER BY d.id FOR NO KEY UPDATE OF d)"
)
# A registration's job ($3, at upstream $22) is owned by another tenant than its own ($2):
# `Store.insert_watch`.
_OWNED = "EXISTS (SELECT FROM job_owners WHERE upstream = $22 AND job_id = $3 AND tenant <> $2)"
# Claims with shares (see `rules.groups_taken`). The groups (host and tenant) with pending
# deliveries, one index probe each (`deliveries_group_due`: the hosts, then the tenants of each
# host), with their shares ($2 and $3 the default host share and the host limits, $4 and $5 the
# tenant's); of those with both shares and a delivery due at $1 that nobody holds, by the oldest
# (then host, then tenant). A group's deliveries are matched by ranges, not `=`, and ordered by
# (host, tenant, next_attempt_at), which only `deliveries_group_due` gives: with `=`, the planner,
# taking each group's rows to be spread evenly over the due order, would walk `deliveries_due`
# instead, through a large group's whole backlog for another's first row.
_GROUPS_DUE = """
WITH RECURSIVE hosts (host) AS (
    (SELECT host FROM deliveries WHERE status = 'pending' ORDER BY host LIMIT 1)
    UNION ALL
    SELECT (SELECT d.host FROM deliveries d WHERE d.status = 'pending' AND d.host > hosts.host
            ORDER BY d.host LIMIT 1)
    FROM hosts WHERE hosts.host IS NOT NULL
), groups (host, tenant) AS (
    SELECT host, (SELECT d.tenant FROM deliveries d WHERE d.status = 'pending'
                  AND d.host = hosts.host ORDER BY d.host, d.tenant LIMIT 1)
    FROM hosts WHERE host IS NOT NULL
    UNION ALL
    SELECT g.host, (SELECT d.tenant FROM deliveries d WHERE d.status = 'pending'
                    AND d.host = g.host AND d.tenant > g.tenant ORDER BY d.host, d.tenant LIMIT 1)
    FROM groups g WHERE g.tenant IS NOT NULL
), shares AS (
    SELECT host, tenant, coalesce(($3::jsonb ->> host)::int, $2) AS host_share,
        coalesce(($5::jsonb ->> tenant)::int, $4) AS tenant_share
    FROM groups WHERE tenant IS NOT NULL
)
SELECT s.host, s.tenant, s.host_share, s.tenant_share FROM shares s CROSS JOIN LATERAL (
    SELECT d.next_attempt_at AS at FROM deliveries d WHERE d.host >= s.host
    AND d.host <= s.host AND d.tenant >= s.tenant AND d.tenant <= s.tenant
    AND d.status = 'pending' AND d.next_attempt_at <= $1
    AND (d.lease_owner IS NULL OR d.lease_expires_at <= $1)
    ORDER BY d.host, d.tenant, d.next_attempt_at LIMIT 1) first
WHERE s.host_share > 0 AND s.tenant_share > 0 ORDER BY first.at, s.host, s.tenant
"""
# The `most` oldest due deliveries of each group taken ($1 hosts, $2 tenants, $3 counts; $4
# now) that nobody holds, locked, skipping those another claim has locked (the ones not
# claimed are unlocked at commit).
_OFFERED = """
SELECT c.next_attempt_at, c.id, t.host, t.tenant
FROM unnest($1::text[], $2::text[], $3::int[]) AS t (host, tenant, most) CROSS JOIN LATERAL (
    SELECT d.id, d.next_attempt_at FROM deliveries d WHERE d.host >= t.host
    AND d.host <= t.host AND d.tenant >= t.tenant AND d.tenant <= t.tenant
    AND d.status = 'pending' AND d.next_attempt_at <= $4
    AND (d.lease_owner IS NULL OR d.lease_expires_at <= $4)
    ORDER BY d.host, d.tenant, d.next_attempt_at, d.id
    LIMIT t.most FOR NO KEY UPDATE OF d SKIP LOCKED) c
"""
# The token a claim by $1 gives: kept when $1 takes back a lease of its own that ran out while it
# still held the work (a store outage), so its writes under way still count; raised otherwise.
_NEXT_LEASE_NUMBER = "CASE WHEN lease_owner = $1 THEN lease_token ELSE lease_token + 1 END"
# Claims the deliveries of `due` (ids) for $1 until $3, and reads them as sent.
_CLAIM = (
    "d AS (UPDATE deliveries d SET lease_owner = $1, lease_expires_at = $3,"  # noqa: S608
    f" lease_token = {_NEXT_LEASE_NUMBER} FROM due WHERE d.id = due.id RETURNING d.*)"
    f" SELECT {_DELIVERY_COLUMNS} FROM d JOIN watches w ON w.id = d.watch_id"
    " LEFT JOIN subscriptions s ON s.id = d.subscription_id ORDER BY d.next_attempt_at, d.id"
)


def _delivery(row: Any) -> base.Delivery:
    return base.Delivery(**{**row, "final_statuses": tuple(row["final_statuses"])})


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _text(value: str | None) -> str | None:
    """Free text from an upstream or a receiver, storable: PostgreSQL text cannot hold NUL, and a
    write that fails on it would fail again at every retry."""
    return None if value is None else value.replace("\x00", "\ufffd")


def _count(status: str) -> int:
    """The row count of a command tag such as `UPDATE 3` or `INSERT 0 1`."""
    return int(status.rsplit(" ", 1)[-1])


async def _no_reset(connection: Any) -> None:
    return None


async def _init_connection(connection: Any) -> None:
    # json, not jsonb: it keeps the client's key order (metadata is echoed in webhooks), and
    # the bridge never queries inside these columns.
    await connection.set_type_codec(
        "json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
    )


class PostgresStore(base.Store):
    def __init__(
        self,
        url: str,
        *,
        pool_min: int = 1,
        pool_max: int = 10,
        schema: str | None = None,
        health: StoreHealth | None = None,
    ) -> None:
        self._url = url
        self.health = health or StoreHealth(SystemClock())
        self.schema = schema
        self.pool_min = pool_min
        self.pool_max = pool_max
        self._pool: Any = None
        parts = urlsplit(url)
        # host:port/db for messages; never the user info, which may hold a password.
        self.where = parts.netloc.rpartition("@")[2] + parts.path
        # libpq takes a password in the query too.
        passwords = [parts.password or "", *parse_qs(parts.query).get("password", [])]
        self._secrets = {s for p in passwords for s in (p, unquote(p)) if s}

    # Plumbing.

    def _describe(self, error: BaseException) -> str:
        text = str(error) or type(error).__name__
        for secret in self._secrets:
            text = text.replace(secret, "********")
        return text

    def _failed(self, error: BaseException, *, lost: bool = False) -> StoreError:
        """A driver error as the store's: `StoreUnavailable`, reported to `health`, when the
        server cannot be used for now (unreachable, refusing writes, or `lost`: the connection
        it ran on was dropped)."""
        message = f"PostgreSQL at {self.where}: {self._describe(error)}"
        state = error.sqlstate if isinstance(error, asyncpg.PostgresError) else None
        unreachable = isinstance(error, OSError | asyncpg.PostgresConnectionError)
        if lost or unreachable or state in _UNREACHABLE:
            outage = StoreUnavailable(message)
        elif state in _REFUSING_WRITES:
            outage = StoreUnavailable(message, refusing_writes=True)
        else:
            return StoreError(message)
        self.health.failed(outage)
        return outage

    @contextlib.asynccontextmanager
    async def _connection(self, *, writes: bool = True) -> AsyncIterator[Any]:
        """A pooled connection; driver errors translated, and reported to `health` with each
        success (`writes`: whether what ran on it may have written)."""
        pool = self._pool
        if pool is None:
            raise StoreError("the store is not open")
        try:
            async with pool.acquire() as connection:
                try:
                    yield connection
                except _DRIVER_ERRORS as error:
                    # On a dropped connection the driver may say only "connection is closed".
                    raise self._failed(error, lost=_dropped(connection)) from error
        except _DRIVER_ERRORS as error:
            raise self._failed(error) from error
        self.health.succeeded(wrote=writes)

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Any]:
        async with self._connection() as connection, connection.transaction():
            yield connection

    # A plain SELECT writes nothing; any other statement counts as a write (for `health`).

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        async with self._connection(writes=not sql.startswith("SELECT")) as connection:
            rows: list[Any] = await connection.fetch(sql, *args)
        return rows

    async def _fetchrow(self, sql: str, *args: Any) -> Any:
        async with self._connection(writes=not sql.startswith("SELECT")) as connection:
            return await connection.fetchrow(sql, *args)

    async def _execute(self, sql: str, *args: Any) -> str:
        async with self._connection(writes=not sql.startswith("SELECT")) as connection:
            status: str = await connection.execute(sql, *args)
        return status

    async def open(self, *, migrate: bool = True) -> None:
        settings = {
            "application_name": "webhook-bridge",
            # Plan each statement for its arguments: a generic plan cached while `watches` was
            # small (or never analyzed) scans the whole table for a one-row write.
            "plan_cache_mode": "force_custom_plan",
        }
        if self.schema is not None:
            # Startup parameters, not SET: the pool's RESET ALL on release keeps them.
            settings["search_path"] = _quote(self.schema)
        try:
            self._pool = await asyncpg.create_pool(
                self._url,
                min_size=self.pool_min,
                max_size=self.pool_max,
                timeout=CONNECT_TIMEOUT_S,
                server_settings=settings,
                # The store keeps no session state between calls (settings are startup
                # parameters; migrate() unlocks its own lock), so skip asyncpg's reset query.
                reset=_no_reset,
                init=_init_connection,
            )
        except (*_DRIVER_ERRORS, ValueError) as error:  # ValueError: a malformed URL
            raise StoreError(
                f"cannot connect to PostgreSQL at {self.where}: {self._describe(error)}"
            ) from error
        if not migrate:
            return
        try:
            await self.migrate()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def migrate(self) -> list[int]:
        applied = []
        async with self._connection() as db:
            # A session lock taken before the transactions begin: a transaction that waited for a
            # lock inside it would keep the catalog it saw before (a schema created meanwhile
            # looks missing to CREATE SCHEMA IF NOT EXISTS, which then fails).
            await db.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
            try:
                async with db.transaction():
                    if self.schema is not None:
                        await db.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(self.schema)}")
                    await db.execute(
                        "CREATE TABLE IF NOT EXISTS schema_migrations"
                        " (version integer PRIMARY KEY, applied_at double precision NOT NULL)"
                    )
                done = {row[0] for row in await db.fetch("SELECT version FROM schema_migrations")}
                for version, sql in migrations.load("postgres"):
                    if version in done:
                        continue
                    try:
                        async with db.transaction():
                            await db.execute(sql)
                            await db.execute(
                                "INSERT INTO schema_migrations (version, applied_at)"
                                " VALUES ($1, extract(epoch FROM clock_timestamp()))",
                                version,
                            )
                    except asyncpg.PostgresError as error:
                        raise MigrationError(f"migration {version:04d} failed: {error}") from error
                    applied.append(version)
            finally:
                await db.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        return applied

    async def ping(self, *, write: bool = False) -> None:
        await self._execute(_WRITE_PROBE if write else "SELECT 1")

    # Registration and reading.

    async def insert_watch(
        self,
        watch: base.Watch,
        idempotency: base.Idempotency | None = None,
        *,
        lease_owner: str | None = None,
        lease_until: float = 0.0,
        shared_key: bool = False,
        started: bool = False,
    ) -> base.Watch:
        token = 1 if lease_owner else 0
        values = sql_rows.new_watch_values(watch, lease_owner, lease_until)
        marks = ", ".join(f"${i}" for i in range(1, len(values) + 1))
        insert = f"INSERT INTO watches ({sql_rows.NEW_WATCH_COLUMNS}) SELECT {marks}"
        if idempotency is None and not shared_key and not started:
            await self._execute(insert, *values)
            return replace(watch, updated_at=watch.created_at, lease_token=token)
        # One statement: the watch is inserted unless another tenant owns the job (shared_key)
        # or the tenant used the key; the key and the job's owner only with the watch.
        conditions, ctes, args = [], [], list[Any](values)
        if shared_key:
            conditions.append(f"NOT {_OWNED}")
        if idempotency is not None:
            where = f" WHERE NOT {_OWNED}" if shared_key else ""
            ctes.append(
                "key AS (INSERT INTO idempotency_keys (tenant, key, request_hash, response,"
                f" watch_id, created_at) SELECT $2, $23, $24, $25, $1, $14{where}"
                " ON CONFLICT (tenant, key) DO NOTHING RETURNING 1)"
            )
            conditions.append("EXISTS (SELECT FROM key)")
            args += [idempotency.key, idempotency.request_hash, idempotency.response]
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        ctes.append(f"w AS ({insert}{where} RETURNING job_id)")
        if started:
            ctes.append(
                "owner AS (INSERT INTO job_owners (upstream, job_id, tenant, created_at)"
                " SELECT $22, job_id, $2, $14 FROM w ON CONFLICT (upstream, job_id) DO NOTHING)"
            )
        owned = _OWNED if shared_key else "false"
        row = await self._fetchrow(
            f"WITH {', '.join(ctes)} SELECT (SELECT count(*) FROM w) AS inserted,"  # noqa: S608
            f" {owned} AS owned",
            *args,
        )
        if not row["inserted"]:
            raise base.JobOfAnotherTenant() if row["owned"] else base.DuplicateIdempotencyKey()
        return replace(watch, updated_at=watch.created_at, lease_token=token)

    async def find_idempotency(self, tenant: str, key: str) -> base.Idempotency | None:
        row = await self._fetchrow(
            "SELECT key, request_hash, response FROM idempotency_keys"
            " WHERE tenant = $1 AND key = $2",
            tenant,
            key,
        )
        return None if row is None else base.Idempotency(*row)

    async def get_watch(self, tenant: str, watch_id: str) -> base.Watch | None:
        row = await self._fetchrow(
            f"SELECT {sql_rows.WATCH_COLUMNS} FROM watches WHERE id = $1 AND tenant = $2",  # noqa: S608
            watch_id,
            tenant,
        )
        return None if row is None else sql_rows.watch(row)

    async def list_watches(
        self,
        tenant: str,
        filters: base.WatchFilter = base.EVERY_WATCH,
        *,
        before_id: str | None = None,
        limit: int = 50,
    ) -> list[base.Watch]:
        where, params = _where(tenant, filters)
        if before_id is not None:
            params.append(before_id)
            where += f" AND id < ${len(params)}"
        sql = (
            f"SELECT {sql_rows.WATCH_COLUMNS} FROM watches WHERE {where}"  # noqa: S608
            f" ORDER BY id DESC LIMIT ${len(params) + 1}"
        )
        return [sql_rows.watch(row) for row in await self._fetch(sql, *params, limit)]

    async def count_matching(
        self, tenant: str, filters: base.WatchFilter = base.EVERY_WATCH
    ) -> int:
        where, params = _where(tenant, filters)
        row = await self._fetchrow(f"SELECT count(*) FROM watches WHERE {where}", *params)  # noqa: S608
        return int(row[0])

    async def cancel_watch(self, tenant: str, watch_id: str, now: float) -> base.Watch | None:
        row = await self._fetchrow(
            "WITH w AS (UPDATE watches SET status = 'cancelled', updated_at = $3,"  # noqa: S608
            " completed_at = $3, lease_owner = NULL, lease_expires_at = NULL,"
            " queue_position = NULL,"
            " outcome = CASE WHEN status = 'active' THEN $5 ELSE outcome END"
            " WHERE id = $1 AND tenant = $2 AND status = ANY($4::text[])"
            f" RETURNING {sql_rows.WATCH_COLUMNS}),"
            " pending AS (UPDATE deliveries SET status = 'cancelled', ended_at = $3,"
            " lease_owner = NULL, lease_expires_at = NULL"
            " WHERE watch_id IN (SELECT id FROM w) AND status = 'pending')"
            " SELECT * FROM w",
            watch_id,
            tenant,
            now,
            list(rules.LIVE),
            rules.job_outcome("cancelled", None, None),
        )
        return await self.get_watch(tenant, watch_id) if row is None else sql_rows.watch(row)

    async def redeliver(
        self, tenant: str, watch_id: str, now: float, endpoints: Collection[str] | None = None
    ) -> base.Redelivery | None:
        async with self._transaction() as db:
            row = await db.fetchrow(
                f"SELECT {sql_rows.WATCH_COLUMNS} FROM watches WHERE id = $1 AND tenant = $2"  # noqa: S608
                " FOR NO KEY UPDATE",
                watch_id,
                tenant,
            )
            if row is None:
                return None
            # A subscription leaving `active` meanwhile waits for this commit, then cancels.
            finals = await db.fetch(
                "SELECT d.id, d.subscription_id, d.status, d.body IS NOT NULL,"
                " d.subscription_id IS NULL OR EXISTS (SELECT FROM subscriptions s"
                " WHERE s.id = d.subscription_id AND s.status = 'active' FOR SHARE)"
                " FROM deliveries d WHERE d.watch_id = $1 AND d.final",
                watch_id,
            )
            again, delivering = rules.redelivery(
                row["status"], [rules.Final(*f) for f in finals], endpoints
            )
            if again:
                await db.execute(
                    "UPDATE deliveries SET status = 'pending', attempts = 0, series = series + 1,"
                    " next_attempt_at = $2, ended_at = NULL, lease_owner = NULL,"
                    " lease_expires_at = NULL WHERE id = ANY($1::text[])",
                    again,
                    now,
                )
            if delivering:
                row = await db.fetchrow(
                    "UPDATE watches SET status = 'delivering', updated_at = $2,"  # noqa: S608
                    f" completed_at = NULL WHERE id = $1 RETURNING {sql_rows.WATCH_COLUMNS}",
                    watch_id,
                    now,
                )
        return base.Redelivery(sql_rows.watch(row), tuple(again))

    async def retry_delivery(
        self, tenant: str, watch_id: str, delivery_id: str, now: float
    ) -> base.DeliveryRecord | None:
        async with self._transaction() as db:
            row = await db.fetchrow(f"{_DELIVERY_RECORDS} FOR NO KEY UPDATE OF d", watch_id,
                                    tenant, delivery_id)  # fmt: skip
            if row is None:
                return None
            found = sql_rows.delivery_record(row)
            due = rules.retried_at(found.status, found.next_attempt_at, now)
            if due is None:
                return found
            await db.execute(
                "UPDATE deliveries SET next_attempt_at = $2 WHERE id = $1", delivery_id, due
            )
        return replace(found, next_attempt_at=due)

    async def list_attempts(self, tenant: str, watch_id: str) -> list[base.Attempt]:
        rows = await self._fetch(
            f"SELECT {sql_rows.ATTEMPT_COLUMNS} FROM attempts a"  # noqa: S608
            " JOIN deliveries d ON d.id = a.delivery_id JOIN watches w ON w.id = d.watch_id"
            " WHERE w.id = $1 AND w.tenant = $2 ORDER BY a.started_at, a.seq",
            watch_id,
            tenant,
        )
        return [sql_rows.attempt(row) for row in rows]

    async def watch_deliveries(self, tenant: str, watch_id: str) -> list[base.DeliveryRecord]:
        rows = await self._fetch(_DELIVERY_RECORDS, watch_id, tenant, None)
        return [sql_rows.delivery_record(row) for row in rows]

    # Polling.

    async def claim_watches(
        self,
        owner: str,
        now: float,
        lease_until: float,
        limit: int,
        upstreams: Sequence[str] | None = None,
    ) -> list[base.Watch]:
        rows = await self._fetch(
            "WITH due AS (SELECT id FROM watches WHERE status = 'active'"  # noqa: S608
            " AND (lease_owner IS NULL OR lease_expires_at <= $2)"
            " AND ($5::text[] IS NULL OR upstream = ANY($5::text[]))"
            " ORDER BY next_poll_at LIMIT $4 FOR NO KEY UPDATE SKIP LOCKED)"
            " UPDATE watches w SET lease_owner = $1, lease_expires_at = $3,"
            f" lease_token = {_NEXT_LEASE_NUMBER} FROM due WHERE w.id = due.id"
            f" RETURNING {_W_WATCH_COLUMNS}",
            owner,
            now,
            lease_until,
            limit,
            None if upstreams is None else list(upstreams),
        )
        return sorted((sql_rows.watch(row) for row in rows), key=lambda w: w.next_poll_at)

    async def renew_watch_leases(
        self, owner: str, held: Sequence[tuple[str, int]], lease_until: float
    ) -> set[str]:
        return await self._update_held(
            f"{_HELD} UPDATE watches w SET lease_expires_at = $4"  # noqa: S608
            " FROM held WHERE w.id = held.id AND w.status = 'active' RETURNING w.id",
            owner, held, lease_until,
        )  # fmt: skip

    async def renew_delivery_leases(
        self, owner: str, held: Sequence[tuple[str, int]], lease_until: float
    ) -> set[str]:
        return await self._update_held(
            f"{_HELD_DELIVERIES}"  # noqa: S608 - constant SQL, values are parameters
            " UPDATE deliveries d SET lease_expires_at = $4 FROM held WHERE d.id = held.id"
            " RETURNING d.id",
            owner, held, lease_until,
        )  # fmt: skip

    async def release_deliveries(self, owner: str, held: Sequence[tuple[str, int]]) -> None:
        await self._update_held(
            f"{_HELD_DELIVERIES}"  # noqa: S608 - constant SQL, values are parameters
            " UPDATE deliveries d SET lease_owner = NULL, lease_expires_at = NULL"
            " FROM held WHERE d.id = held.id",
            owner, held,
        )  # fmt: skip

    async def release_watches(self, owner: str, held: Sequence[tuple[str, int]]) -> None:
        await self._update_held(
            f"{_HELD} UPDATE watches w SET lease_owner = NULL, lease_expires_at = NULL"  # noqa: S608
            " FROM held WHERE w.id = held.id",
            owner, held,
        )  # fmt: skip

    async def _update_held(
        self, sql: str, owner: str, held: Sequence[tuple[str, int]], *args: Any
    ) -> set[str]:
        """Run `sql` (`_HELD` or `_HELD_DELIVERIES`, then its update) on the rows of `held`
        (id, token) that `owner` holds, with `args` from $4; the ids it returns."""
        if not held:
            return set()
        ids, tokens = [row_id for row_id, _ in held], [token for _, token in held]
        return {row[0] for row in await self._fetch(sql, owner, ids, tokens, *args)}

    async def record_progress(
        self, owner: str, now: float, changes: Sequence[base.Progress]
    ) -> base.Recorded:
        if not changes:
            return base.Recorded(set(), 0)
        async with self._transaction() as db:
            # The fenced updates; then the events of the watches they applied to.
            rows = await db.fetch(
                f"{_HELD}, c AS (SELECT * FROM unnest($2::text[], $5::text[], $6::bigint[],"  # noqa: S608
                " $7::text[], $8::float8[])"
                " AS c (id, job_status, queue_position, last_error, next_poll_at))"
                " UPDATE watches w SET job_status = c.job_status,"
                " queue_position = c.queue_position, last_error = c.last_error,"
                " next_poll_at = c.next_poll_at, updated_at = $4"
                " FROM held JOIN c ON c.id = held.id WHERE w.id = held.id AND w.status = 'active'"
                " RETURNING w.id, w.tenant, w.callback_url",
                owner,
                [change.watch_id for change in changes],
                [change.lease_token for change in changes],
                now,
                [change.job_status for change in changes],
                [change.queue_position for change in changes],
                [_text(change.last_error) for change in changes],
                [change.next_poll_at for change in changes],
            )
            applied = {row[0]: (row[1], row[2]) for row in rows}
            recorded = [
                (*applied[change.watch_id], change.watch_id, event)
                for change in changes
                if change.watch_id in applied
                for event in change.events
            ]
            created = await _record_events(db, recorded, now, None, None) if recorded else []
        return base.Recorded({change.watch_id for change in changes} - applied.keys(), len(created))

    async def complete_watch(
        self, owner: str, now: float, completion: base.Completion, delivery_lease_until: float
    ) -> list[base.Delivery]:
        event = completion.event
        status, completed_at, outcome = rules.ending(event, now)
        async with self._transaction() as db:
            updated = await db.fetchrow(
                "UPDATE watches SET status = $7, job_status = $4, queue_position = NULL,"
                " last_error = $5, updated_at = $3, completed_at = $8, outcome = $9,"
                " lease_owner = NULL, lease_expires_at = NULL"
                " WHERE id = $1 AND lease_owner = $2 AND lease_token = $6 AND status = 'active'"
                " RETURNING tenant, callback_url",
                completion.watch_id, owner, now, completion.job_status,
                _text(completion.last_error), completion.lease_token, status, completed_at,
                outcome,
            )  # fmt: skip
            if updated is None:
                raise LeaseLost()
            ids = await _record_events(
                db, [(*updated, completion.watch_id, event)], now, owner, delivery_lease_until
            )
            rows = await db.fetch(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries d"  # noqa: S608
                " JOIN watches w ON w.id = d.watch_id"
                " LEFT JOIN subscriptions s ON s.id = d.subscription_id"
                " WHERE d.id = ANY($1::text[])",
                ids,
            )
        found = {row["id"]: _delivery(row) for row in rows}
        return [found[delivery_id] for delivery_id in ids]

    # Delivery.

    async def _claim_deliveries(
        self, owner: str, now: float, lease_until: float, limit: int, shares: base.Shares | None
    ) -> list[base.Delivery]:
        if shares is None:
            rows = await self._fetch(
                "WITH due AS (SELECT id FROM deliveries WHERE status = 'pending'"  # noqa: S608
                " AND next_attempt_at <= $2 AND (lease_owner IS NULL OR lease_expires_at <= $2)"
                f" ORDER BY next_attempt_at, id LIMIT $4 FOR NO KEY UPDATE SKIP LOCKED), {_CLAIM}",
                owner,
                now,
                lease_until,
                limit,
            )
            return [_delivery(row) for row in rows]
        async with self._transaction() as db:
            found = await db.fetch(
                _GROUPS_DUE, now, shares.per_host, json.dumps(shares.host_limits),
                shares.per_tenant, json.dumps(shares.tenant_limits),
            )  # fmt: skip
            groups = [(g[0], g[1], g[2], g[3]) for g in found]
            taken = rules.groups_taken(groups, limit)
            if not taken:
                return []
            offered = await db.fetch(
                _OFFERED, [t[0] for t in taken], [t[1] for t in taken], [t[2] for t in taken], now
            )
            ids = rules.offers_kept(groups, [(o[0], o[1], o[2], o[3]) for o in offered], limit)
            rows = await db.fetch(
                f"WITH due AS (SELECT unnest($2::text[]) AS id), {_CLAIM}",
                owner,
                ids,
                lease_until,
            )
        return [_delivery(row) for row in rows]

    async def record_attempts(self, owner: str, records: Sequence[base.AttemptRecord]) -> set[str]:
        if not records:
            return set()
        lost: set[str] = set()
        async with self._transaction() as db:
            # Watches are locked first, in id order, as every set write does (no deadlocks);
            # then the records are applied in their order (a 410 cancels what comes after it).
            await db.execute(
                "SELECT FROM watches WHERE id = ANY($1::text[]) ORDER BY id FOR NO KEY UPDATE",
                sorted({record.delivery.watch_id for record in records}),
            )
            for record in records:
                if not await _record_attempt(db, owner, record):
                    lost.add(record.delivery.id)
        return lost

    # Subscriptions.

    async def insert_subscription(self, subscription: base.Subscription) -> base.Subscription:
        await self._execute(
            f"INSERT INTO subscriptions ({sql_rows.SUBSCRIPTION_COLUMNS})"  # noqa: S608
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            *sql_rows.subscription_values(subscription),
        )
        return subscription

    async def list_subscriptions(self, tenant: str) -> list[base.Subscription]:
        rows = await self._fetch(
            f"SELECT {sql_rows.SUBSCRIPTION_COLUMNS} FROM subscriptions"  # noqa: S608
            " WHERE tenant = $1 AND status IN ('active', 'disabled') ORDER BY id",
            tenant,
        )
        return [sql_rows.subscription(row) for row in rows]

    async def get_subscription(self, tenant: str, subscription_id: str) -> base.Subscription | None:
        row = await self._fetchrow(
            f"SELECT {sql_rows.SUBSCRIPTION_COLUMNS} FROM subscriptions"  # noqa: S608
            " WHERE id = $1 AND tenant = $2",
            subscription_id,
            tenant,
        )
        return None if row is None else sql_rows.subscription(row)

    async def _change_subscription_status(
        self, tenant: str, subscription_id: str, status: base.SubscriptionStatus, now: float
    ) -> base.Subscription | None:
        async with self._transaction() as db:
            row = await db.fetchrow(
                "UPDATE subscriptions SET status = $3, updated_at = $4"  # noqa: S608
                " WHERE id = $1 AND tenant = $2 AND status IN ('active', 'disabled')"
                f" RETURNING {sql_rows.SUBSCRIPTION_COLUMNS}",
                subscription_id, tenant, status, now,
            )  # fmt: skip
            if row is None:
                return None
            if status != "active":
                await _end_subscription_deliveries(db, subscription_id, now)
        return sql_rows.subscription(row)

    async def rotate_subscription_secret(
        self, tenant: str, subscription_id: str, secret: str, previous_until: float, now: float
    ) -> base.Subscription | None:
        row = await self._fetchrow(
            "UPDATE subscriptions SET previous_secret = secret, secret = $3,"  # noqa: S608
            " previous_secret_until = $4, updated_at = $5"
            " WHERE id = $1 AND tenant = $2 AND status IN ('active', 'disabled')"
            f" RETURNING {sql_rows.SUBSCRIPTION_COLUMNS}",
            subscription_id, tenant, secret, previous_until, now,
        )  # fmt: skip
        return None if row is None else sql_rows.subscription(row)

    async def subscription_health(
        self, tenant: str, since: float
    ) -> dict[str, base.SubscriptionHealth]:
        counts = await self._fetch(subscription_health.COUNTS, tenant, since)
        errors = await self._fetch(subscription_health.ERRORS, tenant, since)
        return subscription_health.read(counts, errors)

    # Events.

    async def list_events(
        self, tenant: str, *, types: Sequence[str] | None = None, limit: int = 50
    ) -> list[base.EventRecord]:
        rows = await self._fetch(
            f"SELECT {sql_rows.EVENT_COLUMNS} FROM events e WHERE e.tenant = $1"  # noqa: S608
            " AND ($2::text[] IS NULL OR e.type = ANY($2::text[])) ORDER BY e.seq DESC LIMIT $3",
            tenant,
            None if types is None else list(types),
            limit,
        )
        return [sql_rows.event(row) for row in rows]

    async def watch_events(
        self, tenant: str, watch_id: str, *, after: str | None = None
    ) -> list[base.EventRecord]:
        rows = await self._fetch(
            f"SELECT {sql_rows.EVENT_COLUMNS} FROM events e"  # noqa: S608
            " WHERE e.watch_id = $1 AND e.tenant = $2 AND e.seq > coalesce("
            " (SELECT seq FROM events WHERE id = $3 AND watch_id = $1), 0) ORDER BY e.seq",
            watch_id,
            tenant,
            after,
        )
        return [sql_rows.event(row) for row in rows]

    # Trends.

    async def outcome_buckets(
        self, tenant: str, since: float, bucket_s: float, count: int
    ) -> list[base.OutcomeBucket]:
        window = (since, bucket_s, count, tenant, buckets.end(since, bucket_s, count))
        jobs = await self._fetch(_JOBS_PER_BUCKET, *window)
        webhooks = await self._fetch(_WEBHOOKS_ENDED, *window)
        return buckets.assemble(
            since, bucket_s, count, [tuple(row) for row in jobs], [(r[0], r[1]) for r in webhooks]
        )

    # Dashboard sign-ins.

    async def revoke_session(self, session_id: str, expires_at: float) -> None:
        await self._execute(
            "INSERT INTO revoked_sessions (id, expires_at) VALUES ($1, $2)"
            " ON CONFLICT (id) DO NOTHING",
            session_id,
            expires_at,
        )

    async def session_revoked(self, session_id: str) -> bool:
        row = await self._fetchrow("SELECT 1 FROM revoked_sessions WHERE id = $1", session_id)
        return row is not None

    # Housekeeping.

    async def purge_revoked_sessions(self, now: float) -> int:
        return _count(
            await self._execute("DELETE FROM revoked_sessions WHERE expires_at <= $1", now)
        )

    async def purge_bodies(self, completed_before: float) -> int:
        async with self._transaction() as db:
            await db.execute(
                "DELETE FROM events e USING watches w WHERE w.id = e.watch_id"
                " AND e.created_at < $1 AND w.status NOT IN ('active', 'delivering')",
                completed_before,
            )
            await db.execute(
                "UPDATE attempts SET response_body = NULL"
                " WHERE response_body IS NOT NULL AND started_at < $1",
                completed_before,
            )
            status = await db.execute(
                "UPDATE deliveries SET body = NULL WHERE body IS NOT NULL"
                " AND status IN ('succeeded', 'cancelled') AND ended_at < $1",
                completed_before,
            )
        return _count(status)

    async def count_due_deliveries(self, now: float) -> int:
        rows = await self._fetch(
            "SELECT count(*) FROM deliveries WHERE status = 'pending' AND next_attempt_at <= $1"
            " AND (lease_owner IS NULL OR lease_expires_at <= $1)",
            now,
        )
        return int(rows[0][0])

    async def count_watches(self, tenant: str | None = None) -> dict[str, int]:
        rows = await self._fetch(
            "SELECT status, count(*) FROM watches WHERE $1::text IS NULL OR tenant = $1"
            " GROUP BY status",
            tenant,
        )
        counts: dict[str, int] = dict.fromkeys(base.WATCH_STATUSES, 0)
        counts.update((row[0], row[1]) for row in rows)
        return counts

    async def count_active_by_upstream(self) -> dict[str, int]:
        rows = await self._fetch(
            "SELECT upstream, count(*) FROM watches WHERE status = 'active' GROUP BY upstream"
        )
        return {row[0]: row[1] for row in rows}

    async def count_outcomes(
        self, tenant: str
    ) -> dict[tuple[base.WatchStatus, base.JobOutcome], int]:
        rows = await self._fetch(
            "SELECT status, outcome, count(*) FROM watches WHERE tenant = $1"
            " GROUP BY status, outcome",
            tenant,
        )
        return {(row[0], row[1]): row[2] for row in rows}


# The queries of `sqlite._JOBS_PER_BUCKET` and `sqlite._WEBHOOKS_ENDED` (see there).
_JOBS_PER_BUCKET = (
    "SELECT least(floor((e.created_at - $1) / $2)::int, $3 - 1) AS b,"
    " count(*) FILTER (WHERE w.outcome = 'succeeded'),"
    " count(*) FILTER (WHERE w.outcome = 'timed_out'), count(*)"
    " FROM events e JOIN watches w ON w.id = e.watch_id"
    " WHERE e.tenant = $4 AND e.final AND e.created_at >= $1 AND e.created_at < $5"
    " GROUP BY b"
)
_WEBHOOKS_ENDED = (
    "SELECT least(floor((ended_at - $1) / $2)::int, $3 - 1),"
    " CASE WHEN status = 'succeeded' THEN ended_at - created_at END"
    " FROM deliveries WHERE tenant = $4 AND final AND subscription_id IS NULL"
    " AND status IN ('succeeded', 'failed', 'gone') AND ended_at >= $1 AND ended_at < $5"
)


async def _record_attempt(db: Any, owner: str, record: base.AttemptRecord) -> bool:
    """Apply one fenced attempt record (see `rules.effect`) in the caller's transaction; False:
    the lease was lost."""
    delivery, attempt, now = record.delivery, record.attempt, record.now
    answer = attempt.response
    effect = rules.effect(record)
    # The watch is locked (in `w`) before the delivery is updated.
    recorded = await db.fetchval(
        "WITH w AS (SELECT id FROM watches WHERE id = $1 FOR NO KEY UPDATE),"
        " d AS (UPDATE deliveries d SET attempts = d.attempts + 1, status = $5,"
        " next_attempt_at = $6, ended_at = $7, lease_owner = NULL, lease_expires_at = NULL"
        " FROM w WHERE d.id = $2 AND d.watch_id = w.id AND d.lease_owner = $3"
        " AND d.lease_token = $4 AND d.status = 'pending' RETURNING d.id, d.series)"
        " INSERT INTO attempts (delivery_id, number, event_type, started_at, duration_s,"
        " status_code, error, next_attempt_at, verdict, response_body, response_size,"
        " response_truncated, response_type, series)"
        " SELECT id, $8, $9, $10, $11, $12, $13, $6, $14, $15, $16, $17, $18, series FROM d"
        " RETURNING true",
        delivery.watch_id, delivery.id, owner, delivery.lease_token, effect.status,
        attempt.next_attempt_at, effect.ended_at, attempt.number, attempt.event_type,
        attempt.started_at, attempt.duration_s, attempt.status_code, _text(attempt.error),
        attempt.verdict,
        *((None,) * 4 if answer is None else (
            _text(answer.body), answer.size, answer.truncated, _text(answer.content_type)
        )),
    )  # fmt: skip
    if not recorded:
        return False
    if effect.subscription_gone is not None:
        await db.execute(
            "UPDATE subscriptions SET status = 'gone', updated_at = $2"
            " WHERE id = $1 AND status = 'active'",
            effect.subscription_gone,
            now,
        )
        await _end_subscription_deliveries(db, effect.subscription_gone, now)
    if effect.counted:
        await db.execute(
            "UPDATE watches SET attempts = attempts + 1, updated_at = $2,"
            " last_error = CASE WHEN status = 'delivering' THEN COALESCE($1, last_error)"
            " ELSE last_error END,"
            " status = CASE WHEN status = 'delivering' THEN COALESCE($3, status) ELSE status END,"
            " completed_at = CASE WHEN status = 'delivering' THEN $4 ELSE completed_at END"
            " WHERE id = $5",
            _text(attempt.error), now, effect.watch_status, effect.ended_at, delivery.watch_id,
        )  # fmt: skip
    else:
        await db.execute(
            "UPDATE watches SET attempts = attempts + 1, updated_at = $2 WHERE id = $1",
            delivery.watch_id,
            now,
        )
    if effect.watch_gone:
        await db.execute(
            "WITH w AS (UPDATE watches SET status = 'gone', updated_at = $2,"
            " completed_at = $2, lease_owner = NULL, lease_expires_at = NULL"
            " WHERE id = $1 AND status = ANY($3::text[]))"
            " UPDATE deliveries SET status = 'cancelled', ended_at = $2,"
            " lease_owner = NULL, lease_expires_at = NULL"
            " WHERE watch_id = $1 AND status = 'pending' AND subscription_id IS NULL",
            delivery.watch_id,
            now,
            list(rules.LIVE),
        )
    return True


async def _end_subscription_deliveries(db: Any, subscription_id: str, now: float) -> None:
    """Cancel the pending deliveries of a subscription that just left `active`. A statement of
    its own, after the one that changed the subscription: its snapshot sees the deliveries of
    every fan-out that held the subscription (`FOR SHARE`) while that one waited."""
    await db.execute(
        "UPDATE deliveries SET status = 'cancelled', ended_at = $2, lease_owner = NULL,"
        " lease_expires_at = NULL WHERE subscription_id = $1 AND status = 'pending'",
        subscription_id,
        now,
    )


async def _record_events(
    db: Any,
    recorded: Sequence[tuple[str, str, str, base.NewEvent]],
    now: float,
    owner: str | None,
    lease_until: float | None,
) -> list[str]:
    """Insert (tenant, callback URL, watch id, event) events, their callback deliveries and a
    delivery per matching active subscription, each with its endpoint's host key, claimed by
    `owner` when given, in the caller's transaction (which holds the watches); the delivery
    ids, each event's callback first. An event recorded already is skipped with its deliveries.

    The tenants' subscriptions are read once, locked `FOR SHARE`: a subscription leaving
    `active` meanwhile waits for this commit and then cancels what it got, or, having committed
    first, is no longer matched."""
    tenants = sorted({tenant for tenant, _, _, _ in recorded})
    rows = await db.fetch(
        "SELECT id, tenant, events, url FROM subscriptions WHERE tenant = ANY($1::text[])"
        " AND status = 'active' ORDER BY id FOR SHARE",
        tenants,
    )
    subscriptions: dict[str, list[rules.Endpoint]] = {}
    for row in rows:
        subscriptions.setdefault(row[1], []).append(rules.Endpoint.of(row[0], row[2], row[3]))
    # The rows to insert, in the order of their `unnest`'s columns.
    events = [
        (e.id, tenant, watch_id, e.type, e.final, e.body) for tenant, _, watch_id, e in recorded
    ]
    deliveries = [
        (new.delivery.id, watch_id, event.type, new.delivery.body, event.final,
         new.subscription_id, event.id, new.host, tenant)
        for tenant, callback_url, watch_id, event in recorded
        for new in rules.fan_out(event, callback_url, subscriptions.get(tenant, ()), now)
    ]  # fmt: skip
    inserted = await db.fetch(
        "WITH e AS (INSERT INTO events (id, tenant, watch_id, type, final, body, created_at)"
        " SELECT *, $7::float8 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],"
        " $5::boolean[], $6::bytea[]) ON CONFLICT (id) DO NOTHING RETURNING id)"
        " INSERT INTO deliveries (id, watch_id, event_type, body, final, status,"
        " next_attempt_at, created_at, lease_owner, lease_expires_at, lease_token,"
        " subscription_id, event_id, host, tenant)"
        " SELECT n.id, n.watch_id, n.event_type, n.body, n.final, 'pending', $7, $7, $8::text,"
        " $9::float8,"
        " CASE WHEN $8::text IS NULL THEN 0 ELSE 1 END, n.subscription_id, n.event_id, n.host,"
        " n.tenant FROM unnest($10::text[], $11::text[], $12::text[], $13::bytea[],"
        " $14::boolean[], $15::text[], $16::text[], $17::text[], $18::text[])"
        " AS n (id, watch_id, event_type, body, final, subscription_id, event_id, host, tenant)"
        " WHERE n.event_id IN (SELECT id FROM e) RETURNING id",
        *_arrays(events, 6),
        now,
        owner,
        lease_until,
        *_arrays(deliveries, 9),
    )
    created = {row[0] for row in inserted}
    return [row[0] for row in deliveries if row[0] in created]


def _arrays(rows: Sequence[tuple[object, ...]], width: int) -> list[list[object]]:
    """`rows` of `width` values as one array per column: the parameters of an `unnest`."""
    return [[row[i] for row in rows] for i in range(width)]


def _dropped(connection: Any) -> bool:
    """Whether the server dropped a pooled connection: asyncpg hands a closed connection back
    to its pool at once, after which the pool's proxy refuses every call."""
    try:
        closed: bool = connection.is_closed()
    except asyncpg.InterfaceError:
        return True
    return closed


def _where(tenant: str, filters: base.WatchFilter) -> tuple[str, list[object]]:
    """The WHERE clause of a listing of watches and its parameters ($1 on)."""
    clauses, params = ["tenant = $1"], list[object]([tenant])
    for column, value in rules.compared(filters):
        params.append(value)
        clauses.append(f"{column} ${len(params)}")
    if filters.job_id_prefix:
        # Job ids hold no LIKE wildcard but `_`; the text_pattern_ops index (migration 9)
        # answers this as a range whatever the database's collation.
        params.append(filters.job_id_prefix.replace("_", "\\_") + "%")
        clauses.append(f"job_id LIKE ${len(params)}")
    if filters.delivery is not None:
        statuses, outcomes = zip(*rules.delivery_pairs(filters.delivery), strict=True)
        params += [list(statuses), list(outcomes)]
        clauses.append(
            f"(status, outcome) IN (SELECT * FROM unnest(${len(params) - 1}::text[],"  # noqa: S608
            f" ${len(params)}::text[]))"
        )
    if filters.metadata is not None:
        key, value = filters.metadata
        # Containment of {key: value} for each value the search matches (no index: the
        # tenant's other filters narrow the rows first).
        ors = []
        for wanted in rules.metadata_values(value):
            params.append(json.dumps({key: wanted}))
            ors.append(f"metadata::jsonb @> ${len(params)}::jsonb")
        clauses.append(f"({' OR '.join(ors)})")
    return " AND ".join(clauses), params
