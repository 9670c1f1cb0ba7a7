"""Delivery benchmark: webhook throughput against a bare POST loop, and per-host isolation.

    .venv/bin/python bench/delivery.py [--jobs 100000] [--duration 8] [--slow-backlog 1000] ...

(a) throughput: a backlog of `--jobs` due webhooks to one fast receiver (`webhook-bridge listen`)
is drained by a bridge; its deliveries/s and CPU over a steady window are compared with a bare
POST loop of the same client (httpx on the aiohttp transport, as service/bridge.py builds it)
posting the same bodies, signed as they are sent, to the same receiver with the same
concurrency (the per-host limit, which is what one receiver gets).

(b) isolation: fast-host notification latency (registration to the webhook's arrival) with
and without a slow host (answers after --slow-delay s) holding a backlog of --slow-backlog.

See bench/README.md. The table is printed and the result written to
bench/results/<time>-delivery.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import measure
import orjson
from harness import (
    ROOT,
    BenchError,
    Service,
    Services,
    cpu_seconds,
    free_port,
    machine_busy_seconds,
    paused,
)
from loops import Control, each
from measure import fmt_ms, fmt_num
from runner import PY_SPY_SUFFIXES, py_spy, run_bench

from service import USER_AGENT
from service.http_clients import transport as _transport
from service.signing import new_secret, sign
from service.store.base import callback_host

API_KEY = "bw_bench_key"
UNLIMITED = "1000000"
# The defaults of config/bridge.toml the comparison depends on.
MAX_CONCURRENCY = 64
MAX_PER_HOST = 16
TIMEOUT_S = 15.0
# Fast-host p99 beside the slow host: far below the slow host's answer time, which is what
# the fast host's webhooks would wait if the slow one could take every slot.
ISOLATED_P99_S = 1.0
# Sending in the bridge's own process keeps this share of the bare loop; replicas give more.
INLINE_SHARE_TARGET = 0.6


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--jobs", type=int, default=100_000, help="webhooks in the throughput backlog")
    add("--clients", type=int, default=16, help="concurrent registration clients")
    add("--warmup", type=float, default=2.0, help="seconds before each throughput window")
    add("--duration", type=float, default=4.0, help="seconds of each throughput window")
    add("--pairs", type=int, default=3,
        help="throughput windows of the bridge, each followed by one of the bare loop")  # fmt: skip
    add("--fast", type=int, default=200, help="fast-host watches in each isolation step")
    add("--fast-rate", type=float, default=40.0, help="fast-host registrations per second")
    add("--slow-backlog", type=int, default=1000, help="slow-host watches (isolation)")
    add("--slow-delay", type=float, default=15.0, help="seconds the slow host takes to answer")
    add("--parts", default="a,b", help="a (throughput), b (isolation) or both")
    add("--per-host", type=int, default=MAX_PER_HOST, help="the bridges' delivery.max_per_host")
    add("--log-level", default="warning", help="the bridges' log level")
    add("--sender", default="inline", choices=["inline", "process"],
        help="the bridges' delivery.sender")  # fmt: skip
    add("--results", type=Path, default=ROOT / "bench" / "results", help="directory for JSON")
    add("--keep-temp", action="store_true", help="keep the temporary directory")
    add("--py-spy", action="store_true", help="profile the draining bridge (py-spy --gil)")
    add("--py-spy-format", default="speedscope", choices=sorted(PY_SPY_SUFFIXES),
        help="the profile's format (raw: collapsed stacks, one line each)")  # fmt: skip
    add("--backlog", type=Path, help="a SQLite file of a built backlog to start from (built"
        " and saved there when missing): saves the build's minutes between runs")  # fmt: skip
    return parser.parse_args(argv)


class Run:
    def __init__(self, args: argparse.Namespace, services: Services, workdir: Path, stamp: str):
        self.args = args
        self.services = services
        self.workdir = workdir
        self.stamp = stamp
        self.sim: Service
        self.control: Control

    def bridge_env(self, db: Path, **extra: str) -> dict[str, str]:
        return {
            "BRIDGE_UPSTREAM__BASE_URL": self.sim.url,
            "BRIDGE_UPSTREAM__API_KEY": API_KEY,
            "BRIDGE_STORE__URL": f"sqlite:///{db}",
            "BRIDGE_SECURITY__ALLOW_PRIVATE_CALLBACKS": "true",
            "BRIDGE_AUTH__REGISTRATIONS_PER_S": UNLIMITED,
            "BRIDGE_AUTH__REGISTRATION_BURST": UNLIMITED,
            "BRIDGE_POLL__INTERVAL_S": "2",
            "BRIDGE_POLL__MIN_INTERVAL_S": "2",
            "BRIDGE_LOG__LEVEL": self.args.log_level,
            "BRIDGE_LOG__FORMAT": "json",
            "BRIDGE_DELIVERY__MAX_PER_HOST": str(self.args.per_host),
            "BRIDGE_DELIVERY__SENDER": self.args.sender,
            **extra,
        }

    async def finished_jobs(self, prefix: str, count: int) -> list[str]:
        """`count` simulator jobs that have already succeeded."""
        ids = [f"{prefix}-{i:06d}" for i in range(count)]
        specs = [{"id": i, "queue_positions": 0, "processing_s": 0} for i in ids]
        await each(specs, self.control.create_job, 32)
        return ids


async def metric(session: aiohttp.ClientSession, url: str, name: str) -> float:
    """The value of one sample of the bridge's /metrics (0 when absent)."""
    async with session.get(f"{url}/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == name:
            return float(value)
    return 0.0


def db_count(db: Path, sql: str, *params: Any) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return int(conn.execute(sql, params).fetchone()[0])


async def wait_for(what: str, predicate: Any, within_s: float, period: float = 0.5) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchError(f"not within {within_s:g} s: {what}")
        await asyncio.sleep(period)


# (a) Throughput.


async def throughput(run: Run) -> dict[str, Any]:
    args = run.args
    db = run.workdir / "throughput.db"
    port = free_port()
    receiver_url = f"http://127.0.0.1:{port}"
    env = run.bridge_env(
        db,
        # The first attempt fails (nothing listens yet) and the next is an hour away: the
        # backlog builds up without a single webhook delivered.
        BRIDGE_DELIVERY__RETRY_SCHEDULE_S="[3600]",
        BRIDGE_DELIVERY__JITTER="0",
    )
    if args.backlog is not None and args.backlog.exists():
        print(f"(a) the backlog of {args.backlog} ...", flush=True)
        copy_db(args.backlog, db)
    else:
        await build_backlog(run, db, env, receiver_url)
        if args.backlog is not None:
            copy_db(db, args.backlog)
    backlog = due_to(db, receiver_url)
    print(f"    draining {backlog:,} due webhooks ...", flush=True)
    receiver = await run.services.start_devtool("receiver-fast", ["listen", "--quiet"], port)

    # The bare loop's bodies: the same as the bridge's, to the same receiver.
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT d.id, d.body, w.callback_url FROM deliveries d JOIN watches w"
            " ON w.id = d.watch_id ORDER BY d.id"
        ).fetchall()
    bridge = await run.services.start_bridge("bridge-drain", env)
    pairs: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as session:
        succeeded = 'bridge_delivery_attempts_total{outcome="succeeded"}'
        await asyncio.sleep(args.warmup)
        for n in range(args.pairs):
            # The bridge and its sender process, if any (started with the first webhook).
            pids = {"bridge": [bridge.pid, *_children(bridge.pid)], "receiver": [receiver.pid]}
            start = await _sample(session, bridge.url, succeeded, pids)
            spy = _profile(run, bridge) if args.py_spy and n == 0 else None
            await asyncio.sleep(args.duration)
            end = await _sample(session, bridge.url, succeeded, pids)
            if spy is not None:
                spy()
            # The bare loop next, while the bridge is stopped (SIGSTOP): the two windows of a
            # pair are seconds apart, so a machine whose speed drifts skews their ratio little.
            with paused(pids["bridge"]):
                bare = await bare_posts(
                    rows, args.per_host, args.warmup, args.duration, receiver.pid
                )
            bridge_side = _window(start, end, "bridge")
            pairs.append(
                {"bridge": bridge_side, "bare": bare, "ratio": bridge_side["per_s"] / bare["per_s"]}
            )
            await asyncio.sleep(args.warmup)
    left = db_count(db, "SELECT count(*) FROM deliveries WHERE status = 'pending'")
    run.services.stop(bridge)
    if left == 0:
        raise BenchError("the backlog ran out inside a window: raise --jobs")
    # For the record: the same loop through the client's own `client.post`.
    posted = await bare_posts(
        rows, args.per_host, args.warmup, args.duration, receiver.pid, via_client=True
    )
    run.services.stop(receiver)
    ratios = [pair["ratio"] for pair in pairs]
    bridge_mean = statistics.fmean(pair["bridge"]["per_s"] for pair in pairs)
    return {
        "pairs": pairs,
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "bridge_per_s": bridge_mean,
        "bare_client_post": posted,
        "ratio_client_post": bridge_mean / posted["per_s"],
        "jobs": backlog,
    }


