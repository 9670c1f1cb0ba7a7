"""SQLite backend: the single-process default. See `base.Store` for the contract.

One connection, owned by one worker thread: every call runs as a single function there, so a
transaction costs one thread hop and calls are serialized without locks. An advisory file lock
keeps a second process off the same database.

Registrations are group-committed: `insert_watch` calls that arrive while the thread is busy
(a commit's fsync, say) wait in a queue, and the next turn of the thread commits all of them
in one transaction, so one fsync covers the whole group. Each one has its own savepoint: one
that fails (a duplicate idempotency key) is rolled back alone and gets its own error.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from service.clock import SystemClock
from service.errors import LeaseLost, MigrationError, StoreError, StoreLocked, StoreUnavailable
from service.store import (
    base,
    buckets,
    migrations,
    rules,
    sql_rows,
    sqlite_outcomes,
    subscription_health,
)
from service.store.health import StoreHealth
from service.store.serial_thread import SerialThread, settle

T = TypeVar("T")

# A subscription delivery is sent as the subscription says (`s` is left-joined).
_DELIVERY_FROM = (
    "deliveries d JOIN watches w ON w.id = d.watch_id"
    " LEFT JOIN subscriptions s ON s.id = d.subscription_id"
)
# Deliveries by id (a JSON array of them), read as one JSON array of rows in `Delivery`'s field
# order (the body in hex, the headers and final statuses as JSON in it): a statement's every
# step hands the GIL to this thread and back, one step per row made reading a claim the event
# loop's busiest interrupter (see sqlite_outcomes).
_DELIVERIES_BY_ID = (
    "SELECT json_group_array(json_array(d.id, d.watch_id, d.event_type, hex(d.body),"  # noqa: S608
    " d.final, d.attempts, d.lease_token, coalesce(s.url, w.callback_url),"
    " iif(s.id IS NULL, w.callback_method, 'POST'), json(coalesce(s.headers, w.callback_headers)),"
    " coalesce(s.secret, w.secret), d.created_at, d.subscription_id, d.event_id,"
    " json(coalesce(s.final_statuses, w.final_statuses)), d.tenant,"
    " coalesce(s.previous_secret, ''), s.previous_secret_until, d.series))"
    f" FROM {_DELIVERY_FROM} WHERE d.id IN (SELECT value FROM json_each(?))"
)
# Prepared statements the connection keeps (Python's default is 128): the store's own, and the
# five outcome statements' texts for each group size (service/store/sqlite_outcomes.py).
STATEMENTS = 128 + 5 * sqlite_outcomes.MOST
# Leases renewed per transaction: a few milliseconds of the thread each.
RENEWAL_CHUNK = 1000
# The token a claim by ? gives: kept when it takes back a lease of its own that ran out while it
# still held the work (a store outage), so its writes under way still count; raised otherwise.
_NEXT_LEASE_NUMBER = "CASE WHEN lease_owner = ? THEN lease_token ELSE lease_token + 1 END"
# The status in which a leased row's lease may be renewed.
_LEASED_WHILE = {"watches": "active", "deliveries": "pending"}
# SQLite's primary result codes that say the database cannot be used for now rather than that
# a statement is wrong: a full disk or database, an I/O error, a read-only or unopenable file,
# another connection holding the write lock past busy_timeout.
_UNAVAILABLE = frozenset(
    {sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY,
     sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_BUSY}
)  # fmt: skip
# The probe of `ping(write=True)`, run twice in one transaction: the last migration's row
# changed and changed back, the smallest commit that needs room on disk (a row rewritten with
# the same bytes writes nothing).
_WRITE_PROBE = (
    "UPDATE schema_migrations SET applied_at = -applied_at"
    " WHERE version = (SELECT max(version) FROM schema_migrations)"
)


def _store_error(error: sqlite3.Error, path: str) -> StoreError:
    """A driver error as the store's: `StoreUnavailable` when the database cannot be used for
    now. Reads may still work then, so each counts as writes refused."""
    # Errors of the sqlite3 module itself (a closed connection) have no SQLite result code.
    if getattr(error, "sqlite_errorcode", 0) & 0xFF in _UNAVAILABLE:
        return StoreUnavailable(f"SQLite database {path}: {error}", refusing_writes=True)
    return StoreError(f"sqlite: {error}")


class SQLiteStore(base.Store):
    def __init__(self, path: str, *, health: StoreHealth | None = None) -> None:
        self.path = path
        self.health = health or StoreHealth(SystemClock())
        self._thread = SerialThread("sqlite")
        self._db: sqlite3.Connection | None = None
        self._lock_file: int | None = None
        # Registrations waiting for the next group commit, and whether one is queued on the
        # thread (it takes the whole list when it starts). Shared by the loop and the thread.
        self._registrations: list[_Registration] = []
        self._registrations_lock = threading.Lock()
        self._commit_queued = False

    # Plumbing.

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> tuple[T, bool]:
            db = self._db
            if db is None:  # closed while this call was queued
                raise StoreError("the store is not open")
            changes = db.total_changes
            try:
                result = fn(db)
            except sqlite3.Error as error:
                raise _store_error(error, self.path) from error
            # Rows changed and no error: what `fn` wrote is committed (or will be, with the
            # rest of its transaction, which reports its own outcome).
            return result, db.total_changes != changes

        if self._db is None:
            raise StoreError("the store is not open")
        try:
            result, wrote = await self._thread.call(call)
        except StoreUnavailable as error:
            self.health.failed(error)
            raise
        self.health.succeeded(wrote=wrote)
        return result

    async def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def transact(db: sqlite3.Connection) -> T:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(db)
            except BaseException:
                # SQLite rolls back by itself after some errors (a full disk mid-statement).
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result

        return await self._run(transact)

    async def _fetchall(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        return await self._run(lambda db: db.execute(sql, params).fetchall())

    async def _fetchone(self, sql: str, params: Sequence[object] = ()) -> Any:
        return await self._run(lambda db: db.execute(sql, params).fetchone())

    async def _write(self, sql: str, params: Sequence[object]) -> int:
        """Run one statement in a transaction of its own; the rows it changed."""
        return await self._transaction(lambda db: db.execute(sql, params).rowcount)

    def _connect(self) -> None:
        if sqlite3.sqlite_version_info < (3, 37):  # STRICT tables, RETURNING
            raise StoreError(
                f"SQLite 3.37 or newer is needed; this Python has {sqlite3.sqlite_version}"
            )
        if self.path != ":memory:":
            self._lock_file = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self._lock_file)
                self._lock_file = None
                raise StoreLocked(
                    f"{Path(self.path).resolve()} is in use by another webhook-bridge process; "
                    "SQLite serves one process only: stop the other one, or run several "
                    "replicas on PostgreSQL (store.url = postgresql://...)"
                ) from None
        db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False,
            cached_statements=STATEMENTS,
        )  # fmt: skip
        db.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit is on disk before the caller is told so (a 201 means committed).
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA busy_timeout = 5000")
        # The per-host delivery limit's key of rows recorded before it was kept (migration
        # 0003 fills it in with this function; new rows get it from `_FanOut`).
        db.create_function("callback_host", 1, base.callback_host, deterministic=True)
        # The outcome of watches recorded before it was kept, for migration 0006.
        db.create_function("recorded_outcome", 4, rules.recorded_outcome, deterministic=True)
        self._db = db

    async def open(self, *, migrate: bool = True) -> None:
        await self._thread.call(self._connect)
        if not migrate:
            return
        await self.migrate()
        # This process holds the file lock, so no other lease holder can exist: leases left by
        # a previous (crashed) process are released now instead of waiting for them to expire.
        await self._transaction(
            lambda db: (
                db.execute("UPDATE watches SET lease_owner = NULL WHERE lease_owner IS NOT NULL"),
                db.execute(
                    "UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL"
                    " WHERE lease_owner IS NOT NULL"
                ),
            )
        )

    async def close(self) -> None:
        def shut() -> None:
            # On the thread: calls queued after this one find the store closed.
            db, self._db = self._db, None
            if db is not None:
                db.close()

        if self._db is not None:
            try:
                await self._thread.call(shut)
            except sqlite3.Error as error:
                raise StoreError(f"sqlite: {error}") from error
        self._thread.close()
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None

    async def migrate(self) -> list[int]:
        pending = migrations.load("sqlite")

        def apply(db: sqlite3.Connection) -> list[int]:
            db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations"
                " (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
            )
            done = {row[0] for row in db.execute("SELECT version FROM schema_migrations")}
            applied = []
            for version, sql in pending:
                if version in done:
                    continue
                try:
                    db.execute("BEGIN IMMEDIATE")
                    for statement in sql.split(";\n"):
                        if statement.strip():
                            db.execute(statement)
                    db.execute(
                        "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                        (version, time.time()),
                    )
                    db.execute("COMMIT")
                except sqlite3.Error as error:
                    if db.in_transaction:  # SQLite may have rolled back itself (a full disk)
                        db.execute("ROLLBACK")
                    raise MigrationError(f"migration {version:04d} failed: {error}") from error
                applied.append(version)
            return applied

        return await self._run(apply)

    async def ping(self, *, write: bool = False) -> None:
        def change_and_change_back(db: sqlite3.Connection) -> None:
            db.execute(_WRITE_PROBE)
            db.execute(_WRITE_PROBE)

        if write:
            await self._transaction(change_and_change_back)
        else:
            await self._fetchone("SELECT 1")

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
        row = sql_rows.new_watch_values(watch, lease_owner, lease_until, json.dumps)
        keyed = (
            None
            if idempotency is None
            else (watch.tenant, idempotency.key, idempotency.request_hash,
                  idempotency.response, watch.id, watch.created_at)
        )  # fmt: skip
        job = (watch.upstream, watch.job_id, watch.tenant)
        registration = _Registration(
            asyncio.get_running_loop().create_future(), row, keyed,
            job if shared_key else None, (*job, watch.created_at) if started else None,
        )  # fmt: skip
        await self._group_commit(registration)
        return replace(watch, updated_at=watch.created_at, lease_token=token)

    async def _group_commit(self, registration: _Registration) -> None:
        """Queue `registration` for the next group commit and wait for its own outcome."""
        if self._db is None:
            raise StoreError("the store is not open")
        loop = asyncio.get_running_loop()
        with self._registrations_lock:
            self._registrations.append(registration)
            submit = not self._commit_queued
            self._commit_queued = True
        if submit:
            try:
                self._thread.post(lambda: self._commit_registrations(loop))
            except StoreError:  # the thread stopped: closed meanwhile
                # Nothing else can be waiting: a registration queued after this one would
                # have found a commit queued, and none ran in between (no await).
                with self._registrations_lock:
                    self._registrations.clear()
                    self._commit_queued = False
                raise
        try:
            await registration.future
        except StoreUnavailable as error:
            self.health.failed(error)
            raise
        self.health.succeeded(wrote=True)

    def _commit_registrations(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the thread: commit every queued registration in one transaction, then settle
        each one's future on the loop."""
        with self._registrations_lock:
            group, self._registrations = self._registrations, []
            self._commit_queued = False
        if self._db is None:  # closed while this commit was queued
            for registration in group:
                registration.error = StoreError("the store is not open")
        else:
            _insert_registrations(self._db, group, self.path)
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            loop.call_soon_threadsafe(_settle, group)

    async def find_idempotency(self, tenant: str, key: str) -> base.Idempotency | None:
        row = await self._fetchone(
            "SELECT key, request_hash, response FROM idempotency_keys WHERE tenant = ? AND key = ?",
            (tenant, key),
        )
        return None if row is None else base.Idempotency(row[0], row[1], bytes(row[2]))

    async def get_watch(self, tenant: str, watch_id: str) -> base.Watch | None:
        return await self._run(lambda db: self._select_watch(db, tenant, watch_id))

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
            where += " AND id < ?"
            params.append(before_id)
        sql = (
            f"SELECT {sql_rows.WATCH_COLUMNS} FROM watches WHERE {where}"  # noqa: S608
            " ORDER BY id DESC LIMIT ?"
        )
        return [
            sql_rows.watch(row, json.loads) for row in await self._fetchall(sql, (*params, limit))
        ]

    async def count_matching(
        self, tenant: str, filters: base.WatchFilter = base.EVERY_WATCH
    ) -> int:
        where, params = _where(tenant, filters)
        row = await self._fetchone(f"SELECT count(*) FROM watches WHERE {where}", params)  # noqa: S608
        return int(row[0])

    def _select_watch(
        self, db: sqlite3.Connection, tenant: str, watch_id: str
    ) -> base.Watch | None:
        row = db.execute(
            f"SELECT {sql_rows.WATCH_COLUMNS} FROM watches WHERE id = ? AND tenant = ?",  # noqa: S608
            (watch_id, tenant),
        ).fetchone()
        return None if row is None else sql_rows.watch(row, json.loads)

    async def cancel_watch(self, tenant: str, watch_id: str, now: float) -> base.Watch | None:
        def cancel(db: sqlite3.Connection) -> base.Watch | None:
            watch = self._select_watch(db, tenant, watch_id)
            if watch is None or watch.status not in rules.LIVE:
                return watch
            db.execute(
                "UPDATE watches SET status = 'cancelled', queue_position = NULL,"
                " outcome = iif(status = 'active', ?, outcome), updated_at = ?, completed_at = ?,"
                " lease_owner = NULL, lease_expires_at = NULL WHERE id = ?",
                (rules.job_outcome("cancelled", None, None), now, now, watch_id),
            )
            _cancel_pending_deliveries(db, now, "watch_id = ?", watch_id)
            return self._select_watch(db, tenant, watch_id)

        return await self._transaction(cancel)

    async def redeliver(
        self, tenant: str, watch_id: str, now: float, endpoints: Collection[str] | None = None
    ) -> base.Redelivery | None:
        def redeliver(db: sqlite3.Connection) -> base.Redelivery | None:
            watch = self._select_watch(db, tenant, watch_id)
            if watch is None:
                return None
            rows = db.execute(
                "SELECT d.id, d.subscription_id, d.status, d.body IS NOT NULL,"
                " s.status IS NULL OR s.status = 'active' FROM deliveries d"
                " LEFT JOIN subscriptions s ON s.id = d.subscription_id"
                " WHERE d.watch_id = ? AND d.final = 1",
                (watch_id,),
            ).fetchall()
            finals = [rules.Final(r[0], r[1], r[2], bool(r[3]), bool(r[4])) for r in rows]
            again, delivering = rules.redelivery(watch.status, finals, endpoints)
            if not again:
                return base.Redelivery(watch)
            db.execute(
                "UPDATE deliveries SET status = 'pending', attempts = 0, series = series + 1,"
                " next_attempt_at = ?, ended_at = NULL, lease_owner = NULL,"
                " lease_expires_at = NULL WHERE id IN (SELECT value FROM json_each(?))",
                (now, json.dumps(again)),
            )
            if delivering:
                db.execute(
                    "UPDATE watches SET status = 'delivering', updated_at = ?,"
                    " completed_at = NULL WHERE id = ?",
                    (now, watch_id),
                )
            after = self._select_watch(db, tenant, watch_id)
            assert after is not None  # read in this transaction
            return base.Redelivery(after, tuple(again))

        return await self._transaction(redeliver)

    async def retry_delivery(
        self, tenant: str, watch_id: str, delivery_id: str, now: float
    ) -> base.DeliveryRecord | None:
        def retry(db: sqlite3.Connection) -> base.DeliveryRecord | None:
            found = _delivery_records(db, tenant, watch_id, delivery_id)
            if not found:
                return None
            due = rules.retried_at(found[0].status, found[0].next_attempt_at, now)
            if due is None:
                return found[0]
            db.execute("UPDATE deliveries SET next_attempt_at = ? WHERE id = ?", (due, delivery_id))
            return replace(found[0], next_attempt_at=due)

        return await self._transaction(retry)

    async def list_attempts(self, tenant: str, watch_id: str) -> list[base.Attempt]:
        rows = await self._fetchall(
            f"SELECT {sql_rows.ATTEMPT_COLUMNS} FROM attempts a"  # noqa: S608
            " JOIN deliveries d ON d.id = a.delivery_id JOIN watches w ON w.id = d.watch_id"
            " WHERE w.id = ? AND w.tenant = ? ORDER BY a.started_at, a.rowid",
            (watch_id, tenant),
        )
        return [sql_rows.attempt(row) for row in rows]

    async def watch_deliveries(self, tenant: str, watch_id: str) -> list[base.DeliveryRecord]:
        return await self._run(lambda db: _delivery_records(db, tenant, watch_id))

    # Polling.

    async def claim_watches(
        self,
        owner: str,
        now: float,
        lease_until: float,
        limit: int,
        upstreams: Sequence[str] | None = None,
    ) -> list[base.Watch]:
        named = None if upstreams is None else json.dumps(list(upstreams))

        def claim(db: sqlite3.Connection) -> list[base.Watch]:
            rows = db.execute(
                f"UPDATE watches SET lease_owner = ?, lease_expires_at = ?,"  # noqa: S608
                f" lease_token = {_NEXT_LEASE_NUMBER}"
                " WHERE id IN (SELECT id FROM watches WHERE status = 'active'"
                "   AND (lease_owner IS NULL OR lease_expires_at <= ?)"
                "   AND (? IS NULL OR upstream IN (SELECT value FROM json_each(?)))"
                "   ORDER BY next_poll_at LIMIT ?)"
                f" RETURNING {sql_rows.WATCH_COLUMNS}",
                (owner, lease_until, owner, now, named, named, limit),
            ).fetchall()
            return sorted(
                (sql_rows.watch(row, json.loads) for row in rows), key=lambda w: w.next_poll_at
            )

        return await self._transaction(claim)

    async def renew_watch_leases(
        self, owner: str, held: Sequence[tuple[str, int]], lease_until: float
    ) -> set[str]:
        return await self._renew_leases("watches", owner, held, lease_until)

    async def _renew_leases(
        self,
        table: Literal["watches", "deliveries"],
        owner: str,
        held: Sequence[tuple[str, int]],
        lease_until: float,
    ) -> set[str]:
        # One statement over a JSON object {id: token}, not one per row: a bridge holds
        # thousands, and a Python loop over them would hold the GIL (the event loop) meanwhile.
        # A row is held once, so its id is a key once. In chunks, each its own transaction,
        # so that registrations waiting for a commit go in between instead of after them all.
        status = _LEASED_WHILE[table]
        statement = (
            f"UPDATE {table} SET lease_expires_at = ?"  # noqa: S608 (fixed names, no input)
            " FROM (SELECT key AS id, value AS token FROM json_each(?)) AS held"
            f" WHERE {table}.id = held.id AND {table}.lease_token = held.token"
            f" AND {table}.lease_owner = ? AND {table}.status = '{status}' RETURNING {table}.id"
        )

        def renew(tokens: str) -> Callable[[sqlite3.Connection], list[tuple[str]]]:
            return lambda db: db.execute(statement, (lease_until, tokens, owner)).fetchall()

        renewed: set[str] = set()
        for start in range(0, len(held), RENEWAL_CHUNK):
            chunk = json.dumps(dict(held[start : start + RENEWAL_CHUNK]))
            renewed.update(row[0] for row in await self._transaction(renew(chunk)))
        return renewed

    async def release_watches(self, owner: str, held: Sequence[tuple[str, int]]) -> None:
        await self._transaction(
            lambda db: db.executemany(
                "UPDATE watches SET lease_owner = NULL, lease_expires_at = NULL"
                " WHERE id = ? AND lease_owner = ? AND lease_token = ?",
                [(watch_id, owner, token) for watch_id, token in held],
            )
        )

    async def release_deliveries(self, owner: str, held: Sequence[tuple[str, int]]) -> None:
        await self._transaction(
            lambda db: db.executemany(
                "UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL"
                " WHERE id = ? AND lease_owner = ? AND lease_token = ? AND status = 'pending'",
                [(delivery_id, owner, token) for delivery_id, token in held],
            )
        )

    async def record_progress(
        self, owner: str, now: float, changes: Sequence[base.Progress]
    ) -> base.Recorded:
        def record(db: sqlite3.Connection) -> base.Recorded:
            lost = set()
            deliveries = 0
            fan_out = _FanOut(db)
            for change in changes:
                updated = db.execute(
                    "UPDATE watches SET job_status = ?, queue_position = ?, last_error = ?,"
                    " next_poll_at = ?, updated_at = ? WHERE id = ? AND lease_owner = ?"
                    " AND lease_token = ? AND status = 'active' RETURNING tenant, callback_url",
                    (change.job_status, change.queue_position, change.last_error,
                     change.next_poll_at, now, change.watch_id, owner, change.lease_token),
                ).fetchone()  # fmt: skip
                if updated is None:
                    lost.add(change.watch_id)
                    continue
                tenant, callback_url = updated
                for event in change.events:
                    created = fan_out.record(
                        tenant, callback_url, change.watch_id, event, now, None, 0.0
                    )
                    deliveries += len(created)
            return base.Recorded(lost, deliveries)

        return await self._transaction(record)

    async def complete_watch(
        self, owner: str, now: float, completion: base.Completion, delivery_lease_until: float
    ) -> list[base.Delivery]:
        event = completion.event
        status, completed_at, outcome = rules.ending(event, now)

        def complete(db: sqlite3.Connection) -> list[base.Delivery]:
            updated = db.execute(
                "UPDATE watches SET status = ?, job_status = ?, queue_position = NULL,"
                " last_error = ?, updated_at = ?, completed_at = ?, outcome = ?,"
                " lease_owner = NULL, lease_expires_at = NULL"
                " WHERE id = ? AND lease_owner = ? AND lease_token = ? AND status = 'active'"
                " RETURNING tenant, callback_url",
                (status, completion.job_status, completion.last_error, now, completed_at,
                 outcome, completion.watch_id, owner, completion.lease_token),
            ).fetchone()  # fmt: skip
            if updated is None:
                raise LeaseLost()
            tenant, callback_url = updated
            ids = _FanOut(db).record(
                tenant, callback_url, completion.watch_id, event, now, owner, delivery_lease_until
            )
            return _deliveries(db, ids) if ids else []

        return await self._transaction(complete)

    # Delivery.

    async def _claim_deliveries(
        self, owner: str, now: float, lease_until: float, limit: int, shares: base.Shares | None
    ) -> list[base.Delivery]:
        def claim(db: sqlite3.Connection) -> list[base.Delivery]:
            if shares is None:
                chosen = [
                    row[0]
                    for row in db.execute(
                        "SELECT id FROM deliveries WHERE status = 'pending'"
                        " AND next_attempt_at <= ? AND (lease_owner IS NULL"
                        " OR lease_expires_at <= ?) ORDER BY next_attempt_at, id LIMIT ?",
                        (now, now, limit),
                    )
                ]
            else:
                chosen = _choose_within_shares(db, now, limit, shares)
            if not chosen:
                return []
            db.execute(
                f"UPDATE deliveries SET lease_owner = ?, lease_expires_at = ?,"  # noqa: S608
                f" lease_token = {_NEXT_LEASE_NUMBER} WHERE id IN (SELECT value FROM json_each(?))",
                (owner, lease_until, owner, json.dumps(chosen)),
            )
            return _deliveries(db, chosen)

        return await self._transaction(claim)

    async def renew_delivery_leases(
        self, owner: str, held: Sequence[tuple[str, int]], lease_until: float
    ) -> set[str]:
        return await self._renew_leases("deliveries", owner, held, lease_until)

    async def record_attempts(self, owner: str, records: Sequence[base.AttemptRecord]) -> set[str]:
        def every(db: sqlite3.Connection) -> set[str]:
            return sqlite_outcomes.record_attempts(db, owner, records, _cascade)

        return await self._transaction(every) if records else set()

    # Subscriptions.

    async def insert_subscription(self, subscription: base.Subscription) -> base.Subscription:
        await self._write(
            f"INSERT INTO subscriptions ({sql_rows.SUBSCRIPTION_COLUMNS})"  # noqa: S608
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            sql_rows.subscription_values(subscription, json.dumps),
        )
        return subscription

    async def list_subscriptions(self, tenant: str) -> list[base.Subscription]:
        rows = await self._fetchall(
            f"SELECT {sql_rows.SUBSCRIPTION_COLUMNS} FROM subscriptions"  # noqa: S608
            " WHERE tenant = ? AND status IN ('active', 'disabled') ORDER BY id",
            (tenant,),
        )
        return [sql_rows.subscription(row, json.loads) for row in rows]

    async def get_subscription(self, tenant: str, subscription_id: str) -> base.Subscription | None:
        row = await self._fetchone(
            f"SELECT {sql_rows.SUBSCRIPTION_COLUMNS} FROM subscriptions"  # noqa: S608
            " WHERE id = ? AND tenant = ?",
            (subscription_id, tenant),
        )
        return None if row is None else sql_rows.subscription(row, json.loads)

    async def _change_subscription_status(
        self, tenant: str, subscription_id: str, status: base.SubscriptionStatus, now: float
    ) -> base.Subscription | None:
        def change(db: sqlite3.Connection) -> base.Subscription | None:
            row = db.execute(
                "UPDATE subscriptions SET status = ?, updated_at = ?"  # noqa: S608
                " WHERE id = ? AND tenant = ? AND status IN ('active', 'disabled')"
                f" RETURNING {sql_rows.SUBSCRIPTION_COLUMNS}",
                (status, now, subscription_id, tenant),
            ).fetchone()
            if row is None:
                return None
            if status != "active":
                _cancel_pending_deliveries(db, now, "subscription_id = ?", subscription_id)
            return sql_rows.subscription(row, json.loads)

        return await self._transaction(change)

    async def rotate_subscription_secret(
        self, tenant: str, subscription_id: str, secret: str, previous_until: float, now: float
    ) -> base.Subscription | None:
        def rotate(db: sqlite3.Connection) -> base.Subscription | None:
            row = db.execute(
                "UPDATE subscriptions SET previous_secret = secret, secret = ?,"  # noqa: S608
                " previous_secret_until = ?, updated_at = ?"
                " WHERE id = ? AND tenant = ? AND status IN ('active', 'disabled')"
                f" RETURNING {sql_rows.SUBSCRIPTION_COLUMNS}",
                (secret, previous_until, now, subscription_id, tenant),
            ).fetchone()
            return None if row is None else sql_rows.subscription(row, json.loads)

        return await self._transaction(rotate)

    async def subscription_health(
        self, tenant: str, since: float
    ) -> dict[str, base.SubscriptionHealth]:
        def read(db: sqlite3.Connection) -> dict[str, base.SubscriptionHealth]:
            counts, errors = (
                db.execute(statement.replace("$1", "?").replace("$2", "?"), (tenant, since))
                for statement in (subscription_health.COUNTS, subscription_health.ERRORS)
            )
            return subscription_health.read(counts.fetchall(), errors.fetchall())

        return await self._run(read)

    # Events.

    async def list_events(
        self, tenant: str, *, types: Sequence[str] | None = None, limit: int = 50
    ) -> list[base.EventRecord]:
        clause, params = "", [tenant]
        if types is not None:
            clause = f" AND e.type IN ({', '.join('?' * len(types))})"
            params += list(types)
        rows = await self._fetchall(
            f"SELECT {sql_rows.EVENT_COLUMNS} FROM events e WHERE e.tenant = ?{clause}"  # noqa: S608
            " ORDER BY e.seq DESC LIMIT ?",
            (*params, limit),
        )
        return [sql_rows.event(row) for row in rows]

    async def watch_events(
        self, tenant: str, watch_id: str, *, after: str | None = None
    ) -> list[base.EventRecord]:
        rows = await self._fetchall(
            f"SELECT {sql_rows.EVENT_COLUMNS} FROM events e"  # noqa: S608
            " WHERE e.watch_id = ? AND e.tenant = ? AND e.seq > coalesce("
            "  (SELECT seq FROM events WHERE id = ? AND watch_id = ?), 0)"
            " ORDER BY e.seq",
            (watch_id, tenant, after, watch_id),
        )
        return [sql_rows.event(row) for row in rows]

    # Trends.

    async def outcome_buckets(
        self, tenant: str, since: float, bucket_s: float, count: int
    ) -> list[base.OutcomeBucket]:
        window = (since, bucket_s, count, tenant, buckets.end(since, bucket_s, count))

        def read(db: sqlite3.Connection) -> tuple[list[Any], list[Any]]:
            jobs = db.execute(_JOBS_PER_BUCKET, window).fetchall()
            return jobs, db.execute(_WEBHOOKS_ENDED, window).fetchall()

        jobs, webhooks = await self._run(read)
        return buckets.assemble(since, bucket_s, count, jobs, webhooks)

    # Dashboard sign-ins.

    async def revoke_session(self, session_id: str, expires_at: float) -> None:
        await self._write(
            "INSERT INTO revoked_sessions (id, expires_at) VALUES (?, ?)"
            " ON CONFLICT (id) DO NOTHING",
            (session_id, expires_at),
        )

    async def session_revoked(self, session_id: str) -> bool:
        row = await self._fetchone("SELECT 1 FROM revoked_sessions WHERE id = ?", (session_id,))
        return row is not None

    # Housekeeping.

    async def purge_revoked_sessions(self, now: float) -> int:
        return await self._write("DELETE FROM revoked_sessions WHERE expires_at <= ?", (now,))

    async def purge_bodies(self, completed_before: float) -> int:
        def purge(db: sqlite3.Connection) -> int:
            db.execute(
                "DELETE FROM events WHERE created_at < ? AND watch_id IN (SELECT id FROM"
                " watches WHERE status NOT IN ('active', 'delivering'))",
                (completed_before,),
            )
            db.execute(
                "UPDATE attempts SET response_body = NULL"
                " WHERE response_body IS NOT NULL AND started_at < ?",
                (completed_before,),
            )
            return db.execute(
                "UPDATE deliveries SET body = NULL WHERE body IS NOT NULL"
                " AND status IN ('succeeded', 'cancelled') AND ended_at < ?",
                (completed_before,),
            ).rowcount

        return await self._transaction(purge)

    async def count_due_deliveries(self, now: float) -> int:
        row = await self._fetchone(
            "SELECT count(*) FROM deliveries WHERE status = 'pending' AND next_attempt_at <= ?"
            " AND (lease_owner IS NULL OR lease_expires_at <= ?)",
            (now, now),
        )
        return int(row[0])

    async def count_watches(self, tenant: str | None = None) -> dict[str, int]:
        where, params = ("WHERE tenant = ?", (tenant,)) if tenant is not None else ("", ())
        rows = await self._fetchall(
            f"SELECT status, count(*) FROM watches {where} GROUP BY status",  # noqa: S608
            params,
        )
        counts: dict[str, int] = dict.fromkeys(base.WATCH_STATUSES, 0)
        counts.update(dict(rows))
        return counts

    async def count_active_by_upstream(self) -> dict[str, int]:
        rows = await self._fetchall(
            "SELECT upstream, count(*) FROM watches WHERE status = 'active' GROUP BY upstream"
        )
        return dict(rows)

    async def count_outcomes(
        self, tenant: str
    ) -> dict[tuple[base.WatchStatus, base.JobOutcome], int]:
        rows = await self._fetchall(
            "SELECT status, outcome, count(*) FROM watches WHERE tenant = ?"
            " GROUP BY status, outcome",
            (tenant,),
        )
        return {(status, outcome): count for status, outcome, count in rows}


