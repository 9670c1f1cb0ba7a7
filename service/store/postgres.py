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
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg

from service.errors import LeaseLost, MigrationError, StoreError
from service.store import migrations
from service.store.base import (
    HOST_SQL_PG,
    WATCH_STATUSES,
    Attempt,
    AttemptOutcome,
    AttemptRecord,
    Completion,
    Delivery,
    DuplicateIdempotencyKey,
    Idempotency,
    Progress,
    Store,
    Watch,
)

CONNECT_TIMEOUT_S = 10.0
# Held while migrating: replicas starting together apply each migration once, one after another.
# One key for the whole database (every schema): migrations are rare and short.
_MIGRATION_LOCK = 0x7765_6268_6F6F_6B  # "webhook"
# Driver errors, translated into StoreError (ConnectionError and TimeoutError are OSErrors).
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)

_WATCH_FIELDS = (
    "id", "tenant", "job_id", "callback_url", "callback_method", "callback_headers", "metadata",
    "events", "payload_format", "secret", "poll_interval_s", "timeout_s", "upstream_api_key",
    "created_at", "status", "job_status", "queue_position", "attempts", "last_error", "updated_at",
    "completed_at", "next_poll_at", "lease_token",
)  # fmt: skip
_WATCH_COLUMNS = ", ".join(_WATCH_FIELDS)
_W_WATCH_COLUMNS = ", ".join(f"w.{name}" for name in _WATCH_FIELDS)
_DELIVERY_COLUMNS = (
    "d.id, d.watch_id, d.event_type, d.body, d.final, d.attempts, d.lease_token,"
    " w.callback_url, w.callback_method, w.callback_headers, w.secret, d.created_at"
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
_ENDS_WATCH = {"succeeded": "delivered", "failed": "failed", "gone": "gone"}


def _watch(row: Any) -> Watch:
    return Watch(**{**row, "events": tuple(row["events"])})


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


class PostgresStore(Store):
    def __init__(
        self, url: str, *, pool_min: int = 1, pool_max: int = 10, schema: str | None = None
    ) -> None:
        self._url = url
        self.schema = schema
        self.pool_min = pool_min
        self.pool_max = pool_max
        self._pool: Any = None
        parts = urlsplit(url)
        # host:port/db for messages; never the user info, which may hold a password.
        self.where = parts.netloc.rpartition("@")[2] + parts.path
        self._secrets = {s for s in (parts.password, unquote(parts.password or "")) if s}

    # Plumbing.

    def _describe(self, error: BaseException) -> str:
        text = str(error) or type(error).__name__
        for secret in self._secrets:
            text = text.replace(secret, "********")
        return text

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        pool = self._pool
        if pool is None:
            raise StoreError("the store is not open")
        try:
            async with pool.acquire() as connection:
                yield connection
        except _DRIVER_ERRORS as error:
            raise StoreError(f"PostgreSQL at {self.where}: {self._describe(error)}") from error

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Any]:
        async with self._connection() as connection, connection.transaction():
            yield connection

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        async with self._connection() as connection:
            rows: list[Any] = await connection.fetch(sql, *args)
        return rows

    async def _fetchrow(self, sql: str, *args: Any) -> Any:
        async with self._connection() as connection:
            return await connection.fetchrow(sql, *args)

    async def _execute(self, sql: str, *args: Any) -> str:
        async with self._connection() as connection:
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

    async def ping(self) -> None:
        await self._execute("SELECT 1")

    # Registration and reading.

    async def insert_watch(
        self,
        watch: Watch,
        idempotency: Idempotency | None = None,
        *,
        lease_owner: str | None = None,
        lease_until: float = 0.0,
    ) -> Watch:
        token = 1 if lease_owner else 0
        values = (
            watch.id, watch.tenant, watch.job_id, watch.callback_url, watch.callback_method,
            watch.callback_headers, watch.metadata, list(watch.events), watch.payload_format,
            watch.secret, watch.poll_interval_s, watch.timeout_s, watch.upstream_api_key,
            watch.created_at, watch.status, watch.next_poll_at,
            lease_owner, lease_until if lease_owner else None, token,
        )  # fmt: skip
        insert = (
            "INSERT INTO watches (id, tenant, job_id, callback_url, callback_method,"
            " callback_headers, metadata, events, payload_format, secret, poll_interval_s,"
            " timeout_s, upstream_api_key, created_at, status, updated_at, next_poll_at,"
            " lease_owner, lease_expires_at, lease_token)"
            " SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $14, $16,"
            " $17, $18, $19"
        )
        if idempotency is None:
            await self._execute(insert, *values)
        else:
            # One statement: the key is inserted unless the tenant used it, the watch only with it.
            status = await self._execute(
                "WITH key AS (INSERT INTO idempotency_keys (tenant, key, request_hash, response,"  # noqa: S608
                " watch_id, created_at) VALUES ($2, $20, $21, $22, $1, $14)"
                " ON CONFLICT (tenant, key) DO NOTHING RETURNING 1) "
                f"{insert} WHERE EXISTS (SELECT FROM key)",
                *values, idempotency.key, idempotency.request_hash, idempotency.response,
            )  # fmt: skip
            if not _count(status):
                raise DuplicateIdempotencyKey()
        return replace(watch, updated_at=watch.created_at, lease_token=token)

    async def find_idempotency(self, tenant: str, key: str) -> Idempotency | None:
        row = await self._fetchrow(
            "SELECT key, request_hash, response FROM idempotency_keys"
            " WHERE tenant = $1 AND key = $2",
            tenant,
            key,
        )
        return None if row is None else Idempotency(*row)

    async def get_watch(self, tenant: str, watch_id: str) -> Watch | None:
        row = await self._fetchrow(
            f"SELECT {_WATCH_COLUMNS} FROM watches WHERE id = $1 AND tenant = $2",  # noqa: S608
            watch_id,
            tenant,
        )
        return None if row is None else _watch(row)

    async def list_watches(
        self,
        tenant: str,
        *,
        status: str | None = None,
        job_id: str | None = None,
        before_id: str | None = None,
        limit: int = 50,
    ) -> list[Watch]:
        clauses, params = ["tenant = $1"], [tenant]
        for column, value in (("status =", status), ("job_id =", job_id), ("id <", before_id)):
            if value is not None:
                params.append(value)
                clauses.append(f"{column} ${len(params)}")
        sql = (
            f"SELECT {_WATCH_COLUMNS} FROM watches WHERE {' AND '.join(clauses)}"  # noqa: S608
            f" ORDER BY id DESC LIMIT ${len(params) + 1}"
        )
        return [_watch(row) for row in await self._fetch(sql, *params, limit)]

    async def cancel_watch(self, tenant: str, watch_id: str, now: float) -> Watch | None:
        row = await self._fetchrow(
            "WITH w AS (UPDATE watches SET status = 'cancelled', updated_at = $3,"  # noqa: S608
            " completed_at = $3, lease_owner = NULL, lease_expires_at = NULL"
            " WHERE id = $1 AND tenant = $2 AND status IN ('active', 'delivering')"
            f" RETURNING {_WATCH_COLUMNS}),"
            " pending AS (UPDATE deliveries SET status = 'cancelled', ended_at = $3,"
            " lease_owner = NULL, lease_expires_at = NULL"
            " WHERE watch_id IN (SELECT id FROM w) AND status = 'pending')"
            " SELECT * FROM w",
            watch_id,
            tenant,
            now,
        )
        return await self.get_watch(tenant, watch_id) if row is None else _watch(row)

    async def redeliver(self, tenant: str, watch_id: str, now: float) -> Watch | None:
        row = await self._fetchrow(
            "WITH ended AS (SELECT id FROM watches WHERE id = $1 AND tenant = $2"  # noqa: S608
            " AND status IN ('delivered', 'failed', 'gone') FOR NO KEY UPDATE),"
            " final AS (UPDATE deliveries SET status = 'pending', attempts = 0,"
            " next_attempt_at = $3, ended_at = NULL, lease_owner = NULL, lease_expires_at = NULL"
            " WHERE watch_id IN (SELECT id FROM ended) AND final AND body IS NOT NULL"
            " RETURNING watch_id)"
            " UPDATE watches w SET status = 'delivering', attempts = 0, updated_at = $3,"
            " completed_at = NULL WHERE w.id IN (SELECT watch_id FROM final)"
            f" RETURNING {_W_WATCH_COLUMNS}",
            watch_id,
            tenant,
            now,
        )
        return await self.get_watch(tenant, watch_id) if row is None else _watch(row)

    async def list_attempts(self, tenant: str, watch_id: str) -> list[Attempt]:
        rows = await self._fetch(
            "SELECT a.delivery_id, a.event_type, a.number, a.started_at, a.duration_s,"
            " a.status_code, a.error, a.next_attempt_at FROM attempts a"
            " JOIN deliveries d ON d.id = a.delivery_id JOIN watches w ON w.id = d.watch_id"
            " WHERE w.id = $1 AND w.tenant = $2 ORDER BY a.started_at, a.seq",
            watch_id,
            tenant,
        )
        return [Attempt(*row) for row in rows]

    # Polling.

    async def claim_watches(
        self, owner: str, now: float, lease_until: float, limit: int
    ) -> list[Watch]:
        rows = await self._fetch(
            "WITH due AS (SELECT id FROM watches WHERE status = 'active'"  # noqa: S608
            " AND (lease_owner IS NULL OR lease_expires_at <= $2)"
            " ORDER BY next_poll_at LIMIT $4 FOR NO KEY UPDATE SKIP LOCKED)"
            " UPDATE watches w SET lease_owner = $1, lease_expires_at = $3,"
            " lease_token = w.lease_token + 1 FROM due WHERE w.id = due.id"
            f" RETURNING {_W_WATCH_COLUMNS}",
            owner,
            now,
            lease_until,
            limit,
        )
        return sorted((_watch(row) for row in rows), key=lambda w: w.next_poll_at)

    async def renew_watch_leases(
        self, owner: str, held: Sequence[tuple[str, int]], lease_until: float
    ) -> set[str]:
        if not held:
            return set()
        rows = await self._fetch(
            f"{_HELD} UPDATE watches w SET lease_expires_at = $4"  # noqa: S608
            " FROM held WHERE w.id = held.id AND w.status = 'active' RETURNING w.id",
            owner,
            [watch_id for watch_id, _ in held],
            [token for _, token in held],
            lease_until,
        )
        return {row[0] for row in rows}

    async def renew_delivery_leases(
        self, owner: str, held: Sequence[tuple[str, int]], lease_until: float
    ) -> set[str]:
        if not held:
            return set()
        rows = await self._fetch(
            f"{_HELD_DELIVERIES}"  # noqa: S608 - constant SQL, values are parameters
            " UPDATE deliveries d SET lease_expires_at = $4 FROM held WHERE d.id = held.id"
            " RETURNING d.id",
            owner,
            [delivery_id for delivery_id, _ in held],
            [token for _, token in held],
            lease_until,
        )
        return {row[0] for row in rows}

    async def release_deliveries(self, owner: str, held: Sequence[tuple[str, int]]) -> None:
        if not held:
            return
        await self._execute(
            f"{_HELD_DELIVERIES}"  # noqa: S608 - constant SQL, values are parameters
            " UPDATE deliveries d SET lease_owner = NULL, lease_expires_at = NULL"
            " FROM held WHERE d.id = held.id",
            owner,
            [delivery_id for delivery_id, _ in held],
            [token for _, token in held],
        )

    async def release_watches(self, owner: str, held: Sequence[tuple[str, int]]) -> None:
        if not held:
            return
        await self._execute(
            f"{_HELD} UPDATE watches w SET lease_owner = NULL, lease_expires_at = NULL"  # noqa: S608
            " FROM held WHERE w.id = held.id",
            owner,
            [watch_id for watch_id, _ in held],
            [token for _, token in held],
        )

    async def record_progress(
        self, owner: str, now: float, changes: Sequence[Progress]
    ) -> set[str]:
        if not changes:
            return set()
        news = [(change.watch_id, new) for change in changes for new in change.deliveries]
        # One statement: the fenced updates, then the deliveries of the watches they applied to.
        rows = await self._fetch(
            f"{_HELD}, c AS (SELECT * FROM unnest($2::text[], $5::text[], $6::bigint[],"  # noqa: S608
            " $7::text[], $8::float8[])"
            " AS c (id, job_status, queue_position, last_error, next_poll_at)),"
            " applied AS (UPDATE watches w SET job_status = c.job_status,"
            " queue_position = c.queue_position, last_error = c.last_error,"
            " next_poll_at = c.next_poll_at, updated_at = $4"
            " FROM held JOIN c ON c.id = held.id WHERE w.id = held.id AND w.status = 'active'"
            " RETURNING w.id),"
            " inserted AS (INSERT INTO deliveries (id, watch_id, event_type, body, final, status,"
            " next_attempt_at, created_at)"
            " SELECT n.id, n.watch_id, n.event_type, n.body, n.final, 'pending', $4, $4"
            " FROM unnest($9::text[], $10::text[], $11::text[], $12::bytea[], $13::boolean[])"
            " AS n (id, watch_id, event_type, body, final)"
            " WHERE n.watch_id IN (SELECT id FROM applied))"
            " SELECT id FROM applied",
            owner,
            [change.watch_id for change in changes],
            [change.lease_token for change in changes],
            now,
            [change.job_status for change in changes],
            [change.queue_position for change in changes],
            [_text(change.last_error) for change in changes],
            [change.next_poll_at for change in changes],
            [new.id for _, new in news],
            [watch_id for watch_id, _ in news],
            [new.event_type for _, new in news],
            [new.body for _, new in news],
            [new.final for _, new in news],
        )
        return {change.watch_id for change in changes} - {row[0] for row in rows}

    async def complete_watch(
        self, owner: str, now: float, completion: Completion, delivery_lease_until: float
    ) -> Delivery:
        new = completion.delivery
        row = await self._fetchrow(
            "WITH w AS (UPDATE watches SET status = 'delivering', job_status = $4,"
            " queue_position = NULL, last_error = $5, updated_at = $3, lease_owner = NULL,"
            " lease_expires_at = NULL"
            " WHERE id = $1 AND lease_owner = $2 AND lease_token = $6 AND status = 'active'"
            " RETURNING id, callback_url, callback_method, callback_headers, secret),"
            " d AS (INSERT INTO deliveries (id, watch_id, event_type, body, final, status,"
            " next_attempt_at, created_at, lease_owner, lease_expires_at, lease_token)"
            " SELECT $7, id, $8, $9, $10, 'pending', $3, $3, $2, $11, 1 FROM w)"
            " SELECT callback_url, callback_method, callback_headers, secret FROM w",
            completion.watch_id, owner, now, completion.job_status, _text(completion.last_error),
            completion.lease_token, new.id, new.event_type, new.body, new.final,
            delivery_lease_until,
        )  # fmt: skip
        if row is None:
            raise LeaseLost()
        return Delivery(
            id=new.id,
            watch_id=completion.watch_id,
            event_type=new.event_type,
            body=new.body,
            final=new.final,
            attempts=0,
            lease_token=1,
            created_at=now,
            **row,
        )

    # Delivery.

    async def claim_deliveries(
        self,
        owner: str,
        now: float,
        lease_until: float,
        limit: int,
        *,
        per_host: int | None = None,
        host_limits: Mapping[str, int] | None = None,
    ) -> list[Delivery]:
        if per_host is None and not host_limits:
            due = (
                "SELECT id FROM deliveries WHERE status = 'pending'"
                " AND next_attempt_at <= $2 AND (lease_owner IS NULL OR lease_expires_at <= $2)"
                " ORDER BY next_attempt_at LIMIT $4 FOR NO KEY UPDATE SKIP LOCKED"
            )
            args: tuple[Any, ...] = ()
        else:
            # The candidates are locked; those not chosen are unlocked at commit.
            due = (
                "WITH c AS (SELECT d.id, d.next_attempt_at AS at,"  # noqa: S608
                f" {HOST_SQL_PG} AS host FROM deliveries d JOIN watches w ON w.id = d.watch_id"
                " WHERE d.status = 'pending' AND d.next_attempt_at <= $2"
                " AND (d.lease_owner IS NULL OR d.lease_expires_at <= $2)"
                f" AND NOT ({HOST_SQL_PG} = ANY($5::text[]))"
                " ORDER BY d.next_attempt_at LIMIT $6 FOR NO KEY UPDATE OF d SKIP LOCKED)"
                " SELECT id FROM (SELECT id, at, host,"
                " row_number() OVER (PARTITION BY host ORDER BY at, id) AS n FROM c) r"
                " WHERE n <= coalesce(($8::jsonb ->> host)::int, $7) ORDER BY at, id LIMIT $4"
            )
            limits = dict(host_limits or {})
            skipped = sorted(host for host, most in limits.items() if most <= 0)
            args = (
                skipped, 4 * limit, per_host if per_host is not None else limit,
                json.dumps(limits),
            )  # fmt: skip
        rows = await self._fetch(
            f"WITH due AS ({due}),"  # noqa: S608
            " d AS (UPDATE deliveries d SET lease_owner = $1, lease_expires_at = $3,"
            " lease_token = d.lease_token + 1 FROM due WHERE d.id = due.id RETURNING d.*)"
            f" SELECT {_DELIVERY_COLUMNS} FROM d JOIN watches w ON w.id = d.watch_id"
            " ORDER BY d.next_attempt_at, d.id",
            owner,
            now,
            lease_until,
            limit,
            *args,
        )
        return [Delivery(**row) for row in rows]

    async def record_attempt(
        self,
        owner: str,
        delivery: Delivery,
        attempt: Attempt,
        outcome: AttemptOutcome,
        now: float,
    ) -> None:
        async with self._transaction() as db:
            if not await _record_attempt(db, owner, AttemptRecord(delivery, attempt, outcome, now)):
                raise LeaseLost()

    async def record_attempts(self, owner: str, records: Sequence[AttemptRecord]) -> set[str]:
        if not records:
            return set()
        lost: set[str] = set()
        async with self._transaction() as db:
            # Watches are locked in id order, as every set write does (no deadlocks); records of
            # one watch keep their order (the sort is stable).
            for record in sorted(records, key=lambda r: r.delivery.watch_id):
                if not await _record_attempt(db, owner, record):
                    lost.add(record.delivery.id)
        return lost

    # Housekeeping.

    async def purge_bodies(self, completed_before: float) -> int:
        status = await self._execute(
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
        counts: dict[str, int] = dict.fromkeys(WATCH_STATUSES, 0)
        counts.update((row[0], row[1]) for row in rows)
        return counts


async def _record_attempt(db: Any, owner: str, record: AttemptRecord) -> bool:
    """Apply one fenced attempt record (see `Store.record_attempt`) in the caller's
    transaction; False: the lease was lost."""
    delivery, attempt, outcome, now = record.delivery, record.attempt, record.outcome, record.now
    ended = outcome != "retry"
    # The watch is locked (in `w`) before the delivery is updated.
    recorded = await db.fetchval(
        "WITH w AS (SELECT id FROM watches WHERE id = $1 FOR NO KEY UPDATE),"
        " d AS (UPDATE deliveries d SET attempts = d.attempts + 1, status = $5,"
        " next_attempt_at = $6, ended_at = $7, lease_owner = NULL, lease_expires_at = NULL"
        " FROM w WHERE d.id = $2 AND d.watch_id = w.id AND d.lease_owner = $3"
        " AND d.lease_token = $4 AND d.status = 'pending' RETURNING d.id)"
        " INSERT INTO attempts (delivery_id, number, event_type, started_at, duration_s,"
        " status_code, error, next_attempt_at)"
        " SELECT id, $8, $9, $10, $11, $12, $13, $6 FROM d RETURNING true",
        delivery.watch_id, delivery.id, owner, delivery.lease_token,
        outcome if ended else "pending", attempt.next_attempt_at, now if ended else None,
        attempt.number, attempt.event_type, attempt.started_at, attempt.duration_s,
        attempt.status_code, _text(attempt.error),
    )  # fmt: skip
    if not recorded:
        return False
    if delivery.final:
        status = _ENDS_WATCH.get(outcome)
        await db.execute(
            "UPDATE watches SET attempts = attempts + 1,"
            " last_error = COALESCE($1, last_error), updated_at = $2,"
            " status = COALESCE($3, status), completed_at = $4"
            " WHERE id = $5 AND status = 'delivering'",
            _text(attempt.error), now, status, now if status else None, delivery.watch_id,
        )  # fmt: skip
    if outcome == "gone":
        await db.execute(
            "WITH w AS (UPDATE watches SET status = 'gone', updated_at = $2,"
            " completed_at = $2, lease_owner = NULL, lease_expires_at = NULL"
            " WHERE id = $1 AND status IN ('active', 'delivering'))"
            " UPDATE deliveries SET status = 'cancelled', ended_at = $2,"
            " lease_owner = NULL, lease_expires_at = NULL"
            " WHERE watch_id = $1 AND status = 'pending'",
            delivery.watch_id,
            now,
        )
    return True
