"""Storage benchmark: SQLite against PostgreSQL with one replica and with two. See bench/README.md.

    .venv/bin/python bench/stores.py [--registrations 3000] [--saturation-watches 4000] ...

For each setup in turn (a fresh SQLite file, or a fresh PostgreSQL database `bench_<random>`
dropped afterwards), against one upstream simulator:

1. registration: --registrations watches from --clients concurrent clients (spread over the
   replicas), their throughput and latency;
2. paced: --paced-watches watches at --paced-interval, far below capacity: polls per job per
   second (a job polled by both replicas shows twice the rate) and the row writes per poll;
3. saturation: --saturation-watches more at a tiny interval: upstream polls/s at saturation, CPU
   per 1,000 polls of the bridges and of PostgreSQL, and the row writes per poll.

The table is printed and the whole result written to bench/results/<time>-stores.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sqlite3
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import measure
import run as base
from harness import BenchError, Service, Services, cpu_seconds, machine_busy_seconds
from loops import Control, ProbeResults, each, probe
from measure import fmt_ms, fmt_num, fmt_s
from runner import run_bench

MACHINE = "machine"
# A poll interval at which a watch registered for the registration count is polled once (when it
# is registered) and never again during the run.
DORMANT_INTERVAL_S = 3600.0
# A job polled more often than this many times its interval's rate was polled by two replicas.
DOUBLED = 1.5
# Leases are renewed every third of store.lease_s (15 s by default), on the 1 s tick.
LEASE_S = 15.0
RENEWAL_S = LEASE_S / 3
UNLIMITED = 1_000_000
# A PostgreSQL 15 backend adds its counts to pg_stat_* when it goes idle, at most once a second;
# counts left pending are added after 10 s idle. The registrations before a window would land in
# it unless the window starts later than that.
STATS_FLUSH_S = 11.0


@dataclass(frozen=True)
class Setup:
    key: str
    label: str
    replicas: int
    postgres: bool


SETUPS = {
    "sqlite": Setup("sqlite", "SQLite", 1, False),
    "pg1": Setup("pg1", "PostgreSQL x1", 1, True),
    "pg2": Setup("pg2", "PostgreSQL x2", 2, True),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compare SQLite with PostgreSQL, one replica and two (see bench/README.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--setups", default="sqlite,pg1,pg2", help="comma-separated, among sqlite, pg1, pg2"
    )
    parser.add_argument(
        "--pg-url", default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"),
        help="a PostgreSQL database to connect to for CREATE/DROP DATABASE (env BENCH_PG_URL)",
    )  # fmt: skip
    parser.add_argument(
        "--pg-setting", action="append", default=[], metavar="NAME=VALUE",
        help="ALTER DATABASE ... SET NAME = VALUE on each bench database before the bridges"
        " connect (an experiment, e.g. plan_cache_mode=force_custom_plan); repeatable",
    )  # fmt: skip
    r = parser.add_argument_group("registration")
    r.add_argument("--registrations", type=int, default=3000, help="watches registered")
    r.add_argument("--clients", type=int, default=8, help="concurrent clients")
    p = parser.add_argument_group("paced (below capacity: double polls, writes per poll)")
    p.add_argument("--paced-watches", type=int, default=600, help="watches")
    p.add_argument("--paced-interval", type=float, default=1.0, help="their poll interval, s")
    p.add_argument(
        "--paced-warmup", type=float, default=STATS_FLUSH_S,
        help="seconds: PostgreSQL counts an idle connection's work up to 10 s late",
    )  # fmt: skip
    p.add_argument("--paced-duration", type=float, default=10.0, help="window, seconds")
    p.add_argument("--probes", type=int, default=8, help="jobs whose polls are timed one by one")
    s = parser.add_argument_group("saturation")
    s.add_argument(
        "--saturation-watches", type=int, default=3000,
        help="watches (registered by twice --clients, the bridges already saturated)",
    )  # fmt: skip
    s.add_argument(
        "--saturation-interval", type=float, default=0.1,
        help="their poll interval, s (the bridge refuses less than 0.1)",
    )  # fmt: skip
    s.add_argument(
        "--saturation-warmup", type=float, default=STATS_FLUSH_S,
        help="seconds: PostgreSQL counts an idle connection's work up to 10 s late",
    )  # fmt: skip
    s.add_argument("--saturation-duration", type=float, default=15.0, help="window, seconds")
    parser.add_argument(
        "--max-concurrency", type=int, default=64,
        help="BRIDGE_UPSTREAM__MAX_CONCURRENCY of each replica",
    )  # fmt: skip
    parser.add_argument(
        "--results", type=Path, default=base.ROOT / "bench" / "results", help="directory for JSON"
    )
    parser.add_argument(
        "--log-level", default="warning", choices=("debug", "info", "warning", "error"),
        help="BRIDGE_LOG__LEVEL of the bridges (their logs stay with --keep-temp)",
    )  # fmt: skip
    parser.add_argument("--keep-temp", action="store_true", help="keep logs and SQLite files")
    args = parser.parse_args(argv)
    keys = [key.strip() for key in args.setups.split(",") if key.strip()]
    unknown = [key for key in keys if key not in SETUPS]
    if not keys or unknown:
        parser.error(f"--setups takes a list among {', '.join(SETUPS)}")
    args.setups = [SETUPS[key] for key in keys]
    for setting in args.pg_setting:
        name, equals, _ = setting.partition("=")
        if not equals or not name.replace("_", "").replace(".", "").isalnum():
            parser.error(f"--pg-setting takes NAME=VALUE, not {setting!r}")
    return args


# PostgreSQL: a database per setup, and what it says about itself.


class Postgres:
    """CREATE/DROP DATABASE through `admin_url`; remembers what it created until dropped."""

    def __init__(self, admin_url: str, settings: Sequence[str] = ()) -> None:
        self.admin_url = admin_url
        self.settings = [setting.partition("=")[::2] for setting in settings]
        self.created: list[str] = []

    def url(self, database: str) -> str:
        root, _, _ = self.admin_url.rpartition("/")
        return f"{root}/{database}"

    async def create(self) -> str:
        name = f"bench_{secrets.token_hex(4)}"
        try:
            admin = await asyncpg.connect(self.admin_url, timeout=10)
        except (OSError, asyncpg.PostgresError) as error:
            where = self.admin_url.rpartition("@")[2]  # never a password
            raise BenchError(f"cannot connect to PostgreSQL at {where}: {error}") from error
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
            self.created.append(name)
            for setting, value in self.settings:
                # Quoted as a literal: ALTER DATABASE takes no parameters.
                literal = "'" + value.replace("'", "''") + "'"
                await admin.execute(f'ALTER DATABASE "{name}" SET {setting} = {literal}')
        finally:
            await admin.close()
        return name

    async def drop(self, name: str) -> None:
        admin = await asyncpg.connect(self.admin_url, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
        self.created.remove(name)

    async def drop_all(self) -> None:
        for name in list(self.created):
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                await self.drop(name)


_PG_COUNTERS = """
SELECT d.xact_commit, d.xact_rollback, t.n_tup_ins, t.n_tup_upd, t.n_tup_hot_upd,
       t.n_tup_del, t.seq_scan, t.idx_scan