# `Store.outcome_buckets`, with `buckets.index`'s arithmetic; parameters: since, bucket_s,
# count, tenant, end. A final event's job counted by its watch's outcome, once.
_JOBS_PER_BUCKET = (
    "SELECT min(CAST((e.created_at - ?1) / ?2 AS INTEGER), ?3 - 1) AS b,"
    " sum(w.outcome = 'succeeded'), sum(w.outcome = 'timed_out'), count(*)"
    " FROM events e JOIN watches w ON w.id = e.watch_id"
    " WHERE e.tenant = ?4 AND e.final = 1 AND e.created_at >= ?1 AND e.created_at < ?5"
    " GROUP BY b"
)
# The callbacks' final deliveries that ended, each once: its bucket, and the time it took to
# deliver (NULL: not delivered).
_WEBHOOKS_ENDED = (
    "SELECT min(CAST((ended_at - ?1) / ?2 AS INTEGER), ?3 - 1),"
    " CASE WHEN status = 'succeeded' THEN ended_at - created_at END"
    " FROM deliveries WHERE tenant = ?4 AND final = 1 AND subscription_id IS NULL"
    " AND status IN ('succeeded', 'failed', 'gone') AND ended_at >= ?1 AND ended_at < ?5"
)


@dataclass(slots=True)
class _Registration:
    """One `insert_watch` waiting for a group commit: its rows, then its outcome."""

    # Settled on the loop with the outcome (`error`, set on the store's thread).
    future: asyncio.Future[None]
    watch: tuple[object, ...]
    idempotency: tuple[object, ...] | None
    # (upstream, job id, tenant): refused when another tenant owns the job.
    shared_job: tuple[str, str, str] | None = None
    # (upstream, job id, tenant, now): the job's owner to record with the watch.
    owner: tuple[object, ...] | None = None
    error: Exception | None = None


