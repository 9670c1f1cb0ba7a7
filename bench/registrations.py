"""Registration benchmark: `POST /v1/watches` on SQLite. See bench/README.md.

    .venv/bin/python bench/registrations.py [--duration 10] [--clients 8] [--rate 500] ...

One bridge on a fresh SQLite file (WAL, synchronous=FULL: a 201 means committed) and the
upstream simulator, as real processes on loopback ports. Then:

a. closed loop: --clients clients, each registering as fast as it can over one keep-alive
   connection, for a window: registrations/s, latency percentiles, CPU per registration;
b. paced: --rate registrations/s sent open-loop (a request leaves at its scheduled time
   whether or not earlier ones were answered) for a window: latency p50/p99/max;
c. (with --phases ...c) the same two while the bridge is saturated with polling: first
   --saturation-watches watches at a 0.1 s interval;
f. (with --phases ...f) the bridge stopped, the closed loop of a against bench/floor.py, the
   same server, framework and first GET with nothing of the bridge's: the machine's ceiling
   for this stack, and the bridge's share of it.

The table is printed and the whole result written to bench/results/<time>-registrations.json.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import measure
import orjson
import run as base
from harness import BenchError, Service, Services, cpu_seconds, free_port, machine_busy_seconds
from loops import Control, each
from measure import fmt_ms, fmt_num, verdict
from runner import py_spy, run_bench

FLOOR_SHARE_TARGET = 0.3  # the closed loop's registrations/s against the floor's
P99_TARGET_S = 0.050  # at a paced 500/s
# Registered watches are polled once (at registration) and then lie dormant for the run.
DORMANT_INTERVAL_S = 3600.0
UNLIMITED = 1_000_000
MACHINE = "machine"
PHASES = "abcf"
FLOOR = [sys.executable, str(Path(__file__).with_name("floor.py"))]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Registration throughput and latency on SQLite (see bench/README.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--phases", default="ab",
        help="a (closed loop), b (paced), c (both, bridge saturated), f (a against the floor)",
    )  # fmt: skip
    parser.add_argument("--clients", type=int, default=8, help="closed-loop clients")
    parser.add_argument("--rate", type=float, default=500.0, help="paced registrations/s")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each window")
    parser.add_argument("--duration", type=float, default=10.0, help="each window, seconds")
    parser.add_argument(
        "--jobs", type=int, default=40_000,
        help="simulator jobs to register watches on (reused round-robin when exhausted)",
    )  # fmt: skip
    parser.add_argument(
        "--saturation-watches", type=int, default=3000, help="phase c: watches at 0.1 s"
    )
    parser.add_argument("--max-concurrency", type=int, default=64, help="upstream concurrency")
    parser.add_argument(
        "--results", type=Path, default=base.ROOT / "bench" / "results", help="directory for JSON"
    )
    parser.add_argument(
        "--py-spy", choices=("flamegraph", "speedscope", "raw"),
        help="profile the bridge during each window (needs py-spy in the venv)",
    )  # fmt: skip
    parser.add_argument(
        "--log-level", default="warning", choices=("debug", "info", "warning", "error"),
        help="BRIDGE_LOG__LEVEL of the bridge",
    )  # fmt: skip
    parser.add_argument("--keep-temp", action="store_true", help="keep logs and the database")
    args = parser.parse_args(argv)
    args.phases = args.phases.lower()
    if not args.phases or set(args.phases) - set(PHASES):
        parser.error(f"--phases takes letters among {', '.join(PHASES)}")
    return args


@dataclass
class Bench:
    args: argparse.Namespace
    services: Services
    control: Control
    sim: Service
    bridge: Service
    jobs: Iterator[str]
    stamp: str
    reused: int = 0
    job_count: int = 0
    phase: str = ""  # names the profiles of a phase: "" (a, b), "saturated-", "floor-"

    def body(self) -> bytes:
        job_id = next(self.jobs)
        return orjson.dumps(
            {
                "job_id": job_id,
                # Never called: the jobs do not end during the run.
                "callback_url": f"http://127.0.0.1:9/hooks/{job_id}",
                "poll_interval_s": DORMANT_INTERVAL_S,
            }
        )


@dataclass
class Window:
    """What a window measured: each registration's latency, errors, and CPU by process."""

    latencies: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)  # paced: send time past its schedule
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)
    polls: int = 0  # upstream GETs the simulator answered over the window

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


