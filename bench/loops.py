"""Client-side loops of the benchmark: the simulator's control API, watch registration, the poll
probes that time individual polls, and the bare HTTP loops the bridge is compared with."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
import orjson
from harness import BenchError, cpu_seconds, machine_busy_seconds
from measure import Reading

from service.http_clients import transport as _transport
from service.upstream import DEFAULT_MAX_BODY_BYTES, UpstreamClient, get_capped

REQUEST_TIMEOUT_S = 10.0  # the bridge's default upstream.request_timeout_s


async def each(
    items: Iterable[Any], worker: Callable[[Any], Awaitable[Any]], limit: int
) -> list[Any]:
    """`worker(item)` for every item, at most `limit` at a time; results in order."""
    gate = asyncio.Semaphore(limit)

    async def one(item: Any) -> Any:
        async with gate:
            return await worker(item)

    return await asyncio.gather(*(one(item) for item in items))


class Control:
    """The simulator's /_sim API and the bridge's /v1/watches, over one aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, sim_url: str) -> None:
        self.session = session
        self.sim_url = sim_url

    async def create_job(self, spec: dict[str, Any]) -> None:
        async with self.session.post(f"{self.sim_url}/_sim/jobs", json=spec) as response:
            if response.status != 200:
                raise BenchError(f"the simulator refused job {spec}: {await response.text()}")

    async def job(self, job_id: str) -> dict[str, Any]:
        async with self.session.get(f"{self.sim_url}/_sim/jobs/{job_id}") as response:
            if response.status != 200:
                raise BenchError(f"the simulator has no job {job_id}: {await response.text()}")
            job: dict[str, Any] = orjson.loads(await response.read())
            return job

    async def reading(self, job_id: str) -> Reading:
        sent = time.monotonic()
        job = await self.job(job_id)
        return Reading(job["polls"], sent, time.monotonic())

    async def readings(self, job_ids: Sequence[str], limit: int = 32) -> dict[str, Reading]:
        found = await each(job_ids, self.reading, limit)
        return dict(zip(job_ids, found, strict=True))

    async def stats(self) -> dict[str, Any]:
        async with self.session.get(f"{self.sim_url}/_sim/stats") as response:
            stats: dict[str, Any] = orjson.loads(await response.read())
            return stats

    async def register(self, bridge_url: str, job_id: str, callback_url: str) -> None:
        body = {"job_id": job_id, "callback_url": callback_url}
        async with self.session.post(f"{bridge_url}/v1/watches", json=body) as response:
            if response.status != 201:
                text = await response.text()
                raise BenchError(f"registering {job_id} answered {response.status}: {text}")


# Poll probes: the simulator counts polls per job but keeps no times, so a probe reads one job's
# counter often enough to see each poll land, and times the gaps between them.


@dataclass
class ProbeResults:
    lateness_s: list[float] = field(default_factory=list)
    uncertainty_s: list[float] = field(default_factory=list)
    imprecise: int = 0
    skipped: int = 0
    reads: int = 0


async def probe(
    control: Control,
    job_id: str,
    interval_s: float,
    until: float,
    period_s: float,
    margin_s: float,
    max_uncertainty_s: float,
    results: ProbeResults,
) -> None:
    """Time the polls of `job_id` until `until` (monotonic): between two polls the probe sleeps
    until `margin_s` before the next one is due, then reads the counter every `period_s`.

    A poll seen between reads sent at `a` and answered at `b` happened in (a, b): its time is
    taken as the midpoint and half that span is its uncertainty. A gap whose two ends together
    are less certain than `max_uncertainty_s` is counted as imprecise, not used; a read that
    shows more than one new poll (a gap was missed) only restarts the timing."""
    last = await control.reading(job_id)
    results.reads += 1
    polled_at: float | None = None
    polled_uncertainty = 0.0
    while True:
        now = time.monotonic()
        if now >= until:
            return
        wake = now + period_s
        if polled_at is not None:
            wake = max(wake, polled_at + interval_s - margin_s)
        await asyncio.sleep(max(0.0, min(wake, until) - now))
        current = await control.reading(job_id)
        results.reads += 1
        new = current.polls - last.polls
        if new == 1:
            at = (last.sent + current.received) / 2
            uncertainty = (current.received - last.sent) / 2
            if polled_at is not None:
                if polled_uncertainty + uncertainty <= max_uncertainty_s:
                    results.lateness_s.append(at - polled_at - interval_s)
                    results.uncertainty_s.append(polled_uncertainty + uncertainty)
                else:
                    results.imprecise += 1
            polled_at, polled_uncertainty = at, uncertainty
        elif new > 1:
            results.skipped += 1
            polled_at = None
        last = current


# Bare loops: the same GETs the bridge makes, with nothing else around them.

Get = Callable[[str], Awaitable[bytes | None]]
Make = Callable[[str, str, int], "Client"]


@dataclass
class Client:
    name: str
    get: Get  # a job id's status: its body, read up to the cap (None past it)
    close: Callable[[], Awaitable[None]]


def _bridge_like_connector(concurrency: int) -> aiohttp.TCPConnector:
    # As service/bridge.py builds its upstream transport.
    return aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)


def bridge_request_client(base_url: str, api_key: str, concurrency: int) -> Client:
    """The bridge's own request: its httpx transport over aiohttp, built by
    service/http_clients.py as service/bridge.py does, and `UpstreamClient.request` sent by
    `upstream.get_capped` (the headers, the 1 MiB cap, the whole-exchange timeout). The
    reference of the ratios: the bridge's polls/s over this loop's is what the bridge adds to
    the HTTP client's cost."""
    transport = _transport(_bridge_like_connector(concurrency))
    upstream = UpstreamClient(transport, base_url, REQUEST_TIMEOUT_S)

    async def get(job_id: str) -> bytes | None:
        request = upstream.request(job_id, api_key)
        _, _, body = await get_capped(transport, request, REQUEST_TIMEOUT_S, DEFAULT_MAX_BODY_BYTES)
        return body

    return Client("httpx + aiohttp transport, the bridge's request", get, transport.aclose)