def _insert_registrations(
    db: sqlite3.Connection, group: Sequence[_Registration], path: str
) -> None:
    """Insert each registration under its own savepoint, all in one transaction: one that
    fails is rolled back alone and keeps its error; a failed commit fails them all."""
    try:
        db.execute("BEGIN IMMEDIATE")
        for registration in group:
            db.execute("SAVEPOINT registration")
            try:
                registration.error = _insert_registration(db, registration)
            except sqlite3.Error as error:
                if not db.in_transaction:  # SQLite rolled the group back (a full disk)
                    raise
                registration.error = _store_error(error, path)
            if registration.error is not None:
                db.execute("ROLLBACK TO registration")
            db.execute("RELEASE registration")
        db.execute("COMMIT")
    # Not only sqlite3.Error: whatever it is, every caller must hear of it, not wait forever.
    except Exception as error:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        # Nothing of the group was written (a duplicate key too may have been its own).
        for registration in group:
            registration.error = (
                _store_error(error, path)
                if isinstance(error, sqlite3.Error)
                else StoreError(f"sqlite: {error}")
            )


def _insert_registration(db: sqlite3.Connection, registration: _Registration) -> Exception | None:
    """Write one registration's rows; the error that refuses it, if any (its caller then rolls
    back what was written)."""
    job = registration.shared_job
    owned = "SELECT 1 FROM job_owners WHERE upstream = ? AND job_id = ? AND tenant <> ?"
    if job is not None and db.execute(owned, job).fetchone():
        return base.JobOfAnotherTenant()
    # The watch first: the idempotency row references it.
    marks = ", ".join("?" * len(registration.watch))
    db.execute(
        f"INSERT INTO watches ({sql_rows.NEW_WATCH_COLUMNS}) VALUES ({marks})",  # noqa: S608
        registration.watch,
    )
    if registration.idempotency is not None:
        try:
            db.execute(
                "INSERT INTO idempotency_keys (tenant, key, request_hash, response,"
                " watch_id, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                registration.idempotency,
            )
        except sqlite3.IntegrityError:
            return base.DuplicateIdempotencyKey()
    if registration.owner is not None:
        db.execute(
            "INSERT INTO job_owners (upstream, job_id, tenant, created_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (upstream, job_id) DO NOTHING",
            registration.owner,
        )
    return None


