"""Benchmark of the bridge's kindness to the upstream: see bench/README.md.

    .venv/bin/python bench/upstream.py [--scenarios abcd] [--cap 300] ...

(a) saturation under a global cap: the request rate the simulator sees, against the cap;
(b) three API keys with very different numbers of jobs under a global and a per-key cap: each
    key's share against its max-min fair share;
(c) the simulator answering 503 to everything for a while: requests made while the circuit is
    open, and the time to resume once it recovers;
(d) a restart with many active watches: the highest requests per 100 ms and per second in the
    first seconds, against the steady rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from cryptography.fernet import Fernet
from harness import ROOT, BenchError, Service, Services
from loops import Control, each
from measure import fmt_num, fmt_s, table, verdict
from run import background_load
from runner import run_bench

KEYS = ("bw_key_big", "bw_key_mid", "bw_key_small")
LONG_QUEUE = 1_000_000
RATE_TOLERANCE = 0.05
# The default upstream's breaker, as /metrics shows it.
CIRCUIT_STATE = r'^bridge_upstream_circuit_state\{upstream="default"\} (\S+)$'
TRANSITIONS = (
    r'^bridge_upstream_circuit_transitions_total\{state="(\w+)",upstream="default"\} (\S+)$'
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Rate caps, circuit breaker and start-up spreading (see bench/README.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--scenarios", default="abcd", help="any of a, b, c, d")
    parser.add_argument("--cap", type=float, default=300.0, help="global cap, requests/s (a, b)")
    parser.add_argument("--per-key-cap", type=float, default=150.0, help="per-key cap (b)")
    parser.add_argument("--jobs", default="1000,100,5", help="jobs per key in (b)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before a window")
    parser.add_argument("--duration", type=float, default=10.0, help="window, seconds (a, b)")
    parser.add_argument("--outage", type=float, default=12.0, help="seconds of 503s (c)")
    parser.add_argument("--breaker-watches", type=int, default=200, help="watches in (c)")
    parser.add_argument("--restart-watches", type=int, default=10_000, help="watches in (d)")
    parser.add_argument("--restart-interval", type=float, default=5.0, help="poll interval (d)")
    parser.add_argument(
        "--results", type=Path, default=ROOT / "bench" / "results", help="directory for JSON"
    )
    parser.add_argument("--keep-temp", action="store_true", help="keep the logs and databases")
    args = parser.parse_args(argv)
    if set(args.scenarios) - set("abcd"):
        parser.error("--scenarios takes letters among a, b, c, d")
    return args


def fair_shares(demands: dict[str, float], total: float, per_key: float) -> dict[str, float]:
    """Max-min fair shares of `total` among keys asking `demands`, none above `per_key`."""
    want = {key: min(demand, per_key) if per_key > 0 else demand for key, demand in demands.items()}
    shares: dict[str, float] = {}
    left = total
    for key in sorted(want, key=want.__getitem__):
        equal = left / (len(want) - len(shares))
        shares[key] = min(want[key], equal)
        left -= shares[key]
    return shares


class Bench:
    def __init__(self, args: argparse.Namespace, services: Services, workdir: Path) -> None:
        self.args = args
        self.services = services
        self.workdir = workdir
        self.fernet_key = Fernet.generate_key().decode()
        self.sim: Service
        self.control: Control
        self.http: aiohttp.ClientSession

    def env(self, name: str, interval: float, **extra: str) -> dict[str, str]:
        return {
            "BRIDGE_UPSTREAM__BASE_URL": self.sim.url,
            "BRIDGE_UPSTREAM__API_KEY": KEYS[0],
            "BRIDGE_STORE__URL": f"sqlite:///{self.workdir / name}.db",
            "BRIDGE_SECURITY__ALLOW_PRIVATE_CALLBACKS": "true",
            "BRIDGE_SECURITY__ENCRYPTION_KEY": self.fernet_key,
            "BRIDGE_AUTH__REGISTRATIONS_PER_S": "1000000",
            "BRIDGE_AUTH__REGISTRATION_BURST": "1000000",
            "BRIDGE_POLL__INTERVAL_S": str(interval),
            "BRIDGE_POLL__MIN_INTERVAL_S": str(min(interval, 2.0)),
            "BRIDGE_POLL__TIMEOUT_S": "86400",
            # Every interval, so the demand is known (adaptive pacing polls long queues rarely).
            "BRIDGE_POLL__STRATEGY": "fixed",
            "BRIDGE_LOG__LEVEL": "info",
            "BRIDGE_LOG__FORMAT": "json",
            **extra,
        }

    async def jobs(self, prefix: str, count: int) -> list[str]:
        ids = [f"{prefix}_{n}" for n in range(count)]
        specs = [{"id": i, "queue_positions": LONG_QUEUE} for i in ids]
        await each(specs, self.control.create_job, 32)
        return ids

    async def register(self, bridge: Service, job_ids: list[str], key: str | None = None) -> None:
        async def one(job_id: str) -> None:
            body: dict[str, Any] = {"job_id": job_id, "callback_url": "http://127.0.0.1:9/x"}
            if key is not None:
                body["upstream_api_key"] = key
            async with self.http.post(f"{bridge.url}/v1/watches", json=body) as response:
                if response.status != 201:
                    raise BenchError(f"registering {job_id}: {await response.text()}")

        await each(job_ids, one, 16)

    async def stats(self) -> dict[str, Any]:
        return await self.control.stats()

    async def timeline(self) -> list[tuple[float, int]]:
        async with self.http.get(f"{self.sim.url}/_sim/timeline") as response:
            found = orjson.loads(await response.read())
        return [(float(at), int(n)) for at, n in found["gets"]]

    async def metrics(self, bridge: Service) -> str:
        async with self.http.get(f"{bridge.url}/metrics") as response:
            return await response.text()

    async def reset(self) -> None:
        async with self.http.post(f"{self.sim.url}/_sim/reset") as response:
            response.raise_for_status()

    async def faults(self, error_rate: float) -> None:
        url = f"{self.sim.url}/_sim/faults"
        async with self.http.post(url, json={"error_rate": error_rate}) as response:
            response.raise_for_status()

    async def window(self, seconds: float) -> tuple[float, dict[str, Any], dict[str, Any]]:
        await asyncio.sleep(self.args.warmup)
        before, started = await self.stats(), time.monotonic()
        await asyncio.sleep(seconds)
        after, ended = await self.stats(), time.monotonic()
        return ended - started, before, after

    # (a) Saturation under a global cap.

    async def saturation(self) -> dict[str, Any]:
        args = self.args
        await self.reset()
        bridge = await self.services.start_bridge(
            "bridge-a",
            self.env("a", 0.1, BRIDGE_UPSTREAM__MAX_REQUESTS_PER_S=str(args.cap)),
        )
        await self.register(bridge, await self.jobs("a", 2000))
        seconds, before, after = await self.window(args.duration)
        self.services.stop(bridge)
        rate = (after["gets_total"] - before["gets_total"]) / seconds
        return {"cap": args.cap, "watches": 2000, "interval_s": 0.1, "rate": rate,
                "ratio": rate / args.cap, "window_s": seconds}  # fmt: skip

    # (b) Three keys, very different numbers of jobs.

    async def shares(self) -> dict[str, Any]:
        args = self.args
        counts = [int(n) for n in args.jobs.split(",")]
        await self.reset()
        bridge = await self.services.start_bridge(
            "bridge-b",
            self.env(
                "b", 0.1,
                BRIDGE_UPSTREAM__MAX_REQUESTS_PER_S=str(args.cap),
                BRIDGE_UPSTREAM__MAX_REQUESTS_PER_S_PER_KEY=str(args.per_key_cap),
            ),
        )  # fmt: skip
        for key, count in zip(KEYS, counts, strict=True):
            await self.register(bridge, await self.jobs(f"b_{key}", count), key)
        seconds, before, after = await self.window(args.duration)
        self.services.stop(bridge)
        rates = {
            key: (after["gets_by_key"].get(key, 0) - before["gets_by_key"].get(key, 0)) / seconds
            for key in KEYS
        }
        # What each key asks: a poll of each job every 0.1 s at most.
        demands = {key: count / 0.1 for key, count in zip(KEYS, counts, strict=True)}
        fair = fair_shares(demands, args.cap, args.per_key_cap)
        jobs = dict(zip(KEYS, counts, strict=True))
        return {"cap": args.cap, "per_key_cap": args.per_key_cap, "jobs": jobs,
                "rates": rates, "fair": fair, "demands": demands, "total": sum(rates.values()),
                "window_s": seconds}  # fmt: skip

    # (c) A 100 % 503 outage.

    async def outage(self) -> dict[str, Any]:
        args = self.args
        await self.reset()
        bridge = await self.services.start_bridge("bridge-c", self.env("c", 0.5))
        await self.register(bridge, await self.jobs("c", args.breaker_watches))
        seconds, before, after = await self.window(5.0)
        steady = (after["gets_total"] - before["gets_total"]) / seconds

        await self.faults(1.0)
        started = time.monotonic()
        at_start = (await self.stats())["gets_total"]
        opened_after = await self.until_state(bridge, 2, 30.0)
        at_open = (await self.stats())["gets_total"]
        await asyncio.sleep(max(0.0, args.outage - (time.monotonic() - started)))
        at_recovery = (await self.stats())["gets_total"]
        await self.faults(0.0)
        recovered = time.monotonic()
        closed_after = await self.until_state(bridge, 0, 180.0)
        resumed = time.monotonic()
        metrics = await self.metrics(bridge)
        self.services.stop(bridge)
        transitions = {
            state: float(n)
            for state, n in re.findall(TRANSITIONS, metrics, re.MULTILINE)
        }  # fmt: skip
        open_s = args.outage - opened_after
        without = await self.outage_without_breaker()
        return {
            "watches": args.breaker_watches, "steady_rate": steady, "outage_s": args.outage,
            "time_to_open_s": opened_after, "requests_while_open": at_recovery - at_open,
            "requests_in_outage": at_recovery - at_start,
            "requests_in_outage_without_breaker": without, "open_s": open_s,
            "rate_while_open": (at_recovery - at_open) / open_s if open_s > 0 else None,
            "time_to_resume_s": resumed - recovered, "closed_after_s": closed_after,
            "transitions": transitions,
        }  # fmt: skip

    async def outage_without_breaker(self) -> int:
        """The same outage against a bridge with the breaker off: requests made meanwhile."""
        args = self.args
        await self.reset()
        env = self.env("c0", 0.5, BRIDGE_UPSTREAM__CIRCUIT_BREAKER="false")
        bridge = await self.services.start_bridge("bridge-c0", env)
        await self.register(bridge, await self.jobs("c0", args.breaker_watches))
        await asyncio.sleep(5.0)
        await self.faults(1.0)
        at_start = (await self.stats())["gets_total"]
        await asyncio.sleep(args.outage)
        at_end = (await self.stats())["gets_total"]
        await self.faults(0.0)
        self.services.stop(bridge)
        return int(at_end - at_start)

    async def until_state(self, bridge: Service, value: int, limit_s: float) -> float:
        """Seconds until bridge_upstream_circuit_state reads `value`."""
        started = time.monotonic()
        while time.monotonic() - started < limit_s:
            found = re.search(CIRCUIT_STATE, await self.metrics(bridge), re.MULTILINE)
            if found and float(found.group(1)) == value:
                return time.monotonic() - started
            await asyncio.sleep(0.05)
        raise BenchError(f"the circuit state never read {value} in {limit_s:g} s")

    # (d) A restart with many active watches.

    async def restart(self) -> dict[str, Any]:
        args = self.args
        interval = args.restart_interval
        await self.reset()
        env = self.env("d", interval)
        first = await self.services.start_bridge("bridge-d1", env)
        await self.register(first, await self.jobs("d", args.restart_watches))
        self.services.stop(first)  # a graceful stop releases every lease
        await asyncio.sleep(1.0)
        second = await self.services.start_bridge("bridge-d2", env)
        started = time.time()
        settle = 10.0 + 2 * interval
        await asyncio.sleep(settle + 10.0)
        self.services.stop(second)
        slots = [(at, n) for at, n in await self.timeline() if at >= started - 1.0]
        first_s = [n for at, n in slots if at < started + 10.0]
        steady_slots = [n for at, n in slots if started + settle <= at < started + settle + 10.0]
        per_second: dict[int, int] = {}
        for at, n in slots:
            if at < started + 10.0:
                per_second[int(at - started + 1.0)] = per_second.get(int(at - started + 1), 0) + n
        steady = sum(steady_slots) / 10.0
        return {
            "watches": args.restart_watches, "interval_s": interval,
            "needed_rate": args.restart_watches / interval, "steady_rate": steady,
            "peak_per_100ms": max(first_s, default=0), "peak_per_s": max(per_second.values(),
                                                                         default=0),
            "steady_per_100ms": steady / 10, "first_10s_per_s": per_second,
        }  # fmt: skip


def report(result: dict[str, Any]) -> str:
    rows = []
    if "a" in result:
        a = result["a"]
        rows.append((f"(a) rate at cap {a['cap']:g}/s, {a['watches']} watches at 0.1 s",
                     fmt_num(a["rate"], 1, "req/s"),
                     verdict(abs(a["ratio"] - 1) <= RATE_TOLERANCE,
                             f"within 5 % of the cap (ratio {a['ratio']:.3f})")))  # fmt: skip
    if "b" in result:
        b = result["b"]
        for key in KEYS:
            rate, fair = b["rates"][key], b["fair"][key]
            if fair < b["demands"][key]:  # held back to its share
                ok = abs(rate - fair) <= RATE_TOLERANCE * fair
                target = f"fair share {fair:.1f}/s ±5 %"
            else:  # asks less than its share: gets what it asks
                ok = rate >= 0.85 * fair
                target = f"not held back: asks {fair:.0f}/s at most"
            rows.append((f"(b) {key}: {b['jobs'][key]} jobs", fmt_num(rate, 1, "req/s"),
                         verdict(ok, target)))  # fmt: skip
        rows.append(("(b) all keys", fmt_num(b["total"], 1, "req/s"),
                     f"cap {b['cap']:g}/s, per key {b['per_key_cap']:g}/s"))  # fmt: skip
    if "c" in result:
        c = result["c"]
        rows.append(("(c) steady rate before the outage", fmt_num(c["steady_rate"], 1, "req/s"),
                     ""))  # fmt: skip
        rows.append(("(c) time to open after 503s begin", fmt_s(c["time_to_open_s"]), ""))
        rows.append((f"(c) requests while open ({c['open_s']:.1f} s)",
                     fmt_num(c["requests_while_open"]), f"probes: "
                     f"{c['transitions'].get('half_open', 0):g}"))  # fmt: skip
        rows.append((f"(c) requests in the {c['outage_s']:g} s outage, breaker on / off",
                     f"{c['requests_in_outage']:,} / {c['requests_in_outage_without_breaker']:,}",
                     "off: each watch backs off alone"))  # fmt: skip
        rows.append(("(c) time to resume after recovery", fmt_s(c["time_to_resume_s"]),
                     "<= the cool-down then running"))  # fmt: skip
    if "d" in result:
        d = result["d"]
        rows.append(
            (
                f"(d) restart, {d['watches']:,} watches at {d['interval_s']:g} s: steady",
                fmt_num(d["steady_rate"], 0, "req/s"),
                f"needs {d['needed_rate']:,.0f}/s",
            )
        )
        rows.append(("(d) peak per 100 ms in the first 10 s", fmt_num(d["peak_per_100ms"]),
                     verdict(d["peak_per_100ms"] <= 1.5 * d["steady_per_100ms"],
                             f"<= 1.5 x steady ({d['steady_per_100ms']:.0f})")))  # fmt: skip
        rows.append(("(d) peak per second in the first 10 s", fmt_num(d["peak_per_s"]),
                     verdict(d["peak_per_s"] <= 1.2 * d["steady_rate"],
                             f"<= 1.2 x steady ({d['steady_rate']:.0f})")))  # fmt: skip
    return table("Upstream: rate caps, circuit breaker, start-up", rows)


async def main_async(args: argparse.Namespace, services: Services, workdir: Path) -> dict[str, Any]:
    bench = Bench(args, services, workdir)
    bench.sim = await services.start_devtool(
        "simulator",
        ["fake-upstream", "--seed", "1", *(arg for key in KEYS for arg in ("--api-key", key))],
    )
    result: dict[str, Any] = {"background_cpu_percent": await background_load()}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:
        bench.http = http
        bench.control = Control(http, bench.sim.url)
        for letter, run in (("a", bench.saturation), ("b", bench.shares), ("c", bench.outage),
                            ("d", bench.restart)):  # fmt: skip
            if letter in args.scenarios:
                result[letter] = await run()
                print(f"({letter}) {json.dumps(result[letter], default=str)[:300]}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench(
        args,
        "upstream",
        lambda services, workdir, _: main_async(args, services, workdir),
        report=report,
    )


if __name__ == "__main__":
    sys.exit(main())