FROM pg_stat_database d, pg_stat_user_tables t
WHERE d.datname = current_database() AND t.relname = 'watches'
"""
# The bench database's client backends (but this one) and every background process (shared by
# all databases: the WAL writer, the checkpointer, autovacuum).
_PG_PROCESSES = """
SELECT pid, backend_type = 'client backend' AS backend FROM pg_stat_activity
WHERE pid <> pg_backend_pid()
  AND (datname = current_database() OR backend_type <> 'client backend')
"""


@dataclass
class PgReading:
    counters: dict[str, int]
    cpu: dict[int, float]  # pid -> CPU seconds
    backends: set[int]


async def pg_reading(conn: Any) -> PgReading:
    # Each query is its own transaction: no cached statistics snapshot to clear.
    row = await conn.fetchrow(_PG_COUNTERS)
    processes = await conn.fetch(_PG_PROCESSES)
    cpu = {}
    for process in processes:
        with contextlib.suppress(OSError):
            cpu[process["pid"]] = cpu_seconds(process["pid"])
    backends = {p["pid"] for p in processes if p["backend"]}
    return PgReading(dict(row) if row else {}, cpu, backends)


def pg_delta(start: PgReading, end: PgReading) -> dict[str, Any]:
    """Counter deltas, and the CPU of the PostgreSQL processes in between: a process that started
    meanwhile counts from zero, one that ended is lost (counted in `processes_lost`)."""
    used = {pid: seconds - start.cpu.get(pid, 0.0) for pid, seconds in end.cpu.items()}
    return {
        "counters": {k: end.counters[k] - start.counters.get(k, 0) for k in end.counters},
        "cpu_backends_s": sum(s for pid, s in used.items() if pid in end.backends),
        "cpu_background_s": sum(s for pid, s in used.items() if pid not in end.backends),
        "backends": len(end.backends),
        "processes_lost": len(set(start.cpu) - set(end.cpu)),
    }


# Readings of one window: simulator GETs, CPU by process, PostgreSQL counters.


@dataclass
class Snapshot:
    at: float
    wall: float
    gets: int
    cpu: dict[str, float]
    pg: PgReading | None


@dataclass
class Bench:
    args: argparse.Namespace
    services: Services
    control: Control
    session: aiohttp.ClientSession
    sim: Service
    workdir: Path
    postgres: Postgres


@dataclass
class Deployment:
    """The replicas of one setup and how to read their store."""

    setup: Setup
    replicas: list[Service]
    store_url: str
    sqlite_path: Path | None = None
    database: str | None = None
    stats: Any = None  # an asyncpg connection to the database, PostgreSQL only
    jobs: dict[str, list[str]] = field(default_factory=dict)

    @property
    def urls(self) -> list[str]:
        return [replica.url for replica in self.replicas]

    def pids(self) -> dict[str, int]:
        return {replica.name: replica.pid for replica in self.replicas}


async def snapshot(bench: Bench, deployment: Deployment) -> Snapshot:
    pids = {**deployment.pids(), "simulator": bench.sim.pid, "bench": os.getpid()}
    pg = await pg_reading(deployment.stats) if deployment.stats is not None else None
    stats = await bench.control.stats()
    cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
    cpu[MACHINE] = machine_busy_seconds()
    return Snapshot(time.monotonic(), time.time(), stats["gets_total"], cpu, pg)


def window(start: Snapshot, end: Snapshot, replicas: Sequence[str]) -> dict[str, Any]:
    """Seconds, polls and CPU (seconds and % of one core, by process) between two snapshots."""
    seconds = end.at - start.at
    cpu = {name: end.cpu[name] - start.cpu[name] for name in end.cpu}
    machine = cpu.pop(MACHINE)
    cpu["bridges"] = sum(cpu[name] for name in replicas)
    pg = pg_delta(start.pg, end.pg) if start.pg and end.pg else None
    if pg is not None:
        cpu["postgres"] = pg["cpu_backends_s"] + pg["cpu_background_s"]
    accounted = cpu["bridges"] + sum(cpu.get(n, 0.0) for n in ("simulator", "bench", "postgres"))
    cpu["other"] = max(0.0, machine - accounted)
    polls = end.gets - start.gets
    return {
        "window_s": seconds,
        "wall_start": start.wall,
        "wall_end": end.wall,
        "polls": polls,
        "polls_per_s": polls / seconds,
        "cpu_s": cpu,
        "cpu_percent": {name: 100 * used / seconds for name, used in cpu.items()},
        "postgres": pg,
    }


def per_1000(amount: float | None, count: float) -> float | None:
    return None if amount is None or not count else 1000 * amount / count


async def first_poll_writes(deployment: Deployment, prefix: str) -> int:
    """Watches of jobs `prefix`* whose row a state change wrote after the insert: a watch's first
    poll writes the job's state (new to the bridge); later polls of an unchanged job must not."""
    sql = "SELECT count(*) FROM watches WHERE job_id LIKE {0} AND updated_at > created_at"
    return await _count(deployment, sql, f"{prefix}%")