def _settle(group: Sequence[_Registration]) -> None:
    """On the loop: hand each registration its outcome (unless its caller gave up)."""
    for registration in group:
        settle(registration.future, None, registration.error)


class _FanOut:
    """Records events in one transaction (see `rules.fan_out`). A tenant's active
    subscriptions are read once per transaction, however many of its watches record events in
    it."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._subscriptions: dict[str, list[rules.Endpoint]] = {}

    def _of(self, tenant: str) -> list[rules.Endpoint]:
        found = self._subscriptions.get(tenant)
        if found is None:
            rows = self._db.execute(
                "SELECT id, events, url FROM subscriptions WHERE tenant = ?"
                " AND status = 'active' ORDER BY id",
                (tenant,),
            ).fetchall()
            found = self._subscriptions[tenant] = [
                rules.Endpoint.of(row[0], json.loads(row[1]), row[2]) for row in rows
            ]
        return found

    def record(
        self,
        tenant: str,
        callback_url: str,
        watch_id: str,
        event: base.NewEvent,
        now: float,
        owner: str | None,
        lease_until: float,
    ) -> list[str]:
        """Insert `event` of the watch calling back `callback_url` and its deliveries (claimed
        by `owner` when given); their ids, the callback's first; no ids when it is recorded
        already (nothing is inserted)."""
        inserted = self._db.execute(
            "INSERT INTO events (id, tenant, watch_id, type, final, body, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            (event.id, tenant, watch_id, event.type, int(event.final), event.body, now),
        ).rowcount
        if not inserted:
            return []
        news = rules.fan_out(event, callback_url, self._of(tenant), now)
        self._db.executemany(
            "INSERT INTO deliveries (id, watch_id, event_type, body, final, status,"
            " next_attempt_at, created_at, lease_owner, lease_expires_at, lease_token,"
            " subscription_id, event_id, host, tenant)"
            " VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(new.delivery.id, watch_id, event.type, new.delivery.body, int(event.final), now,
              now, owner, lease_until if owner else None, 1 if owner else 0,
              new.subscription_id, event.id, new.host, tenant)
             for new in news],
        )  # fmt: skip
        return [new.delivery.id for new in news]


# The groups (host and tenant) with pending deliveries, one index probe each
# (`deliveries_group_due`: the hosts, then the tenants of each host), with their shares
# (`json_each` of the limits, else the default); of those with both shares, the ones with a due
# delivery nobody holds, oldest due first.
_GROUPS_DUE = """
WITH RECURSIVE hosts (host) AS (
    SELECT min(host) FROM deliveries WHERE status = 'pending'
    UNION ALL
    SELECT (SELECT min(d.host) FROM deliveries d WHERE d.status = 'pending'
            AND d.host > hosts.host)
    FROM hosts WHERE hosts.host IS NOT NULL
), groups (host, tenant) AS (
    SELECT host, (SELECT min(d.tenant) FROM deliveries d WHERE d.status = 'pending'
                  AND d.host = hosts.host)
    FROM hosts WHERE host IS NOT NULL
    UNION ALL
    SELECT g.host, (SELECT min(d.tenant) FROM deliveries d WHERE d.status = 'pending'
                    AND d.host = g.host AND d.tenant > g.tenant)
    FROM groups g WHERE g.tenant IS NOT NULL
), shares AS MATERIALIZED (
    SELECT host, tenant,
        coalesce((SELECT value FROM json_each(:host_limits) WHERE key = host), :per_host)
            AS host_share,
        coalesce((SELECT value FROM json_each(:tenant_limits) WHERE key = tenant), :per_tenant)
            AS tenant_share
    FROM groups WHERE tenant IS NOT NULL
), oldest AS MATERIALIZED (
    SELECT host, tenant, host_share, tenant_share, (SELECT d.next_attempt_at FROM deliveries d
        WHERE d.host = shares.host AND d.tenant = shares.tenant AND d.status = 'pending'
        AND d.next_attempt_at <= :now AND (d.lease_owner IS NULL OR d.lease_expires_at <= :now)
        ORDER BY d.next_attempt_at LIMIT 1) AS at
    FROM shares WHERE host_share > 0 AND tenant_share > 0
)
SELECT host, tenant, host_share, tenant_share FROM oldest WHERE at IS NOT NULL
ORDER BY at, host, tenant
"""
# One group's oldest due deliveries nobody holds (then by id), as a JSON array of [due time,
# id] (one step).
_GROUP_DUE = (
    "SELECT json_group_array(json_array(next_attempt_at, id)) FROM (SELECT next_attempt_at, id"
    " FROM deliveries WHERE host = ? AND tenant = ? AND status = 'pending'"
    " AND next_attempt_at <= ? AND (lease_owner IS NULL OR lease_expires_at <= ?)"
    " ORDER BY next_attempt_at, id LIMIT ?)"
)


def _deliveries(db: sqlite3.Connection, ids: Sequence[str]) -> list[base.Delivery]:
    """The deliveries of `ids`, in that order, as claimed (see `_DELIVERIES_BY_ID`)."""
    (rows,) = db.execute(_DELIVERIES_BY_ID, (json.dumps(list(ids)),)).fetchone()
    found = {}
    for row in json.loads(rows):
        row[3], row[4], row[14] = bytes.fromhex(row[3]), bool(row[4]), tuple(row[14])
        found[row[0]] = base.Delivery(*row)
    return [found[delivery_id] for delivery_id in ids]


def _choose_within_shares(
    db: sqlite3.Connection, now: float, limit: int, shares: base.Shares
) -> list[str]:
    """The ids a claim with shares takes (see `rules.groups_taken`)."""
    groups = db.execute(
        _GROUPS_DUE,
        {"per_host": shares.per_host, "host_limits": json.dumps(shares.host_limits),
         "per_tenant": shares.per_tenant, "tenant_limits": json.dumps(shares.tenant_limits),
         "now": now},
    ).fetchall()  # fmt: skip

    offered = []
    for host, tenant, most in rules.groups_taken(groups, limit):
        (due,) = db.execute(_GROUP_DUE, (host, tenant, now, now, most)).fetchone()
        offered += [(at, delivery_id, host, tenant) for at, delivery_id in json.loads(due)]
    return rules.offers_kept(groups, offered, limit)


def _delivery_records(
    db: sqlite3.Connection, tenant: str, watch_id: str, delivery_id: str | None = None
) -> list[base.DeliveryRecord]:
    """The watch's deliveries (only `delivery_id` when given) in `watch_deliveries` order."""
    only = "" if delivery_id is None else " AND d.id = ?"
    rows = db.execute(
        "SELECT d.id, d.event_type, d.final, d.status, d.attempts, d.body, d.created_at,"  # noqa: S608
        " d.subscription_id, d.event_id, iif(d.status = 'pending', d.next_attempt_at, NULL),"
        " d.series"
        f" FROM deliveries d JOIN watches w ON w.id = d.watch_id WHERE w.id = ? AND w.tenant = ?"
        f"{only} ORDER BY d.created_at, d.subscription_id IS NOT NULL, d.subscription_id, d.id",
        (watch_id, tenant) if delivery_id is None else (watch_id, tenant, delivery_id),
    ).fetchall()
    return [sql_rows.delivery_record(row) for row in rows]