async def build_backlog(run: Run, db: Path, env: dict[str, str], receiver_url: str) -> None:
    """`--jobs` deliveries in `db`, each with one failed attempt and the next an hour away."""
    args = run.args
    print(f"(a) building a backlog of {args.jobs:,} webhooks ...", flush=True)
    began = time.monotonic()
    jobs = await run.finished_jobs("t", args.jobs)
    setup = await run.services.start_bridge("bridge-backlog", env)
    await each(
        jobs,
        lambda job: run.control.register(setup.url, job, f"{receiver_url}/hooks/{job}"),
        args.clients,
    )
    await wait_for(
        "every first attempt to fail",
        lambda: db_count(db, "SELECT count(*) FROM deliveries WHERE attempts >= 1") >= args.jobs,
        120,
    )
    run.services.stop(setup)
    print(f"    backlog ready in {time.monotonic() - began:.0f} s", flush=True)


def due_to(db: Path, receiver_url: str) -> int:
    """Make every pending delivery of the backlog in `db` due now, to `receiver_url`; their
    number."""
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE deliveries SET next_attempt_at = 0 WHERE status = 'pending'")
        # To this run's receiver (a saved backlog was built for another port).
        conn.execute(
            "UPDATE watches SET callback_url = ? || substr(callback_url, instr(callback_url,"
            " '/hooks/'))",
            (receiver_url,),
        )
        # Each delivery keeps its host key (migration 0003; an older backlog gets it when the
        # bridge migrates it).
        if any(row[1] == "host" for row in conn.execute("PRAGMA table_info(deliveries)")):
            conn.execute("UPDATE deliveries SET host = ?", (callback_host(receiver_url),))
    return db_count(db, "SELECT count(*) FROM deliveries WHERE status = 'pending'")