async def _count(deployment: Deployment, sql: str, *args: Any) -> int:
    if deployment.stats is not None:
        marks = [f"${i + 1}" for i in range(len(args))]
        count: int = await deployment.stats.fetchval(sql.format(*marks), *args)
        return count
    assert deployment.sqlite_path is not None

    def read() -> int:
        db = sqlite3.connect(f"file:{deployment.sqlite_path}?mode=ro", uri=True, timeout=10)
        try:
            return int(db.execute(sql.format(*"?" * len(args)), args).fetchone()[0])
        finally:
            db.close()

    return await asyncio.to_thread(read)


async def state_writes(deployment: Deployment, since: float, until: float) -> int:
    """Watches whose row a state change (progress or completion) wrote in [since, until]: those
    writes set updated_at, lease claims and renewals do not."""
    sql = "SELECT count(*) FROM watches WHERE updated_at >= {0} AND updated_at <= {1}"
    return await _count(deployment, sql, since, until)


def write_figures(result: dict[str, Any], active: int, writes: int) -> dict[str, Any]:
    """Row writes of one window: state changes (`writes`), and from PostgreSQL's counters every
    row update of the watches table, per poll and per active watch (to compare with renewals).
    Rows inserted in the window mean earlier registrations were counted late, in it."""
    polls, seconds, pg = result["polls"], result["window_s"], result["postgres"]
    found: dict[str, Any] = {
        "state_writes": writes,
        "state_writes_per_poll": writes / polls if polls else None,
        "active_watches": active,
        "polls_per_watch_min": 60 * polls / active / seconds if active else None,
    }
    if pg is not None:
        counters = pg["counters"]
        updates = counters["n_tup_upd"]
        found.update(
            {
                "row_updates": updates,
                "row_updates_per_poll": updates / polls if polls else None,
                "hot_percent": 100 * counters["n_tup_hot_upd"] / updates if updates else None,
                # Lease renewals alone: one per watch every RENEWAL_S to RENEWAL_S + 1 s (the
                # 1 s tick), 10 to 12 a minute. A write per poll would add polls_per_watch_min.
                "updates_per_watch_min": 60 * updates / active / seconds if active else None,
                "inserts": counters["n_tup_ins"],
                "commits_per_1000_polls": per_1000(counters["xact_commit"], polls),
            }
        )
    return found


