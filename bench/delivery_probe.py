"""Delivery probe: where a drain's CPU goes, with the bridge in this very process.

    .venv/bin/python bench/delivery_probe.py --backlog FILE [--sender process] [--alone]

`bench/delivery.py` measures the bridge as a server; this probe builds the same `Bridge` in
its own process, on a copy of a backlog `delivery.py --backlog FILE` built, drains
`--webhooks` of it to a `listen` receiver, and reads what a server hides: the event loop
thread's user and system time (`/proc/self/task`), the sender process's CPU, the SQLite
statements and transactions per webhook (the store's trace callback), the requests in flight.
Then, in the same process and against the same receiver, the bare POST loop of delivery.py,
and with `--alone` the sender process fed by 16 bare workers with no store. One result per
run, to compare with another run of the same machine minutes apart, never with a figure
from another day.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

import measure
from delivery import bare_posts, copy_db, due_to, wait_for
from harness import ROOT, BenchError, Services
from runner import run_bench

from service import config, gc_tuning, logs
from service.bridge import Bridge
from service.sender import ProcessSender
from service.signing import new_secret, sign


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--backlog", type=Path, required=True, help="a backlog built by delivery.py --backlog")
    add("--webhooks", type=int, default=12_000, help="webhooks in the measured window")
    add("--warmup", type=int, default=2_000, help="webhooks before the window")
    add("--sender", default="inline", choices=["inline", "process"], help="delivery.sender")
    add("--bare-window", type=float, default=4.0, help="seconds of the bare loop's window")
    add("--alone", action="store_true", help="also the sender process alone, with no store")
    add("--results", type=Path, default=ROOT / "bench" / "results", help="directory for JSON")
    add("--keep-temp", action="store_true", help="keep the temporary directory")
    return parser.parse_args(argv)


def _thread_times(tid: int) -> tuple[float, float]:
    """User and system seconds of one thread of this process."""
    fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _process_stats(pid: int | None) -> tuple[float, float, int, int]:
    """User seconds, system seconds, voluntary context switches (times it slept, waiting for
    something) and involuntary ones (times another thread took its CPU) of a process's main
    thread, or zeros."""
    if pid is None:
        return 0.0, 0.0, 0, 0
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    tick = os.sysconf("SC_CLK_TCK")
    status = Path(f"/proc/{pid}/status").read_text()
    slept = int(status.split("\nvoluntary_ctxt_switches:")[1].split()[0])
    preempted = int(status.split("nonvoluntary_ctxt_switches:")[1].split()[0])
    return int(fields[11]) / tick, int(fields[12]) / tick, slept, preempted


def _scheduled(pid: int | None) -> tuple[float, float]:
    """Seconds a process's main thread has run on a CPU, and seconds it has waited for one
    while runnable (`/proc/PID/schedstat`), or zeros: over a window, the rest of its wall time
    it slept, waiting for work or an answer."""
    if pid is None:
        return 0.0, 0.0
    ran, waited, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
    return int(ran) / 1e9, int(waited) / 1e9


def _shares(
    start: tuple[float, float], end: tuple[float, float], seconds: float
) -> dict[str, float]:
    """Of a window's wall time, the shares a thread ran, waited for a CPU, and slept."""
    ran, waited = (end[0] - start[0]) / seconds, (end[1] - start[1]) / seconds
    return {"ran": ran, "waited": waited, "slept": max(0.0, 1 - ran - waited)}


