"""Benchmark of adaptive poll pacing against the fixed interval: see bench/README.md.

    .venv/bin/python bench/pacing.py [--rate 2] [--duration 100] [--warmup 40] ...

One simulator (`--workload realistic --readings progress`: its processing answers tell the
job's progress and ETA), one receiver and four bridges watch the same stream of jobs in the same
run: one polling every 2.5 s (`poll.strategy = "fixed"`) and three adaptive ones, with the
vendor's profile (which reads neither field) and with that profile reading `progress` or the
ETA. Each job is drawn once and created once per bridge with the same timeline. Measured per
bridge, over the jobs started after the warm-up: upstream requests per job (the simulator's
count of GETs per job) and push latency (the receiver's `received_at` minus the job's terminal
time in the simulator, both wall clocks of this machine). The table is printed and the whole
result written to bench/results/<time>-pacing.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import measure
import orjson
from harness import ROOT, BenchError, Service, Services, cpu_seconds, machine_busy_seconds
from loops import Control
from measure import fmt_ms, fmt_num
from runner import run_bench

from service import profiles

API_KEY = "bw_bench_key"


@dataclass(frozen=True)
class Bridge:
    """One bridge of the run: how it polls, and which of the simulator's processing fields its
    profile reads (the key in the profile's `read` table and the field of the answer)."""

    name: str
    label: str
    strategy: str
    reads: tuple[str, str] | None = None
    # Its push latency p50 target, with at most REQUESTS_RATIO_TARGET of the fixed requests.
    latency_p50_target_s: float | None = None


BRIDGES = (
    Bridge("fixed", "fixed 2.5 s", "fixed"),
    Bridge("adaptive", "adaptive", "adaptive", latency_p50_target_s=1.0),
    Bridge("progress", "+ progress", "adaptive", ("progress", "progress"), 0.6),
    Bridge("eta", "+ ETA", "adaptive", ("eta_s", "eta")),
)
FIXED = BRIDGES[0]
REQUESTS_RATIO_TARGET = 0.6
# A job's timeline as the simulator describes it: copied to create its twin.
TIMELINE = ("queue_positions", "seconds_per_position", "queue_phase", "processing_s", "outcome")
# Webhooks are awaited this long after the last start: longer than the longest job drawn
# (under 40 s at sigma 0.03, under 90 s at 0.5).
DRAIN_S = 120.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Adaptive pacing against the fixed interval (see bench/README.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--rate", type=float, default=2.0, help="new jobs per second (each bridge)")
    parser.add_argument("--duration", type=float, default=100.0, help="seconds of new jobs")
    parser.add_argument(
        "--warmup", type=float, default=40.0,
        help="jobs started in the first seconds are not measured (the adaptive bridge learns)",
    )  # fmt: skip
    parser.add_argument("--interval", type=float, default=2.5, help="poll.interval_s of both")
    parser.add_argument("--min-interval", type=float, default=2.0, help="poll.min_interval_s")
    parser.add_argument("--seed", type=int, default=1, help="the simulator's seed")
    parser.add_argument(
        "--processing-sigma", type=float, default=0.5,
        help="log-normal sigma of the jobs' processing times (0.5: 5 to 32 s, 0.03: ±0.36 s)",
    )  # fmt: skip
    parser.add_argument(
        "--results", type=Path, default=ROOT / "bench" / "results", help="directory for JSON"
    )
    parser.add_argument(
        "--log-level", default="warning", choices=("debug", "info", "warning", "error"),
        help="BRIDGE_LOG__LEVEL of both bridges (their logs stay with --keep-temp)",
    )  # fmt: skip
    parser.add_argument("--keep-temp", action="store_true", help="keep logs, databases, records")
    return parser.parse_args(argv)


def bridge_env(
    args: argparse.Namespace, sim: Service, workdir: Path, bridge: Bridge
) -> dict[str, str]:
    env = {
        "BRIDGE_UPSTREAM__BASE_URL": sim.url,
        "BRIDGE_UPSTREAM__API_KEY": API_KEY,
        "BRIDGE_STORE__URL": f"sqlite:///{workdir / bridge.name}.db",
        "BRIDGE_SECURITY__ALLOW_PRIVATE_CALLBACKS": "true",
        "BRIDGE_AUTH__REGISTRATIONS_PER_S": "1000000",
        "BRIDGE_AUTH__REGISTRATION_BURST": "1000000",
        "BRIDGE_POLL__INTERVAL_S": str(args.interval),
        "BRIDGE_POLL__MIN_INTERVAL_S": str(args.min_interval),
        "BRIDGE_POLL__STRATEGY": bridge.strategy,
        "BRIDGE_LOG__LEVEL": args.log_level,
        "BRIDGE_LOG__FORMAT": "json",
    }
    if bridge.reads is not None:
        vendor = profiles.builtin(profiles.DEFAULT)
        key, field = bridge.reads
        read = vendor.read.model_copy(update={key: field})
        env["BRIDGE_UPSTREAM__PROFILE"] = vendor.model_copy(update={"read": read}).model_dump_json()
    return env


def read_records(path: Path) -> dict[str, float]:
    """The first `received_at` of each job's webhook, by job id (from the callback path)."""
    first: dict[str, float] = {}
    if not path.exists():
        return first
    for line in path.read_bytes().splitlines():
        record = orjson.loads(line)
        first.setdefault(record["path"].rsplit("/", 1)[-1], record["received_at"])
    return first


async def stream(
    args: argparse.Namespace,
    control: Control,
    bridges: dict[str, Service],
    listener: Service,
) -> list[dict[str, Any]]:
    """Start `--rate` jobs a second for `--duration` seconds, each created once per bridge with
    the same timeline, the order of creation rotating so no bridge's copy is always the oldest."""
    pairs: list[dict[str, Any]] = []
    tasks: set[asyncio.Task[None]] = set()
    failures: list[BaseException] = []

    async def start(index: int, offset: float) -> None:
        ids = {name: f"job_pace{index:05d}_{name}" for name in bridges}
        turn = index % len(BRIDGES)
        order = [bridge.name for bridge in BRIDGES[turn:] + BRIDGES[:turn]]
        await control.create_job({"id": ids[order[0]]})
        drawn = await control.job(ids[order[0]])
        twin = {key: drawn[key] for key in TIMELINE}
        for name in order[1:]:
            await control.create_job({"id": ids[name], **twin})
        await asyncio.gather(
            *(
                control.register(bridges[name].url, ids[name], f"{listener.url}/hooks/{ids[name]}")
                for name in order
            )
        )
        pairs.append({"index": index, "offset_s": offset, "ids": ids, "spec": drawn})

    def done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            failures.append(task.exception())  # type: ignore[arg-type]

    began = time.monotonic()
    count = int(args.rate * args.duration)
    for index in range(count):
        offset = index / args.rate
        await asyncio.sleep(max(0.0, began + offset - time.monotonic()))
        if failures:
            raise BenchError(f"starting a job failed: {failures[0]}")
        task = asyncio.create_task(start(index, offset))
        tasks.add(task)
        task.add_done_callback(done)
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
    if failures:
        raise BenchError(f"starting a job failed: {failures[0]}")
    return sorted(pairs, key=lambda pair: pair["index"])


async def bench(args: argparse.Namespace, services: Services, workdir: Path) -> dict[str, Any]:
    records = workdir / "hooks.jsonl"
    sim = await services.start_devtool(
        "simulator",
        [
            "fake-upstream",
            "--api-key",
            API_KEY,
            "--seed",
            str(args.seed),
            "--workload",
            "realistic",
            "--processing-sigma",
            str(args.processing_sigma),
            "--readings",
            "progress",
        ],
    )
    listener = await services.start_devtool(
        "listener", ["listen", "--quiet", "--record", str(records)]
    )
    bridges = {
        bridge.name: await services.start_bridge(
            f"bridge-{bridge.name}", bridge_env(args, sim, workdir, bridge)
        )
        for bridge in BRIDGES
    }
    pids = {"simulator": sim.pid, "listener": listener.pid}
    pids.update({f"bridge {name}": service.pid for name, service in bridges.items()})
    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    machine0, t0 = machine_busy_seconds(), time.monotonic()
    async with aiohttp.ClientSession() as session:
        control = Control(session, sim.url)
        pairs = await stream(args, control, bridges, listener)
        ids = [job_id for pair in pairs for job_id in pair["ids"].values()]
        deadline = time.monotonic() + DRAIN_S
        received = read_records(records)
        while any(job_id not in received for job_id in ids) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            received = read_records(records)
        seconds = time.monotonic() - t0
        cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
        others = machine_busy_seconds() - machine0 - sum(cpu.values())
        jobs = {job_id: await control.job(job_id) for job_id in ids}
        stats = await control.stats()
    measured = [pair for pair in pairs if pair["offset_s"] >= args.warmup]
    timelines = [
        {
            "bridge": name,
            "offset_s": pair["offset_s"],
            "spec": {key: pair["spec"][key] for key in TIMELINE},
            "created_at": jobs[job_id]["created_at"],
            "terminal_at": jobs[job_id]["terminal_at"],
            "received_at": received.get(job_id),
            "poll_times": jobs[job_id]["poll_times"],
        }
        for pair in pairs
        for name, job_id in pair["ids"].items()
    ]
    per_bridge: dict[str, Any] = {}
    for bridge in BRIDGES:
        requests: list[float] = []
        latencies: list[float] = []
        missing = 0
        for pair in measured:
            job_id = pair["ids"][bridge.name]
            requests.append(jobs[job_id]["polls"])
            if job_id in received:
                latencies.append(received[job_id] - jobs[job_id]["terminal_at"])
            else:
                missing += 1
        per_bridge[bridge.name] = {
            "jobs": len(measured),
            "webhooks_missing": missing,
            "requests_per_job": measure.summary(requests),
            "push_latency_s": measure.summary(latencies),
            "cpu_percent": 100 * cpu[f"bridge {bridge.name}"] / seconds,
        }
    fixed = per_bridge[FIXED.name]["requests_per_job"]["mean"]
    for stats in per_bridge.values():
        mean = stats["requests_per_job"]["mean"]
        stats["requests_ratio"] = mean / fixed if fixed and mean is not None else None
    durations = [
        jobs[pair["ids"]["fixed"]]["terminal_at"] - jobs[pair["ids"]["fixed"]]["created_at"]
        for pair in measured
    ]
    return {
        "bridges": per_bridge,
        "job_duration_s": measure.summary(durations),
        "window_s": seconds,
        "cpu_percent": {name: 100 * value / seconds for name, value in cpu.items()},
        "other_cpu_percent": 100 * max(0.0, others) / seconds,
        "simulator_stats": stats,
        "jobs": timelines,
    }


def report(args: argparse.Namespace, result: dict[str, Any]) -> str:
    stats = [result["bridges"][bridge.name] for bridge in BRIDGES]

    def row(label: str, pick: Callable[[dict[str, Any]], str]) -> tuple[str, list[str]]:
        return (label, [pick(each) for each in stats])

    lines = [
        row("jobs measured (after the warm-up)", lambda s: fmt_num(s["jobs"])),
        row("webhooks missing", lambda s: fmt_num(s["webhooks_missing"])),
        row("upstream requests per job, mean", lambda s: fmt_num(s["requests_per_job"]["mean"], 2)),
        row("  of the fixed strategy's", lambda s: fmt_num(s["requests_ratio"], 2)),
        row("upstream requests per job, p90", lambda s: fmt_num(s["requests_per_job"]["p90"], 1)),
        row("push latency p50", lambda s: fmt_ms(s["push_latency_s"]["p50"])),
        row("push latency p90", lambda s: fmt_ms(s["push_latency_s"]["p90"])),
        row("push latency p99", lambda s: fmt_ms(s["push_latency_s"]["p99"])),
        row("push latency max", lambda s: fmt_ms(s["push_latency_s"]["max"])),
        row("bridge CPU", lambda s: fmt_num(s["cpu_percent"], 1, "%")),
    ]
    table = measure.grid(
        f"Pacing: {args.rate:g} jobs/s for {args.duration:g} s, realistic workload "
        f"(processing sigma {args.processing_sigma:g}) "
        f"(jobs {fmt_num(result['job_duration_s']['p50'], 1)} s median), "
        f"other processes' CPU {result['other_cpu_percent']:.0f} %",
        ("metric", *(bridge.label for bridge in BRIDGES)),
        lines,
    )
    verdicts = []
    for name, target in targets(result).items():
        shown = fmt_ms(target["value"]) if name.endswith("_s") else fmt_num(target["value"], 2)
        verdicts.append(f"{name}: {shown}  " + measure.verdict(target["met"], target["target"]))
    return "\n".join([table, *verdicts])


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """Per adaptive bridge with a target: its requests against the fixed strategy's, and its
    push latency p50."""
    found: dict[str, Any] = {}
    for bridge in BRIDGES:
        if bridge.latency_p50_target_s is None:
            continue
        stats = result["bridges"][bridge.name]
        ratio, p50 = stats["requests_ratio"], stats["push_latency_s"]["p50"]
        found[f"{bridge.name}_requests_ratio"] = {
            "target": f"<= {REQUESTS_RATIO_TARGET}",
            "value": ratio,
            "met": None if ratio is None else ratio <= REQUESTS_RATIO_TARGET,
        }
        found[f"{bridge.name}_push_latency_p50_s"] = {
            "target": f"<= {fmt_ms(bridge.latency_p50_target_s)}",
            "value": p50,
            "met": None if p50 is None else p50 <= bridge.latency_p50_target_s,
        }
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench(
        args,
        "pacing",
        lambda services, workdir, _: bench(args, services, workdir),
        report=lambda result: report(args, result),
        targets=targets,
    )


if __name__ == "__main__":
    sys.exit(main())