# The bridges.


def bridge_env(bench: Bench, store_url: str) -> dict[str, str]:
    interval = str(bench.args.saturation_interval)
    return {
        "BRIDGE_UPSTREAM__BASE_URL": bench.sim.url,
        "BRIDGE_UPSTREAM__API_KEY": base.API_KEY,
        "BRIDGE_UPSTREAM__MAX_CONCURRENCY": str(bench.args.max_concurrency),
        "BRIDGE_STORE__URL": store_url,
        "BRIDGE_STORE__LEASE_S": str(LEASE_S),
        "BRIDGE_SECURITY__ALLOW_PRIVATE_CALLBACKS": "true",
        # The per-token registration limit would measure itself, not the store.
        "BRIDGE_AUTH__REGISTRATIONS_PER_S": str(UNLIMITED),
        "BRIDGE_AUTH__REGISTRATION_BURST": str(UNLIMITED),
        "BRIDGE_POLL__INTERVAL_S": interval,
        "BRIDGE_POLL__MIN_INTERVAL_S": interval,
        "BRIDGE_POLL__JITTER": "0",
        "BRIDGE_POLL__TIMEOUT_S": "86400",
        "BRIDGE_LOG__LEVEL": bench.args.log_level,
        "BRIDGE_LOG__FORMAT": "json",
    }


async def deploy(bench: Bench, setup: Setup) -> Deployment:
    if setup.postgres:
        database = await bench.postgres.create()
        store_url = bench.postgres.url(database)
        sqlite_path = None
    else:
        database = None
        sqlite_path = bench.workdir / f"{setup.key}.db"
        store_url = f"sqlite:///{sqlite_path}"
    env = bridge_env(bench, store_url)
    # Started one after the other: the first applies the migrations.
    replicas = [
        await bench.services.start_bridge(f"{setup.key}-{i + 1}", env)
        for i in range(setup.replicas)
    ]
    deployment = Deployment(setup, replicas, store_url, sqlite_path, database)
    if database is not None:
        deployment.stats = await asyncpg.connect(
            store_url, timeout=10, server_settings={"application_name": "bridge-bench"}
        )
    return deployment


async def undeploy(bench: Bench, deployment: Deployment) -> None:
    for replica in deployment.replicas:
        bench.services.stop(replica)
    if deployment.stats is not None:
        await deployment.stats.close()
    if deployment.database is not None:
        await bench.postgres.drop(deployment.database)