def _cancel_pending_deliveries(db: sqlite3.Connection, now: float, where: str, key: str) -> None:
    """Cancel the pending deliveries `where` (a condition on `key`) says."""
    db.execute(
        "UPDATE deliveries SET status = 'cancelled', ended_at = ?, lease_owner = NULL,"  # noqa: S608
        f" lease_expires_at = NULL WHERE {where} AND status = 'pending'",
        (now, key),
    )


def _cascade(db: sqlite3.Connection, record: base.AttemptRecord, effect: rules.Effect) -> None:
    """What a recorded 410 changes beyond its delivery and its watch's counters (see
    `rules.effect`)."""
    now = record.now
    if effect.subscription_gone is not None:
        db.execute(
            "UPDATE subscriptions SET status = 'gone', updated_at = ?"
            " WHERE id = ? AND status = 'active'",
            (now, effect.subscription_gone),
        )
        _cancel_pending_deliveries(db, now, "subscription_id = ?", effect.subscription_gone)
    if effect.watch_gone:
        db.execute(
            "UPDATE watches SET status = 'gone', updated_at = ?, completed_at = ?,"
            " lease_owner = NULL WHERE id = ? AND status IN (?, ?)",
            (now, now, record.delivery.watch_id, *rules.LIVE),
        )
        _cancel_pending_deliveries(
            db, now, "watch_id = ? AND subscription_id IS NULL", record.delivery.watch_id
        )