async def drain(
    args: argparse.Namespace, db: Path, receiver_url: str, receiver_pid: int
) -> dict[str, Any]:
    os.environ.update(
        {
            "BRIDGE_UPSTREAM__BASE_URL": "http://127.0.0.1:9",  # nothing to poll
            "BRIDGE_STORE__URL": f"sqlite:///{db}",
            "BRIDGE_SECURITY__ALLOW_PRIVATE_CALLBACKS": "true",
            "BRIDGE_LOG__LEVEL": "warning",
            "BRIDGE_LOG__FORMAT": "json",
            "BRIDGE_DELIVERY__SENDER": args.sender,
        }
    )
    settings = config.load()
    logs.configure(settings.log)
    bridge = Bridge.build(settings)
    gc_tuning.tune()  # as `webhook-bridge serve` does
    succeeded = bridge.metrics.delivery_attempts.labels("succeeded")
    await bridge.start()
    statements: collections.Counter[str] = collections.Counter()
    try:
        await wait_for(
            "the warm-up webhooks", lambda: succeeded._value.get() >= args.warmup, 120, 0.01
        )
        # The store's connection, read for the probe only: every statement it runs.
        connection: sqlite3.Connection = bridge.store._db  # type: ignore[attr-defined]
        connection.set_trace_callback(lambda sql: statements.update([sql.split(None, 1)[0]]))
        tid = threading.get_native_id()
        child = bridge.sender.pid if isinstance(bridge.sender, ProcessSender) else None
        start = (succeeded._value.get(), time.monotonic(), time.process_time(),
                 _thread_times(tid), _process_stats(child), os.times(),
                 _scheduled(child), _scheduled(receiver_pid))  # fmt: skip
        in_flight = []
        while succeeded._value.get() < start[0] + args.webhooks:
            await asyncio.sleep(0.005)
            in_flight.append(bridge.worker.deliverer.in_flight)
        end = (succeeded._value.get(), time.monotonic(), time.process_time(),
               _thread_times(tid), _process_stats(child), os.times(),
               _scheduled(child), _scheduled(receiver_pid))  # fmt: skip
        connection.set_trace_callback(None)
    finally:
        await bridge.stop()
    n = end[0] - start[0]
    return {
        "webhooks": n,
        "per_s": n / (end[1] - start[1]),
        "process_cpu_us": 1e6 * (end[2] - start[2]) / n,
        "loop_user_us": 1e6 * (end[3][0] - start[3][0]) / n,
        "loop_system_us": 1e6 * (end[3][1] - start[3][1]) / n,
        "sender_cpu_us": 1e6 * (sum(end[4][:2]) - sum(start[4][:2])) / n,
        "sender_user_us": 1e6 * (end[4][0] - start[4][0]) / n,
        "sender_system_us": 1e6 * (end[4][1] - start[4][1]) / n,
        "sender_sleeps_per_webhook": (end[4][2] - start[4][2]) / n,
        "sender_preemptions_per_webhook": (end[4][3] - start[4][3]) / n,
        # The other threads (the store's): the process's user and system time less the loop's.
        "others_user_us": 1e6 * (end[5].user - start[5].user - end[3][0] + start[3][0]) / n,
        "others_system_us": 1e6 * (end[5].system - start[5].system - end[3][1] + start[3][1]) / n,
        "statements_per_webhook": sum(statements.values()) / n,
        "transactions_per_webhook": statements["COMMIT"] / n,
        "in_flight_mean": sum(in_flight) / max(1, len(in_flight)),
        "sender_time": _shares(start[6], end[6], end[1] - start[1]),
        "receiver_time": _shares(start[7], end[7], end[1] - start[1]),
    }


async def alone(settings: config.Settings, rows: list[tuple[str, bytes, str]]) -> dict[str, Any]:
    """The sender process fed by 16 bare workers: its throughput and CPU with no store."""
    sender = ProcessSender(settings.delivery, settings.security, settings.log)
    secret, items, done, stop = new_secret(), itertools.cycle(rows), [0], asyncio.Event()

    async def worker() -> None:
        while not stop.is_set():
            webhook_id, body, url = next(items)
            headers = {
                "content-type": "application/json",
                **sign(webhook_id, body, time.time(), [secret]),
            }
            status, _, _ = await sender.send("POST", url, headers, body)
            done[0] += status == 200

    workers = [asyncio.create_task(worker()) for _ in range(16)]
    try:
        await asyncio.sleep(1.5)
        child = sender.pid
        assert child is not None
        start = (done[0], time.monotonic(), _process_stats(child), time.process_time(),
                 _scheduled(child))  # fmt: skip
        await asyncio.sleep(4.0)
        end = (done[0], time.monotonic(), _process_stats(child), time.process_time(),
               _scheduled(child))  # fmt: skip
    finally:
        stop.set()
        await asyncio.gather(*workers)
        await sender.aclose()
    n = end[0] - start[0]
    return {
        "per_s": n / (end[1] - start[1]),
        "sender_cpu_us": 1e6 * (sum(end[2][:2]) - sum(start[2][:2])) / n,
        "sender_system_us": 1e6 * (end[2][1] - start[2][1]) / n,
        "sender_sleeps_per_webhook": (end[2][2] - start[2][2]) / n,
        "sender_preemptions_per_webhook": (end[2][3] - start[2][3]) / n,
        "feeder_cpu_us": 1e6 * (end[3] - start[3]) / n,
        "sender_time": _shares(start[4], end[4], end[1] - start[1]),
    }