async def create_jobs(bench: Bench, job_ids: Sequence[str]) -> None:
    """Jobs that stay queued for hours, at the same queue position: a poll never sees news."""
    specs = [
        {"id": job_id, "queue_positions": base.LONG_QUEUE, "seconds_per_position": 3600.0}
        for job_id in job_ids
    ]
    await each(specs, bench.control.create_job, 32)


async def register(
    bench: Bench, urls: Sequence[str], job_ids: Sequence[str], interval: float, clients: int
) -> tuple[float, list[float]]:
    """A watch per job from `clients` concurrent clients, client k sending to urls[k % n]; the
    seconds it took and each registration's latency."""
    pending = iter(job_ids)
    latencies: list[float] = []

    async def client(k: int) -> None:
        url = f"{urls[k % len(urls)]}/v1/watches"
        for job_id in pending:  # shared: each job is taken by one client
            body = {
                "job_id": job_id,
                # Never called: the jobs do not end during the run.
                "callback_url": f"http://127.0.0.1:9/hooks/{job_id}",
                "poll_interval_s": interval,
            }
            sent = time.monotonic()
            async with bench.session.post(url, json=body) as response:
                if response.status != 201:
                    text = await response.text()
                    raise BenchError(f"registering {job_id} answered {response.status}: {text}")
                await response.read()
            latencies.append(time.monotonic() - sent)

    started = time.monotonic()
    await asyncio.gather(*(client(k) for k in range(clients)))
    return time.monotonic() - started, latencies


async def holders(deployment: Deployment) -> dict[str, int] | None:
    """Active watches by lease owner (PostgreSQL): how the replicas split the work."""
    if deployment.stats is None:
        return None
    rows = await deployment.stats.fetch(
        "SELECT coalesce(lease_owner, '(none)') AS owner, count(*) FROM watches"
        " WHERE status = 'active' GROUP BY 1 ORDER BY 2 DESC"
    )
    return {row[0]: row[1] for row in rows}


async def table_stats(deployment: Deployment) -> dict[str, Any] | None:
    """The watches table over the whole run (PostgreSQL): updates, how many were HOT, size."""
    if deployment.stats is None:
        return None
    row = await deployment.stats.fetchrow(
        "SELECT n_live_tup, n_dead_tup, n_tup_ins, n_tup_upd, n_tup_hot_upd, seq_scan, idx_scan,"
        " autovacuum_count, autoanalyze_count, pg_relation_size(relid) AS heap_bytes,"
        " pg_indexes_size(relid) AS index_bytes"
        " FROM pg_stat_user_tables WHERE relname = 'watches'"
    )
    found = dict(row)
    updates = found["n_tup_upd"]
    found["hot_percent"] = 100 * found["n_tup_hot_upd"] / updates if updates else None
    return found


# The three steps of a setup.


async def step_registration(bench: Bench, deployment: Deployment) -> dict[str, Any]:
    args = bench.args
    n = args.registrations
    job_ids = [f"{deployment.setup.key}-r-{i:05d}" for i in range(n)]
    deployment.jobs["registration"] = job_ids
    await create_jobs(bench, job_ids)
    start = await snapshot(bench, deployment)
    seconds, latencies = await register(
        bench, deployment.urls, job_ids, DORMANT_INTERVAL_S, args.clients
    )
    end = await snapshot(bench, deployment)
    result = window(start, end, list(deployment.pids()))
    print(f"  registration: {n} in {seconds:.1f} s ({n / seconds:,.0f}/s)")
    counted = None
    if deployment.stats is not None and start.pg is not None:
        # What PostgreSQL counts for the registrations, once every connection has reported them
        # (with the lease renewals and claims of the wait).
        await asyncio.sleep(STATS_FLUSH_S)
        late = await pg_reading(deployment.stats)
        counted = {k: late.counters[k] - start.pg.counters[k] for k in late.counters}
    first = await first_poll_writes(deployment, f"{deployment.setup.key}-r-")
    return {
        "registrations": n,
        "clients": args.clients,
        "seconds": seconds,
        "per_s": n / seconds,
        "latency_s": measure.summary(latencies),
        "bridge_cpu_s_per_1000": per_1000(result["cpu_s"]["bridges"], n),
        "postgres_cpu_s_per_1000": per_1000(result["cpu_s"].get("postgres"), n),
        "window": result,
        "counted_after_s": STATS_FLUSH_S if counted is not None else None,
        "counters": counted,
        "commits_per_registration": counted["xact_commit"] / n if counted else None,
        "state_writes_per_registration": first / n,
        "seq_scans": counted["seq_scan"] if counted else None,
    }