async def _capped(chunks: AsyncIterator[bytes]) -> bytes | None:
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > DEFAULT_MAX_BODY_BYTES:
            return None
    return bytes(body)


def httpx_aiohttp_client(base_url: str, api_key: str, concurrency: int) -> Client:
    """The same transport under an httpx client, through its client layer (`client.stream`: URL
    merging, cookie jar, auth and redirect handling), the body read up to the cap."""
    client = httpx.AsyncClient(
        transport=_transport(_bridge_like_connector(concurrency)),
        timeout=REQUEST_TIMEOUT_S,
        follow_redirects=False,
    )
    headers = {"Authorization": f"Bearer {api_key}"}

    async def get(job_id: str) -> bytes | None:
        url = f"{base_url}/api/v1/generate/{job_id}"
        async with (
            asyncio.timeout(REQUEST_TIMEOUT_S),
            client.stream("GET", url, headers=headers) as response,
        ):
            return await _capped(response.aiter_bytes())

    return Client("httpx + aiohttp transport, client.stream", get, client.aclose)


def httpx_default_client(base_url: str, api_key: str, concurrency: int) -> Client:
    """httpx on its default (httpcore) transport, default pool limits."""
    client = httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, follow_redirects=False)
    headers = {"Authorization": f"Bearer {api_key}"}

    async def get(job_id: str) -> bytes | None:
        url = f"{base_url}/api/v1/generate/{job_id}"
        async with (
            asyncio.timeout(REQUEST_TIMEOUT_S),
            client.stream("GET", url, headers=headers) as response,
        ):
            return await _capped(response.aiter_bytes())

    return Client("httpx default transport", get, client.aclose)


def aiohttp_client(base_url: str, api_key: str, concurrency: int) -> Client:
    """Plain aiohttp with the bridge's connector settings, the body read up to the cap."""
    session = aiohttp.ClientSession(
        connector=_bridge_like_connector(concurrency), cookie_jar=aiohttp.DummyCookieJar()
    )
    headers = {"Authorization": f"Bearer {api_key}"}

    async def get(job_id: str) -> bytes | None:
        url = f"{base_url}/api/v1/generate/{job_id}"
        async with asyncio.timeout(REQUEST_TIMEOUT_S), session.get(url, headers=headers) as r:
            return await _capped(r.content.iter_any())

    return Client("plain aiohttp", get, session.close)


# By the name --bare-loops takes; the first is the reference of the ratios.
CLIENTS: dict[str, Make] = {
    "bridge": bridge_request_client,
    "httpx-aiohttp": httpx_aiohttp_client,
    "httpx": httpx_default_client,
    "aiohttp": aiohttp_client,
}


async def bare_loop(
    client: Client,
    job_ids: Sequence[str],
    concurrency: int,
    warmup_s: float,
    window_s: float,
    control: Control,
    sim_pid: int,
) -> dict[str, Any]:
    """`concurrency` workers GET the jobs' statuses round-robin and parse each JSON body (a
    body past the cap counts as an error); after `warmup_s`,
    count requests, the simulator's GETs and CPU (this process's, the simulator's and every other
    process's) for `window_s` seconds."""
    targets = itertools.cycle(job_ids)
    counts = {"ok": 0, "errors": 0}
    stop = asyncio.Event()

    async def worker() -> None:
        while not stop.is_set():
            try:
                body = await client.get(next(targets))
                if body is None:
                    raise ValueError("a body past the cap")
                orjson.loads(body)
            except (httpx.HTTPError, aiohttp.ClientError, OSError, TimeoutError, ValueError):
                counts["errors"] += 1
            else:
                counts["ok"] += 1

    me = os.getpid()
    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    try:
        await asyncio.sleep(warmup_s)
        stats0, ok0, errors0 = await control.stats(), counts["ok"], counts["errors"]
        cpu0, sim_cpu0, t0 = cpu_seconds(me), cpu_seconds(sim_pid), time.monotonic()
        machine0 = machine_busy_seconds()
        await asyncio.sleep(window_s)
        stats1, ok1, errors1 = await control.stats(), counts["ok"], counts["errors"]
        cpu1, sim_cpu1, t1 = cpu_seconds(me), cpu_seconds(sim_pid), time.monotonic()
        machine1 = machine_busy_seconds()
    finally:
        stop.set()
        await asyncio.gather(*workers, return_exceptions=True)
        await client.close()
    seconds = t1 - t0
    requests = ok1 - ok0
    sim_gets = stats1["gets_total"] - stats0["gets_total"]
    others = (machine1 - machine0) - (cpu1 - cpu0) - (sim_cpu1 - sim_cpu0)
    return {
        "client": client.name,
        "concurrency": concurrency,
        "window_s": seconds,
        "requests": requests,
        "errors": errors1 - errors0,
        "requests_per_s": requests / seconds,
        "sim_gets_per_s": sim_gets / seconds,
        "cpu_s": cpu1 - cpu0,
        "cpu_percent": 100 * (cpu1 - cpu0) / seconds,
        "cpu_s_per_1000": 1000 * (cpu1 - cpu0) / requests if requests else None,
        "sim_cpu_percent": 100 * (sim_cpu1 - sim_cpu0) / seconds,
        "other_cpu_percent": 100 * max(0.0, others) / seconds,
    }