def copy_db(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite database (its WAL included)."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


async def _sample(
    session: aiohttp.ClientSession, url: str, name: str, pids: dict[str, list[int]]
) -> dict[str, Any]:
    count = await metric(session, url, name)
    return {
        "at": time.monotonic(),
        "count": count,
        "cpu": {k: sum(cpu_seconds(p) for p in group) for k, group in pids.items()},
        "machine": machine_busy_seconds(),
    }


def _children(pid: int) -> list[int]:
    """The child processes of `pid` (the bridge's sender process)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _window(start: dict[str, Any], end: dict[str, Any], me: str) -> dict[str, Any]:
    seconds = end["at"] - start["at"]
    count = end["count"] - start["count"]
    cpu = {k: end["cpu"][k] - start["cpu"][k] for k in start["cpu"]}
    others = max(0.0, end["machine"] - start["machine"] - sum(cpu.values()))
    return {
        "window_s": seconds,
        "webhooks": count,
        "per_s": count / seconds,
        "cpu_percent": 100 * cpu[me] / seconds,
        "cpu_s_per_1000": 1000 * cpu[me] / count if count else None,
        "receiver_cpu_percent": 100 * cpu["receiver"] / seconds,
        "other_cpu_percent": 100 * others / seconds,
    }


async def bare_posts(
    rows: list[tuple[str, bytes, str]],
    concurrency: int,
    warmup_s: float,
    window_s: float,
    receiver_pid: int,
    via_client: bool = False,
) -> dict[str, Any]:
    """`concurrency` workers POST the bodies round-robin, each signed as it is sent (its
    timestamp is the sending time, as the bridge's), reading each answer: through the transport
    as the bridge sends them, or (`via_client`) with `client.post` of an httpx client on the
    same transport."""
    secret = new_secret()
    # The bridge's transport, built by its own function (its delivery connector adds the
    # callback address check at connect time only), and requests sent straight to it as the
    # bridge's sender does.
    transport = _transport(aiohttp.TCPConnector(limit=MAX_CONCURRENCY, limit_per_host=0))
    client = httpx.AsyncClient(transport=transport, timeout=TIMEOUT_S, follow_redirects=False)
    extensions = {"timeout": httpx.Timeout(TIMEOUT_S).as_dict()}
    items = itertools.cycle(rows)
    counts = {"ok": 0, "errors": 0}
    stop = asyncio.Event()

    async def worker() -> None:
        while not stop.is_set():
            webhook_id, body, url = next(items)
            headers = {
                "content-type": "application/json",
                "user-agent": USER_AGENT,
                **sign(webhook_id, body, time.time(), [secret]),
            }
            try:
                request = httpx.Request(
                    "POST", url, content=body, headers=headers, extensions=extensions
                )
                async with asyncio.timeout(TIMEOUT_S):
                    if via_client:
                        response = await client.post(url, content=body, headers=headers)
                    else:
                        response = await transport.handle_async_request(request)
                        try:
                            await response.aread()
                        finally:
                            await response.aclose()
            except (httpx.HTTPError, OSError, TimeoutError):
                counts["errors"] += 1
            else:
                counts["ok" if response.status_code < 300 else "errors"] += 1

    me = os.getpid()
    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    try:
        await asyncio.sleep(warmup_s)
        start = {
            "at": time.monotonic(),
            "count": counts["ok"],
            "cpu": {"bare": cpu_seconds(me), "receiver": cpu_seconds(receiver_pid)},
            "machine": machine_busy_seconds(),
        }
        await asyncio.sleep(window_s)
        end = {
            "at": time.monotonic(),
            "count": counts["ok"],
            "cpu": {"bare": cpu_seconds(me), "receiver": cpu_seconds(receiver_pid)},
            "machine": machine_busy_seconds(),
        }
    finally:
        stop.set()
        await asyncio.gather(*workers, return_exceptions=True)
        await client.aclose()  # and the transport under it
    result = _window(start, end, "bare")
    result["errors"] = counts["errors"]
    result["concurrency"] = concurrency
    return result


def _profile(run: Run, bridge: Service) -> Callable[[], None]:
    stem = run.args.results / f"{run.stamp}-delivery"
    fmt = run.args.py_spy_format
    return py_spy(run.services, bridge.pid, "drain", fmt, stem, run.args.duration)


# (b) Isolation.


async def isolation(run: Run) -> dict[str, Any]:
    args = run.args
    record = run.workdir / "fast.jsonl"
    fast = await run.services.start_devtool(
        "receiver-fast2", ["listen", "--quiet", "--record", str(record)]
    )
    slow = await run.services.start_devtool("receiver-slow", ["listen", "--quiet"])
    bridge = await run.services.start_bridge(
        "bridge-isolation", run.bridge_env(run.workdir / "isolation.db")
    )
    print("(b) fast host alone ...", flush=True)
    alone = await fast_latencies(run, bridge, fast, record, "alone")
    print(f"(b) {args.slow_backlog:,} webhooks to a host answering in {args.slow_delay:g} s ...")
    slow_jobs = await run.finished_jobs("s", args.slow_backlog)
    query = f"delay_s={args.slow_delay:g}"
    await each(
        slow_jobs,
        lambda job: run.control.register(bridge.url, job, f"{slow.url}/hooks/{job}?{query}"),
        args.clients,
    )
    async with aiohttp.ClientSession() as session:
        in_flight = await metric(session, bridge.url, "bridge_deliveries_in_flight")
    beside = await fast_latencies(run, bridge, fast, record, "beside")
    run.services.stop(bridge)
    return {
        "alone": alone,
        "beside_slow": beside,
        "slow_backlog": args.slow_backlog,
        "slow_delay_s": args.slow_delay,
        "in_flight_after_slow_registered": in_flight,
        "per_host": args.per_host,
    }


async def fast_latencies(
    run: Run, bridge: Service, fast: Service, record: Path, label: str
) -> dict[str, Any]:
    """Register --fast watches at --fast-rate to the fast receiver; the latency of each from
    the registration's sending to the webhook's arrival."""
    args = run.args
    jobs = await run.finished_jobs(f"f-{label}", args.fast)
    sent: dict[str, float] = {}
    period = 1.0 / args.fast_rate
    began = time.monotonic()
    tasks = []
    for n, job in enumerate(jobs):
        await asyncio.sleep(max(0.0, began + n * period - time.monotonic()))
        sent[job] = time.time()
        tasks.append(
            asyncio.create_task(run.control.register(bridge.url, job, f"{fast.url}/hooks/{job}"))
        )
    await asyncio.gather(*tasks)

    def arrived() -> dict[str, float]:
        found: dict[str, float] = {}
        if record.exists():
            for line in record.read_bytes().splitlines():
                hook = orjson.loads(line)
                job = hook["path"].rsplit("/", 1)[-1]
                if job in sent:
                    found.setdefault(job, hook["received_at"])
        return found

    await wait_for(f"every {label} webhook", lambda: len(arrived()) == len(sent), 60)
    latencies = [at - sent[job] for job, at in arrived().items()]
    return measure.summary(latencies)


# Report.


def report(args: argparse.Namespace, result: dict[str, Any]) -> str:
    rows: list[measure.Row] = []
    a = result.get("throughput")
    if a:
        for n, pair in enumerate(a["pairs"], 1):
            b, bare = pair["bridge"], pair["bare"]
            rows += [
                (f"(a) pair {n}: bridge / bare webhooks/s",
                 f"{fmt_num(b['per_s'])} / {fmt_num(bare['per_s'])}",
                 f"ratio {pair['ratio']:.2f}"),
                ("    CPU / 1,000 webhooks, bridge / bare",
                 f"{b['cpu_s_per_1000']:.3f} / {bare['cpu_s_per_1000']:.3f} s",
                 f"bridge {b['cpu_percent']:.0f} % (with its sender), receiver"
                 f" {b['receiver_cpu_percent']:.0f} %, others {b['other_cpu_percent']:.0f} %"),
            ]  # fmt: skip
        inline = args.sender == "inline"
        target = f">= {INLINE_SHARE_TARGET:g}"
        rows.append(
            ("(a) ratio bridge / bare, median of pairs", f"{a['ratio']:.2f}",
             measure.verdict(a["ratio"] >= INLINE_SHARE_TARGET, target) if inline else ""),
        )  # fmt: skip
        posted = a.get("bare_client_post")
        if posted:
            rows += [
                ("    bare loop with client.post req/s", fmt_num(posted["per_s"]),
                 f"CPU {posted['cpu_s_per_1000']:.3f} s / 1,000, errors {posted['errors']}"),
                ("    ratio bridge (mean) / client.post loop", f"{a['ratio_client_post']:.2f}",
                 "for the record"),
            ]  # fmt: skip
    iso = result.get("isolation")
    if iso:
        alone, beside = iso["alone"], iso["beside_slow"]
        rows += [
            ("(b) fast host alone p50 / p99", f"{fmt_ms(alone['p50'])} / {fmt_ms(alone['p99'])}",
             f"n={alone['n']}"),
            (f"    beside a slow host ({iso['slow_backlog']:,} due) p50 / p99",
             f"{fmt_ms(beside['p50'])} / {fmt_ms(beside['p99'])}",
             measure.verdict(beside["p99"] < ISOLATED_P99_S, f"p99 < {ISOLATED_P99_S:g} s")),
            ("    requests in flight, slow backlog registered",
             fmt_num(iso["in_flight_after_slow_registered"]),
             f"per-host limit {iso['per_host']}"),
        ]  # fmt: skip
    return measure.table("Delivery", rows)


async def bench(args: argparse.Namespace, services: Services, workdir: Path, stamp: str) -> Any:
    run = Run(args, services, workdir, stamp)
    run.sim = await services.start_devtool(
        "simulator", ["fake-upstream", "--api-key", API_KEY, "--seed", "1"]
    )
    result: dict[str, Any] = {}
    async with aiohttp.ClientSession() as session:
        run.control = Control(session, run.sim.url)
        parts = set(args.parts.split(","))
        if "a" in parts:
            result["throughput"] = await throughput(run)
        if "b" in parts:
            result["isolation"] = await isolation(run)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench(
        args,
        "delivery",
        lambda services, workdir, stamp: bench(args, services, workdir, stamp),
        report=lambda result: report(args, result),
    )


if __name__ == "__main__":
    sys.exit(main())