async def step_paced(bench: Bench, deployment: Deployment, active_before: int) -> dict[str, Any]:
    args, control = bench.args, bench.control
    n, interval = args.paced_watches, args.paced_interval
    job_ids = [f"{deployment.setup.key}-p-{i:05d}" for i in range(n)]
    deployment.jobs["paced"] = job_ids
    await create_jobs(bench, job_ids)
    await register(bench, deployment.urls, job_ids, interval, args.clients)
    print(f"  paced: {n} watches at {interval:g} s; measuring for {args.paced_duration:g} s")
    await asyncio.sleep(args.paced_warmup)
    window_end = time.monotonic() + args.paced_duration
    probe_ids = job_ids[:: max(1, n // args.probes)][: args.probes] if args.probes else []
    probes = ProbeResults()
    probe_tasks = [
        asyncio.create_task(
            probe(control, job_id, interval, window_end, 0.01, 0.1, 0.05, probes)
        )
        for job_id in probe_ids
    ]  # fmt: skip
    start = await snapshot(bench, deployment)
    readings_start = await control.readings(job_ids)
    await asyncio.sleep(max(0.0, window_end - time.monotonic()))
    readings_end = await control.readings(job_ids)
    end = await snapshot(bench, deployment)
    await asyncio.gather(*probe_tasks)
    result = window(start, end, list(deployment.pids()))

    rates = []
    for job_id, first in readings_start.items():
        last = readings_end[job_id]
        if last.at > first.at:
            rates.append((last.polls - first.polls) / (last.at - first.at))
    expected = 1 / interval
    writes = await state_writes(deployment, result["wall_start"], result["wall_end"])
    gaps = [interval + lateness for lateness in probes.lateness_s]
    return {
        "watches": n,
        "interval_s": interval,
        **result,
        "expected_polls_per_s": n / interval,
        "job_polls_per_s": measure.summary(rates),
        "job_polls_per_s_min": min(rates, default=None),
        "expected_job_polls_per_s": expected,
        "jobs_doubled": sum(rate > DOUBLED * expected for rate in rates),
        "probes": {
            "jobs": len(probe_ids),
            "gap_s": measure.summary(gaps),
            "gap_min_s": min(gaps, default=None),
            "several_polls_between_reads": probes.skipped,
            "imprecise_gaps": probes.imprecise,
            "reads": probes.reads,
        },
        "cpu_s_per_1000_polls": {
            name: per_1000(result["cpu_s"].get(name), result["polls"])
            for name in ("bridges", "postgres")
        },
        "writes": write_figures(result, active_before + n, writes),
    }


async def step_saturation(
    bench: Bench, deployment: Deployment, active_before: int
) -> dict[str, Any]:
    args = bench.args
    n, interval = args.saturation_watches, args.saturation_interval
    job_ids = [f"{deployment.setup.key}-s-{i:05d}" for i in range(n)]
    deployment.jobs["saturation"] = job_ids
    await create_jobs(bench, job_ids)
    register_s, latencies = await register(
        bench, deployment.urls, job_ids, interval, 2 * args.clients
    )
    print(
        f"  saturation: {n} watches at {interval:g} s registered in {register_s:.1f} s;"
        f" measuring for {args.saturation_duration:g} s"
    )
    await asyncio.sleep(args.saturation_warmup)
    start = await snapshot(bench, deployment)
    await asyncio.sleep(args.saturation_duration)
    end = await snapshot(bench, deployment)
    result = window(start, end, list(deployment.pids()))
    writes = await state_writes(deployment, result["wall_start"], result["wall_end"])
    return {
        "watches": n,
        "interval_s": interval,
        "demand_polls_per_s": n / interval,
        # Registered while the earlier ones were already polled as fast as the bridge can.
        "registration_per_s": n / register_s,
        "registration_latency_s": measure.summary(latencies),
        **result,
        "cpu_s_per_1000_polls": {
            name: per_1000(result["cpu_s"].get(name), result["polls"])
            for name in ("bridges", "postgres", "simulator")
        },
        "writes": write_figures(result, active_before + n, writes),
        "watches_by_holder": await holders(deployment),
    }


async def run_setup(bench: Bench, setup: Setup) -> dict[str, Any]:
    print(f"{setup.label}: {setup.replicas} replica(s)")
    deployment = await deploy(bench, setup)
    try:
        registration = await step_registration(bench, deployment)
        active = bench.args.registrations
        paced = await step_paced(bench, deployment, active)
        active += bench.args.paced_watches
        saturation = await step_saturation(bench, deployment, active)
        table = await table_stats(deployment)
    finally:
        await undeploy(bench, deployment)
    return {
        "label": setup.label,
        "replicas": setup.replicas,
        "store": "postgresql" if setup.postgres else "sqlite",
        "registration": registration,
        "paced": paced,
        "saturation": saturation,
        "watches_table": table,
    }


# Report.


def _get(result: dict[str, Any], *path: str) -> Any:
    value: Any = result
    for key in path:
        if value is None:
            return None
        value = value.get(key)
    return value


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} %"


def _ratio(value: float | None, digits: int = 2) -> str:
    return fmt_num(value, digits)


def _one(value: float | None) -> str:
    return fmt_num(value, 1)


def report(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> str:
    keys = list(results)
    first = "sqlite" if "sqlite" in results else keys[0]
    reference = _get(results[first], "saturation", "polls_per_s")

    def row(label: str, fmt: Any, *path: str) -> tuple[str, list[str]]:
        return label, [fmt(_get(results[key], *path)) for key in keys]

    def cpu_row(label: str, *path: str) -> tuple[str, list[str]]:
        cells = []
        for key in keys:
            pct = _get(results[key], *path, "cpu_percent")
            parts = [pct["bridges"], pct.get("postgres"), pct["simulator"], pct["bench"]]
            parts.append(pct["other"])
            cells.append(" / ".join("-" if p is None else f"{p:.0f}" for p in parts))
        return label, cells

    def ratio_row() -> tuple[str, list[str]]:
        cells = []
        for key in keys:
            polls = _get(results[key], "saturation", "polls_per_s")
            cells.append(_ratio(polls / reference if reference else None))
        return f"  relative to {results[first]['label']}", cells

    def holder_row() -> tuple[str, list[str]]:
        cells = []
        for key in keys:
            split = _get(results[key], "saturation", "watches_by_holder")
            cells.append("-" if split is None else " / ".join(f"{n:,}" for n in split.values()))
        return "  active watches by lease holder", cells

    def gaps_row() -> tuple[str, list[str]]:
        cells = []
        for key in keys:
            probes = _get(results[key], "paced", "probes")
            cells.append(
                f"{fmt_ms(probes['gap_min_s'])} ({probes['gap_s']['n']} gaps,"
                f" {probes['several_polls_between_reads']} doubles)"
            )
        return "  probes: shortest gap (gaps, 2 polls seen at once)", cells

    interval = args.paced_interval
    sat = args.saturation_interval
    rows: list[tuple[str, list[str]]] = [
        (f"registration ({args.registrations:,}, {args.clients} clients)", []),
        row("  registrations/s", lambda v: fmt_num(v), "registration", "per_s"),
        row("  latency p50", fmt_ms, "registration", "latency_s", "p50"),
        row("  latency p99", fmt_ms, "registration", "latency_s", "p99"),
        row("  bridge CPU per 1,000", fmt_s, "registration", "bridge_cpu_s_per_1000"),
        row("  PostgreSQL CPU per 1,000", fmt_s, "registration", "postgres_cpu_s_per_1000"),
        cpu_row("  CPU % bridges / PG / sim / bench / other", "registration", "window"),
        row("  commits per registration", _ratio, "registration", "commits_per_registration"),
        row("  state writes per registration (first poll)", _ratio, "registration",
            "state_writes_per_registration"),
        row("  sequential scans of watches", lambda v: fmt_num(v), "registration", "seq_scans"),
        (f"paced ({args.paced_watches:,} watches at {interval:g} s)", []),
        row("  upstream polls/s", lambda v: fmt_num(v, 1), "paced", "polls_per_s"),
        row(f"  polls per job per s, p50 (expect {1 / interval:.2f})", _ratio,
            "paced", "job_polls_per_s", "p50"),
        row("  polls per job per s, max", _ratio, "paced", "job_polls_per_s", "max"),
        row(f"  jobs polled > {DOUBLED:g}x their rate", str, "paced", "jobs_doubled"),
        gaps_row(),
        row("  bridge CPU per 1,000 polls", fmt_s, "paced", "cpu_s_per_1000_polls", "bridges"),
        row("  PostgreSQL CPU per 1,000 polls", fmt_s, "paced", "cpu_s_per_1000_polls",
            "postgres"),
        row("  watch row updates per poll (renewals incl.)", _ratio, "paced", "writes",
            "row_updates_per_poll"),
        row("  polls per active watch per min", _one, "paced", "writes", "polls_per_watch_min"),
        row("  row updates per active watch per min (renewals: 10-12)", _one, "paced",
            "writes", "updates_per_watch_min"),
        row("  state writes (updated_at) in window", str, "paced", "writes", "state_writes"),
        (f"saturation ({args.saturation_watches:,} more watches at {sat:g} s)", []),
        row("  upstream polls/s", lambda v: fmt_num(v), "saturation", "polls_per_s"),
        ratio_row(),
        cpu_row("  CPU % bridges / PG / sim / bench / other", "saturation"),
        row("  bridge CPU per 1,000 polls", fmt_s, "saturation", "cpu_s_per_1000_polls",
            "bridges"),
        row("  PostgreSQL CPU per 1,000 polls", fmt_s, "saturation", "cpu_s_per_1000_polls",
            "postgres"),
        row("  commits per 1,000 polls", _ratio, "saturation", "writes",
            "commits_per_1000_polls"),
        row("  watch row updates per poll (renewals incl.)", _ratio, "saturation", "writes",
            "row_updates_per_poll"),
        row("  polls per active watch per min", _one, "saturation", "writes",
            "polls_per_watch_min"),
        row("  row updates per active watch per min (renewals: 10-12)", _one, "saturation",
            "writes", "updates_per_watch_min"),
        row("  HOT updates", _pct, "saturation", "writes", "hot_percent"),
        row("  state writes (updated_at) in window", str, "saturation", "writes",
            "state_writes"),
        holder_row(),
        row("  registering them: per s (already saturated)", lambda v: fmt_num(v), "saturation",
            "registration_per_s"),
        row("  registering them: latency p99", fmt_ms, "saturation",
            "registration_latency_s", "p99"),
        ("whole run", []),
        row("  HOT updates of watches", _pct, "watches_table", "hot_percent"),
    ]  # fmt: skip
    head = ["metric", *(results[key]["label"] for key in keys)]
    return measure.grid("Storage: SQLite against PostgreSQL", head, rows)


async def bench(
    args: argparse.Namespace, services: Services, workdir: Path, postgres: Postgres
) -> dict[str, Any]:
    sim = await services.start_devtool(
        "simulator", ["fake-upstream", "--api-key", base.API_KEY, "--seed", "1"]
    )
    idle_load = await base.background_load()
    if idle_load > base.BUSY_MACHINE_PERCENT:
        print(
            f"warning: before the run, other processes used {idle_load:.0f} % of a core on this "
            f"{os.cpu_count()}-CPU machine: expect lower, noisier numbers"
        )
    connector = aiohttp.TCPConnector(limit=64, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        bench = Bench(args, services, Control(session, sim.url), session, sim, workdir, postgres)
        results = {}
        try:
            for setup in args.setups:
                results[setup.key] = await run_setup(bench, setup)
        finally:
            await postgres.drop_all()
        print(report(args, results))
        stats = await bench.control.stats()
    return {"background_cpu_percent": idle_load, "setups": results, "simulator_stats": stats}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    postgres = Postgres(args.pg_url, args.pg_setting)

    def drop_leftovers() -> None:
        if postgres.created:  # interrupted before the run dropped them
            asyncio.run(postgres.drop_all())

    return run_bench(
        args, "stores", lambda services, workdir, _: bench(args, services, workdir, postgres),
        arguments={
            "setups": [setup.key for setup in args.setups],
            "pg_url": args.pg_url.split("@", 1)[-1],
        },
        cleanup=drop_leftovers, prefix="bridge-stores-",
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