def bridge_env(sim: Service, workdir: Path, args: argparse.Namespace) -> dict[str, str]:
    return {
        "BRIDGE_UPSTREAM__BASE_URL": sim.url,
        "BRIDGE_UPSTREAM__API_KEY": base.API_KEY,
        "BRIDGE_UPSTREAM__MAX_CONCURRENCY": str(args.max_concurrency),
        "BRIDGE_STORE__URL": f"sqlite:///{workdir / 'bridge.db'}",
        "BRIDGE_SECURITY__ALLOW_PRIVATE_CALLBACKS": "true",
        # The per-token limit would measure itself, not the registration path.
        "BRIDGE_AUTH__REGISTRATIONS_PER_S": str(UNLIMITED),
        "BRIDGE_AUTH__REGISTRATION_BURST": str(UNLIMITED),
        "BRIDGE_POLL__INTERVAL_S": "0.1",
        "BRIDGE_POLL__MIN_INTERVAL_S": "0.1",
        "BRIDGE_POLL__JITTER": "0",
        "BRIDGE_POLL__TIMEOUT_S": "86400",
        "BRIDGE_LOG__LEVEL": args.log_level,
        "BRIDGE_LOG__FORMAT": "json",
    }


def cpu_now(pids: dict[str, int]) -> dict[str, float]:
    cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
    cpu[MACHINE] = machine_busy_seconds()
    return cpu


def cpu_delta(start: dict[str, float], end: dict[str, float]) -> dict[str, float]:
    delta = {name: end[name] - start[name] for name in end}
    machine = delta.pop(MACHINE)
    delta["other"] = max(0.0, machine - sum(delta.values()))
    return delta


async def post(session: aiohttp.ClientSession, url: str, body: bytes, window: Window) -> bool:
    """One registration; its latency is recorded when it was answered 201."""
    sent = time.monotonic()
    try:
        async with session.post(
            url, data=body, headers={"Content-Type": "application/json"}
        ) as response:
            await response.read()
            if response.status != 201:
                window.error(f"HTTP {response.status}")
                return False
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        window.error(type(error).__name__)
        return False
    window.latencies.append(time.monotonic() - sent)
    return True


