"""Trends benchmark: `Store.outcome_buckets`, the query behind the list page's charts of the
last day, on SQLite and PostgreSQL. See bench/README.md.

    .venv/bin/python bench/trends.py [--watches 100000] [--days 1 30] [--runs 15]

For each backend and each --days in turn, a fresh database (a SQLite file, or a PostgreSQL
schema dropped afterwards), migrated by the store, is filled in bulk with --watches watches of
one tenant and as many of another, their jobs ending evenly over the last `days` days (the
store keeps events 30 days by default): per watch three events (queued, processing, the final
one), its callback's final delivery ended (86 % delivered after one or two attempts, the rest
failed or gone), the callback's delivery of the processing event and a subscription's delivery of
the final event. The outcomes: 80 % succeeded, 12 % failed, 5 % timed out, 3 % not found.

Then the day's 24 buckets are read --runs times after one warm-up read: the median, p90 and
greatest time per read, through the store (its thread or its pool included). Run it on a quiet
machine; its numbers and the plans go to bench/results/<time>-trends.json.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.store.base import Store
from service.store.postgres import PostgresStore
from service.store.sqlite import SQLiteStore

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z: the bench's "now"
HOUR = 3600.0
TENANT, OTHER = "acme", "globex"
POSTGRES_URL = os.environ.get(
    "BRIDGE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
RESULTS = Path(__file__).parent / "results"
OUTCOMES = ["succeeded"] * 80 + ["failed"] * 12 + ["timed_out"] * 5 + ["not_found"] * 3

WATCH_COLUMNS = (
    "id", "tenant", "job_id", "callback_url", "callback_method", "callback_headers", "metadata",
    "events", "payload_format", "secret", "poll_interval_s", "timeout_s", "status",
    "job_status", "attempts", "created_at", "updated_at", "completed_at", "next_poll_at",
    "outcome",
)  # fmt: skip
EVENT_COLUMNS = ("id", "tenant", "watch_id", "type", "final", "body", "created_at")
DELIVERY_COLUMNS = (
    "id", "watch_id", "event_type", "body", "final", "status", "attempts", "created_at",
    "ended_at", "subscription_id", "event_id", "host", "tenant",
)  # fmt: skip


def rows(
    count: int, days: float
) -> Iterator[tuple[tuple[Any, ...], list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """Per watch: its row, its events' rows and its deliveries' rows; the two tenants' watches
    alternate, ending evenly over the last `days` days."""
    body = orjson.dumps({"type": "job.succeeded", "data": {"output": {"images": []}}})
    for n in range(2 * count):
        tenant = TENANT if n % 2 == 0 else OTHER
        final_at = NOW + HOUR - days * 86400 * (n + 0.5) / (2 * count)
        outcome = OUTCOMES[n % len(OUTCOMES)]
        created = final_at - 30 - n % 600
        delivered = n % 50 < 43
        gone = n % 50 == 49
        ended_at = final_at + (0.05 + (n % 97) / 10 if n % 7 else 30 + n % 300)
        watch_id = f"wch_{n:012d}"
        final_type = "job.succeeded" if outcome == "succeeded" else "job.failed"
        watch = (
            watch_id, tenant, f"job-{n}", "https://receiver.example/hooks", "POST", "{}", None,
            '["job.succeeded", "job.failed", "job.processing"]', "envelope", "", 5.0, 86400.0,
            "delivered" if delivered else "gone" if gone else "failed",
            "succeeded" if outcome == "succeeded" else "failed", 1 + (n % 7 == 0),
            created, ended_at, ended_at, created, outcome,
        )  # fmt: skip
        events = [
            (f"evt_q{n}", tenant, watch_id, "job.queued", False, body, created + 0.1),
            (f"evt_p{n}", tenant, watch_id, "job.processing", False, body, created + 12),
            (f"evt_f{n}", tenant, watch_id, final_type, True, body, final_at),
        ]
        status = "succeeded" if delivered else "gone" if gone else "failed"
        deliveries = [
            (f"msg_f{n}", watch_id, final_type, body, True, status, 1 + (n % 7 == 0), final_at,
             ended_at, None, f"evt_f{n}", "https://receiver.example", tenant),
            (f"msg_p{n}", watch_id, "job.processing", body, False, "succeeded", 1, created + 12,
             created + 12.2, None, f"evt_p{n}", "https://receiver.example", tenant),
            (f"msg_s{n}", watch_id, final_type, body, True, "succeeded", 1, final_at,
             final_at + 0.3, "sub_1", f"evt_f{n}", "https://sub.example", tenant),
        ]  # fmt: skip
        yield watch, events, deliveries


def _placeholders(columns: tuple[str, ...]) -> str:
    return ", ".join("?" * len(columns))


def fill_sqlite(path: Path, count: int, days: float) -> None:
    db = sqlite3.connect(path)
    db.execute(
        "INSERT INTO subscriptions (id, tenant, url, events, secret, headers, final_statuses,"
        " status, created_at, updated_at) VALUES ('sub_1', ?, 'https://sub.example/in',"
        " '[\"job.succeeded\", \"job.failed\"]', '', '{}', '[]', 'active', 0, 0)",
        (TENANT,),
    )
    batch: tuple[list[Any], list[Any], list[Any]] = ([], [], [])
    for watch, events, deliveries in rows(count, days):
        batch[0].append(watch)
        batch[1].extend(events)
        batch[2].extend(deliveries)
        if len(batch[0]) >= 10_000 or watch[0] == f"wch_{2 * count - 1:012d}":
            for table, columns, found in (
                ("watches", WATCH_COLUMNS, batch[0]),
                ("events", EVENT_COLUMNS, batch[1]),
                ("deliveries", DELIVERY_COLUMNS, batch[2]),
            ):
                sql = (
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({_placeholders(columns)})"  # noqa: S608
                )
                db.executemany(sql, found)
                found.clear()
    db.commit()
    db.execute("ANALYZE")
    db.close()


async def fill_postgres(schema: str, count: int, days: float) -> None:
    db = await asyncpg.connect(POSTGRES_URL)
    try:
        await db.execute(f"SET search_path TO {schema}")
        await db.execute(
            "INSERT INTO subscriptions (id, tenant, url, events, secret, headers, final_statuses,"
            " status, created_at, updated_at) VALUES ('sub_1', $1, 'https://sub.example/in',"
            " '[\"job.succeeded\", \"job.failed\"]', '', '{}', '[]', 'active', 0, 0)",
            TENANT,
        )
        watches, events, deliveries = [], [], []
        for watch, its_events, its_deliveries in rows(count, days):
            watches.append(watch)
            events.extend(its_events)
            deliveries.extend(its_deliveries)
        for table, columns, found in (
            ("watches", WATCH_COLUMNS, watches),
            ("events", EVENT_COLUMNS, events),
            ("deliveries", DELIVERY_COLUMNS, deliveries),
        ):
            await db.copy_records_to_table(
                table, records=found, columns=list(columns), schema_name=schema
            )
        await db.execute("VACUUM ANALYZE")  # as autovacuum leaves them: index-only scans work
    finally:
        await db.close()


async def timed(store: Store, runs: int) -> dict[str, Any]:
    since = NOW - 23 * HOUR
    found = await store.outcome_buckets(TENANT, since, HOUR, 24)  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await store.outcome_buckets(TENANT, since, HOUR, 24)
        times.append(time.perf_counter() - started)
    times.sort()
    return {
        "median_ms": round(statistics.median(times) * 1000, 1),
        "p90_ms": round(times[math.ceil(0.9 * len(times)) - 1] * 1000, 1),
        "max_ms": round(times[-1] * 1000, 1),
        "jobs_in_window": sum(b.succeeded + b.failed + b.timed_out for b in found),
        "webhooks_in_window": sum(b.delivered + b.undelivered for b in found),
    }


async def bench_sqlite(count: int, days: float, runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bridge-bench-trends-") as folder:
        path = Path(folder) / "bridge.db"
        store = SQLiteStore(str(path))
        await store.open()
        await store.close()
        started = time.perf_counter()
        fill_sqlite(path, count, days)
        filled = time.perf_counter() - started
        store = SQLiteStore(str(path))
        await store.open()
        try:
            result = await timed(store, runs)
        finally:
            await store.close()
        db = sqlite3.connect(path)
        from service.store import sqlite as module

        window = (NOW - 23 * HOUR, HOUR, 24, TENANT, NOW + HOUR)
        plans = [
            [row[-1] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", window)]
            for sql in (module._JOBS_PER_BUCKET, module._WEBHOOKS_ENDED)
        ]
        db.close()
    return {**result, "fill_s": round(filled, 1), "plans": plans}


async def bench_postgres(count: int, days: float, runs: int) -> dict[str, Any]:
    schema = f"bench_trends_{secrets.token_hex(4)}"
    store = PostgresStore(POSTGRES_URL, schema=schema)
    await store.open()
    try:
        started = time.perf_counter()
        await fill_postgres(schema, count, days)
        filled = time.perf_counter() - started
        result = await timed(store, runs)
        from service.store import postgres as module

        db = await asyncpg.connect(POSTGRES_URL)
        try:
            await db.execute(f"SET search_path TO {schema}")
            window = (NOW - 23 * HOUR, HOUR, 24, TENANT, NOW + HOUR)
            plans = [
                [r[0] for r in await db.fetch(f"EXPLAIN ANALYZE {sql}", *window)]
                for sql in (module._JOBS_PER_BUCKET, module._WEBHOOKS_ENDED)
            ]
        finally:
            await db.close()
    finally:
        await store.close()
        db = await asyncpg.connect(POSTGRES_URL)
        try:
            await db.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await db.close()
    return {**result, "fill_s": round(filled, 1), "plans": plans}


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--watches", type=int, default=100_000, help="per tenant")
    parser.add_argument("--days", type=float, nargs="+", default=[1.0, 30.0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"watches_per_tenant": args.watches, "runs": []}
    print(f"{'backend':<10} {'days':>5} {'in window':>10} {'median':>9} {'p90':>9} {'max':>9}")
    for backend in args.backends.split(","):
        for days in args.days:
            bench = bench_sqlite if backend == "sqlite" else bench_postgres
            found = await bench(args.watches, days, args.runs)
            results["runs"].append({"backend": backend, "days": days, **found})
            times = " ".join(f"{found[k]:>6.1f} ms" for k in ("median_ms", "p90_ms", "max_ms"))
            print(f"{backend:<10} {days:>5g} {found['jobs_in_window']:>10,} {times}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-trends.json"
    out.write_text(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    print(f"written to {out}")


if __name__ == "__main__":
    asyncio.run(main())
