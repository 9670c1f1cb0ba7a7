"""The registration check's lookups of callback hosts: bounded in time, and on threads of their
own, so that a host whose DNS never answers holds up neither its registration nor the lookups
that deliveries and polls make.

The system resolver is the edge: `socket.getaddrinfo` stands in for it, its DNS servers never
answering for names under `hang.test` (a lookup holds its thread until released, as one holds
it until the resolver gives up) and answering as ever for the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from service.clock import FakeClock
from service.ssrf import LOOKUP_THREADS
from tests.integration.test_api import register, serve
from tests.unit.fake_time import run_until

DEADLINE_S = 10.0
# More registrations at once than the event loop's default executor has threads (at most 32).
FLOOD = 40


class DeadServers:
    """`socket.getaddrinfo`, but a name under hang.test blocks until `release`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._real = socket.getaddrinfo
        self._loop = loop
        self._released = threading.Event()
        self._entering = asyncio.Event()
        self._lock = threading.Lock()
        self.entered = 0  # lookups of hang.test names begun

    def __call__(self, host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(".hang.test"):
            with self._lock:
                self.entered += 1
            self._loop.call_soon_threadsafe(self._entering.set)
            self._released.wait()
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return self._real(host, *args, **kwargs)

    def release(self) -> None:
        self._released.set()

    async def begun(self, count: int) -> None:
        """Wait until `count` lookups of hang.test names have begun."""
        async with asyncio.timeout(DEADLINE_S):
            while self.entered < count:
                await self._entering.wait()
                self._entering.clear()


@pytest.fixture
async def dns(monkeypatch: pytest.MonkeyPatch) -> DeadServers:
    servers = DeadServers(asyncio.get_running_loop())
    monkeypatch.setattr(socket, "getaddrinfo", servers)
    return servers


@contextlib.asynccontextmanager
async def served(tmp_path: Path, dns: DeadServers) -> AsyncIterator[tuple[FakeClock, Any]]:
    """A bridge on a fake clock, and its client; the hanging lookups are released before it
    stops (the threads holding them end, as they do when the resolver gives up)."""
    clock = FakeClock()
    async for client in serve(tmp_path, clock):
        try:
            yield clock, client
        finally:
            dns.release()


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/watches", {"job_id": "job_1", "callback_url": "https://a.hang.test/hook"},
         "callback_url"),
        ("/v1/subscriptions", {"url": "https://a.hang.test/hook"}, "url"),
    ],
)  # fmt: skip
async def test_a_callback_host_whose_dns_never_answers_is_refused_in_time(
    tmp_path: Path, dns: DeadServers, path: str, body: dict[str, Any], field: str
) -> None:
    """A registration whose callback host's DNS does not answer is a 422 naming the host and
    the setting, security.callback_dns_timeout_s (5 s) after it began."""
    async with served(tmp_path, dns) as (clock, client):
        began = clock.now()
        answer = asyncio.ensure_future(client.post(path, json=body))
        await dns.begun(1)
        await run_until(clock, answer.done, "the registration's answer", within_s=5)

        assert answer.result().status_code == 422, answer.result().text
        assert answer.result().json()["errors"] == [
            {
                "field": field,
                "message": "host a.hang.test did not resolve within 5 s "
                "(security.callback_dns_timeout_s): its DNS servers did not answer in time",
            }
        ]
        assert clock.now() - began == pytest.approx(5)


async def test_hanging_lookups_leave_the_lookups_of_deliveries_free(
    tmp_path: Path, dns: DeadServers
) -> None:
    """With more registrations of hanging hosts at once than the default executor has threads,
    the resolver deliveries connect through (aiohttp's ThreadedResolver) still answers; the
    registrations whose lookup began are 422, those that found no free thread within the time
    are 503 (retry later), every one answered."""
    async with served(tmp_path, dns) as (clock, client):
        answers = [
            asyncio.ensure_future(
                register(client, job_id=f"job_{n}", callback_url=f"https://h{n}.hang.test/")
            )
            for n in range(FLOOD)
        ]
        await dns.begun(LOOKUP_THREADS)

        resolver = aiohttp.ThreadedResolver()
        try:
            async with asyncio.timeout(DEADLINE_S):
                found = await resolver.resolve("localhost", 80)
        finally:
            await resolver.close()
        assert found

        await run_until(clock, lambda: all(a.done() for a in answers), "every answer", 5)
        statuses = [answer.result().status_code for answer in answers]
        assert dns.entered == LOOKUP_THREADS  # no lookup begun but on the registrations' threads
        assert statuses.count(422) == LOOKUP_THREADS
        assert statuses.count(503) == FLOOD - LOOKUP_THREADS
        busy = next(answer.result() for answer in answers if answer.result().status_code == 503)
        assert busy.headers["Retry-After"] == "5"
        assert busy.json()["type"] == "/problems/busy"