def session(limit: int) -> aiohttp.ClientSession:
    """Keep-alive connections, at most `limit`, no client-side timeout shorter than 60 s."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, limit_per_host=0),
        timeout=aiohttp.ClientTimeout(total=60),
    )


async def closed_loop(bench: Bench, pids: dict[str, int]) -> Window:
    """--clients clients back to back; only what is answered inside the window counts."""
    args = bench.args
    url = f"{bench.bridge.url}/v1/watches"
    discard, window = Window(), Window()
    current = discard
    stop = False

    async def client() -> None:
        while not stop:
            await post(http, url, bench.body(), current)

    async with session(args.clients) as http:
        tasks = [asyncio.create_task(client()) for _ in range(args.clients)]
        await asyncio.sleep(args.warmup)
        current = window
        gets = await polls(bench)
        start, started = cpu_now(pids), time.monotonic()
        wait_profile = profile(bench, f"{bench.phase}closed-loop", args.duration)
        await asyncio.sleep(args.duration)
        window.seconds = time.monotonic() - started
        current = discard
        window.cpu_s = cpu_delta(start, cpu_now(pids))
        window.polls = await polls(bench) - gets
        stop = True
        await asyncio.gather(*tasks)
        wait_profile()
    return window


async def paced(bench: Bench, pids: dict[str, int], rate: float | None = None) -> Window:
    """`rate` (--rate) registrations a second, each sent at its time whatever the earlier ones
    do."""
    args = bench.args
    rate = rate or args.rate
    url = f"{bench.bridge.url}/v1/watches"
    window = Window()
    period = 1.0 / rate
    total = round((args.warmup + args.duration) * rate)
    counted_from = round(args.warmup * rate)
    in_flight: set[asyncio.Task[bool]] = set()
    # Enough connections that a slow answer never holds up the next send.
    async with session(256) as http:
        began = time.monotonic()
        start: dict[str, float] = {}
        for i in range(total):
            due = began + i * period
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if i == counted_from:
                gets = await polls(bench)
                start, started = cpu_now(pids), time.monotonic()
                wait_profile = profile(bench, f"{bench.phase}paced", args.duration)
            target = window if i >= counted_from else Window()
            if i >= counted_from:
                target.lags.append(time.monotonic() - due)
            task = asyncio.create_task(post(http, url, bench.body(), target))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        window.seconds = time.monotonic() - started
        window.cpu_s = cpu_delta(start, cpu_now(pids))
        window.polls = await polls(bench) - gets
        await asyncio.gather(*in_flight)
        wait_profile()
    return window


async def polls(bench: Bench) -> int:
    gets: int = (await bench.control.stats())["gets_total"]
    return gets


def profile(bench: Bench, label: str, seconds: float) -> Callable[[], None]:
    """py-spy on the bridge for the window when asked to; returns a function to wait for it.

    `--nonblocking`: the bridge is never paused, so the profiled window keeps its rate; time in
    C (uvloop, SQLite) shows under the Python call that entered it."""
    fmt = bench.args.py_spy
    if fmt is None:
        return lambda: None
    stem = bench.args.results / f"{bench.stamp}-{label}"
    options = ("--rate", "200", "--nonblocking")
    return py_spy(bench.services, bench.bridge.pid, label, fmt, stem, seconds, options)


def summarize(window: Window, clients: int | None) -> dict[str, Any]:
    n = len(window.latencies)
    cpu = window.cpu_s
    per_s = n / window.seconds if window.seconds else 0.0
    return {
        "clients": clients,
        "registered": n,
        "seconds": window.seconds,
        "per_s": per_s,
        "latency_s": measure.summary(window.latencies),
        "send_lag_s": measure.summary(window.lags) if window.lags else None,
        "errors": window.errors,
        "upstream_polls_per_s": window.polls / window.seconds if window.seconds else None,
        "cpu_s": cpu,
        "cpu_percent": {k: 100 * v / window.seconds for k, v in cpu.items()},
        "bridge_cpu_ms_per_registration": 1000 * cpu["bridge"] / n if n else None,
        "client_cpu_ms_per_registration": 1000 * cpu["bench"] / n if n else None,
    }


async def create_jobs(control: Control, job_ids: list[str]) -> None:
    specs = [
        {"id": job_id, "queue_positions": base.LONG_QUEUE, "seconds_per_position": 3600.0}
        for job_id in job_ids
    ]
    await each(specs, control.create_job, 32)


async def saturate(bench: Bench) -> None:
    """--saturation-watches watches at 0.1 s: far more polls than the bridge can make."""
    n = bench.args.saturation_watches
    job_ids = [f"sat-{i:05d}" for i in range(n)]
    await create_jobs(bench.control, job_ids)
    url = f"{bench.bridge.url}/v1/watches"
    window = Window()
    bodies = [
        orjson.dumps({"job_id": j, "callback_url": f"http://127.0.0.1:9/hooks/{j}"})
        for j in job_ids
    ]
    async with session(16) as http:
        await each(bodies, lambda body: post(http, url, body, window), 16)
    if len(window.latencies) != n:
        raise BenchError(f"saturation: {n - len(window.latencies)} registrations failed")
    await asyncio.sleep(bench.args.warmup)


async def start_floor(services: Services, sim: Service) -> Service:
    port = free_port()
    argv = [*FLOOR, "--upstream", sim.url, "--api-key", base.API_KEY, "--port", str(port)]
    return await services.start_server("floor", argv, dict(os.environ), port)


async def bench(
    args: argparse.Namespace, services: Services, workdir: Path, stamp: str
) -> dict[str, Any]:
    sim = await services.start_devtool(
        "simulator", ["fake-upstream", "--api-key", base.API_KEY, "--seed", "1"]
    )
    idle_load = await base.background_load()
    if idle_load > base.BUSY_MACHINE_PERCENT:
        print(f"warning: before the run, other processes used {idle_load:.0f} % of a core")
    async with session(64) as http:
        control = Control(http, sim.url)
        job_ids = [f"r-{i:06d}" for i in range(args.jobs)]
        started = time.monotonic()
        await create_jobs(control, job_ids)
        print(f"  {args.jobs} simulator jobs in {time.monotonic() - started:.1f} s")
        bridge = await services.start_bridge("bridge", bridge_env(sim, workdir, args))
        counter = itertools.count()

        def jobs() -> Iterator[str]:
            for i in counter:
                yield job_ids[i % len(job_ids)]

        run = Bench(args, services, control, sim, bridge, jobs(), stamp, job_count=args.jobs)
        pids = {"bridge": bridge.pid, "simulator": sim.pid, "bench": os.getpid()}
        result: dict[str, Any] = {"background_cpu_percent": idle_load}
        steps = [("a", "closed_loop"), ("b", "paced")]
        for letter, name in steps:
            if letter in args.phases:
                window = await (closed_loop if letter == "a" else paced)(run, pids)
                result[name] = summarize(window, args.clients if letter == "a" else None)
                print(f"  {name}: {result[name]['per_s']:,.0f}/s")
        if "c" in args.phases:
            await saturate(run)
            run.phase = "saturated-"
            for letter, name in steps:
                window = await (closed_loop if letter == "a" else paced)(run, pids)
                result[f"saturated_{name}"] = summarize(
                    window, args.clients if letter == "a" else None
                )
                print(f"  saturated {name}: {result[f'saturated_{name}']['per_s']:,.0f}/s")
        if "f" in args.phases:
            services.stop(bridge)
            floor = await start_floor(services, sim)
            on_floor = dataclasses.replace(run, bridge=floor, phase="floor-")
            floor_pids = {**pids, "bridge": floor.pid}
            window = await closed_loop(on_floor, floor_pids)
            result["floor_closed_loop"] = summarize(window, args.clients)
            print(f"  floor closed_loop: {result['floor_closed_loop']['per_s']:,.0f}/s")
            if "closed_loop" in result:
                # The floor at the bridge's own rate: its CPU per registration there is what
                # the stack costs the bridge, without the savings of running faster.
                same_rate = result["closed_loop"]["per_s"]
                window = await paced(on_floor, floor_pids, same_rate)
                result["floor_paced_at_bridge_rate"] = summarize(window, None)
        result["registrations_sent"] = next(counter)
        result["jobs_reused"] = max(0, result["registrations_sent"] - args.jobs)
    return result


def report(args: argparse.Namespace, result: dict[str, Any]) -> str:
    rows: list[measure.Row] = []
    for prefix, label in (("", ""), ("saturated_", "saturated: ")):
        loop = result.get(f"{prefix}closed_loop")
        if loop is not None:
            per_s = loop["per_s"]
            rows += [
                (f"{label}{args.clients} clients: registrations/s", fmt_num(per_s), ""),
                (f"{label}  latency p50 / p99", _p50_p99(loop), ""),
                (f"{label}  latency max", fmt_ms(loop["latency_s"]["max"]), ""),
                *_cpu_rows(label, loop),
            ]
        paced_result = result.get(f"{prefix}paced")
        if paced_result is not None:
            p99 = paced_result["latency_s"]["p99"]
            target = (
                verdict(None if p99 is None else p99 < P99_TARGET_S, f"< {fmt_ms(P99_TARGET_S)}")
                if not prefix
                else ""
            )
            rows += [
                (f"{label}paced {args.rate:g}/s: answered/s", fmt_num(paced_result["per_s"]), ""),
                (f"{label}  latency p50", fmt_ms(paced_result["latency_s"]["p50"]), ""),
                (f"{label}  latency p99", fmt_ms(p99), target),
                (f"{label}  latency max", fmt_ms(paced_result["latency_s"]["max"]), ""),
                (f"{label}  send lag p99", fmt_ms(paced_result["send_lag_s"]["p99"]), ""),
                *_cpu_rows(label, paced_result),
            ]
    floor = result.get("floor_closed_loop")
    if floor is not None:
        rows += [
            (f"floor, {args.clients} clients: registrations/s", fmt_num(floor["per_s"]), ""),
            ("  latency p50 / p99", _p50_p99(floor), ""),
            *_cpu_rows("", floor, "floor"),
        ]
        bridge = result.get("closed_loop")
        if bridge is not None:
            share = _floor_share(result)
            met = None if share is None else share >= FLOOR_SHARE_TARGET
            target = verdict(met, f">= {FLOOR_SHARE_TARGET:g}")
            rows.append(("bridge / floor, registrations/s", fmt_num(share, 2), target))
        same = result.get("floor_paced_at_bridge_rate")
        if bridge is not None and same is not None:
            rows += [
                (f"floor paced at the bridge's {fmt_num(bridge['per_s'])}/s", "", ""),
                *_cpu_rows("", same, "floor"),
                (
                    "bridge's own CPU ms per registration (bridge - floor, same rate)",
                    fmt_num(
                        bridge["bridge_cpu_ms_per_registration"]
                        - same["bridge_cpu_ms_per_registration"],
                        2,
                    ),
                    "",
                ),
            ]
    return measure.table("Registrations on SQLite (WAL, synchronous=FULL)", rows)


def _p50_p99(window: dict[str, Any]) -> str:
    latency = window["latency_s"]
    return f"{fmt_ms(latency['p50'])} / {fmt_ms(latency['p99'])}"


def _cpu_rows(label: str, window: dict[str, Any], server: str = "bridge") -> list[measure.Row]:
    pct = window["cpu_percent"]
    errors = sum(window["errors"].values())
    return [
        (
            f"{label}  CPU % {server} / client / sim / other",
            " / ".join(f"{pct[k]:.0f}" for k in ("bridge", "bench", "simulator", "other")),
            "",
        ),
        (
            f"{label}  CPU ms per registration: {server}, client",
            f"{fmt_num(window['bridge_cpu_ms_per_registration'], 2)}, "
            f"{fmt_num(window['client_cpu_ms_per_registration'], 2)}",
            "",
        ),
        (f"{label}  upstream polls/s", fmt_num(window["upstream_polls_per_s"]), ""),
        (f"{label}  errors", str(errors), ""),
    ]


def _floor_share(result: dict[str, Any]) -> float | None:
    bridge, floor = result.get("closed_loop"), result.get("floor_closed_loop")
    if bridge is None or floor is None or not floor["per_s"]:
        return None
    share: float = bridge["per_s"] / floor["per_s"]
    return share


def targets(result: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    share = _floor_share(result)
    if share is not None:
        found["bridge_per_floor"] = {
            "target": f">= {FLOOR_SHARE_TARGET}",
            "value": share,
            "met": share >= FLOOR_SHARE_TARGET,
        }
    if "paced" in result:
        p99 = result["paced"]["latency_s"]["p99"]
        found["paced_p99_s"] = {
            "target": f"< {P99_TARGET_S}",
            "value": p99,
            "met": None if p99 is None else p99 < P99_TARGET_S,
        }
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench(
        args, "registrations",
        lambda services, workdir, stamp: bench(args, services, workdir, stamp),
        report=lambda result: report(args, result), targets=targets,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