def _where(tenant: str, filters: base.WatchFilter) -> tuple[str, list[Any]]:
    """The WHERE clause of a listing of watches and its parameters."""
    clauses, params = ["tenant = ?"], list[Any]([tenant])
    for column, value in rules.compared(filters):
        clauses.append(f"{column} ?")
        params.append(value)
    if filters.job_id_prefix:
        # A range on the (tenant, job_id) index: LIKE would ignore case and the index.
        clauses.append("job_id >= ? AND job_id < ?")
        params += [filters.job_id_prefix, rules.prefix_end(filters.job_id_prefix)]
    if filters.delivery is not None:
        pairs = rules.delivery_pairs(filters.delivery)
        clauses.append(f"(status, outcome) IN (VALUES {', '.join(['(?, ?)'] * len(pairs))})")
        params += [value for pair in pairs for value in pair]
    if filters.metadata is not None:
        key, value = filters.metadata
        wanted = rules.metadata_values(value)
        # json_each reads keys decoded: a JSON path would not find one stored escaped ("\u00e9").
        marks = ", ".join("?" * len(wanted))
        clauses.append(
            "EXISTS (SELECT 1 FROM json_each(metadata) WHERE key = ?"  # noqa: S608
            f" AND type IN ('text', 'integer', 'real') AND value IN ({marks}))"
        )
        params += [key, *wanted]
    return " AND ".join(clauses), params
