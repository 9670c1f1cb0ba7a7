"""The simulator speaking a provider's dialect, served on a loopback port with a fake clock, and
a client of its `/_sim/` control endpoints."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from service.clock import FakeClock
from service.devtools import fake_upstream
from service.devtools.fake_upstream import SimulatorConfig
from tests.loopback import asgi_server
from tests.unit.doubles import Sleeps

KEY = "sim_key"
# A job's timeline in the tests: 2 positions of 1 s in the queue, then 4 s of processing.
TIMELINE = {"queue_positions": 2, "seconds_per_position": 1.0, "processing_s": 4.0}


@dataclass
class Served:
    """A running simulator: `api` reaches the dialect's routes (no key set), `clock` its time."""

    api: httpx.AsyncClient
    clock: FakeClock

    async def job(self, job_id: str, **spec: Any) -> None:
        """A job with the test timeline, overridden by `spec`."""
        response = await self.api.post("/_sim/jobs", json={"id": job_id, **TIMELINE, **spec})
        assert response.status_code == 200, response.text

    async def faults(self, **rates: float) -> None:
        response = await self.api.post("/_sim/faults", json=rates)
        assert response.status_code == 200, response.text


@contextlib.asynccontextmanager
async def served(*profiles: str, **settings: Any) -> AsyncIterator[Served]:
    """`fake-upstream --profile P ...` accepting KEY, on a loopback port, at clock time 0."""
    clock = FakeClock(start=1_000.0)
    config = SimulatorConfig(api_keys=frozenset({KEY}), seed=7, **settings)
    app = fake_upstream.build_app(config, clock.now, sleep=Sleeps(), profiles=profiles)
    async with asgi_server(app) as url, httpx.AsyncClient(base_url=url) as api:
        yield Served(api, clock)