async def probe(args: argparse.Namespace, services: Services, workdir: Path) -> dict[str, Any]:
    if not args.backlog.exists():
        raise BenchError(f"no backlog at {args.backlog}: build one with delivery.py --backlog")
    receiver = await services.start_devtool("receiver", ["listen", "--quiet"])
    db = workdir / "drain.db"
    copy_db(args.backlog, db)
    if due_to(db, receiver.url) < args.warmup + args.webhooks + 1_000:
        raise BenchError("the backlog is too small for --warmup + --webhooks")
    result: dict[str, Any] = {
        "sender": args.sender,
        "bridge": await drain(args, db, receiver.url, receiver.pid),
    }
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT d.id, d.body, w.callback_url FROM deliveries d JOIN watches w"
            " ON w.id = d.watch_id ORDER BY d.id LIMIT 40000"
        ).fetchall()
    result["bare"] = await bare_posts(rows, 16, 1.0, args.bare_window, receiver.pid)
    if args.alone:
        result["alone"] = await alone(config.load(), rows)
    return result


def report(result: dict[str, Any]) -> str:
    b, bare = result["bridge"], result["bare"]
    bare_us = 1000 * bare["cpu_s_per_1000"]
    rows: list[measure.Row] = [
        (f"bridge in process (sender {result['sender']}) webhooks/s", f"{b['per_s']:,.0f}",
         f"requests in flight {b['in_flight_mean']:.1f} on average"),
        ("    process CPU per webhook", f"{b['process_cpu_us']:.0f} us", ""),
        ("    event loop thread, user / system",
         f"{b['loop_user_us']:.0f} / {b['loop_system_us']:.0f} us", ""),
        ("    other threads (the store's), user / system",
         f"{b['others_user_us']:.0f} / {b['others_system_us']:.0f} us", ""),
        ("    sender process CPU per webhook, user / system",
         f"{b['sender_user_us']:.0f} / {b['sender_system_us']:.0f} us",
         f"per webhook {b['sender_sleeps_per_webhook']:.2f} sleeps,"
         f" {b['sender_preemptions_per_webhook']:.2f} preemptions"),
        ("    sender process: ran / waited for a CPU / slept", _time(b["sender_time"]), ""),
        ("    receiver: ran / waited for a CPU / slept", _time(b["receiver_time"]), ""),
        ("    SQLite statements / transactions per webhook",
         f"{b['statements_per_webhook']:.2f} / {b['transactions_per_webhook']:.3f}", ""),
        ("bare POST loop req/s (x16)", f"{bare['per_s']:,.0f}",
         f"CPU {bare_us:.0f} us per request"),
        ("ratio bridge / bare", f"{b['per_s'] / bare['per_s']:.2f}", "one run: noisy"),
    ]  # fmt: skip
    if "alone" in result:
        a = result["alone"]
        cpu = (
            f"sender CPU {a['sender_cpu_us']:.0f} us (system {a['sender_system_us']:.0f}),"
            f" {a['sender_sleeps_per_webhook']:.2f} sleeps,"
            f" {a['sender_preemptions_per_webhook']:.2f} preemptions;"
            f" feeder {a['feeder_cpu_us']:.0f} us"
        )
        rows.append(("sender process alone, no store, req/s", f"{a['per_s']:,.0f}", cpu))
        rows.append(("    ran / waited for a CPU / slept", _time(a["sender_time"]), ""))
    return measure.table("Delivery probe", rows)


def _time(shares: dict[str, float]) -> str:
    return " / ".join(f"{100 * shares[k]:.0f} %" for k in ("ran", "waited", "slept"))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench(
        args, "delivery-probe", lambda services, workdir, _: probe(args, services, workdir),
        report=report,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
