"""The worker's start and shutdown, on the memory store and a fake clock: watches it will
never claim are reported once; at a stop the work in flight gets the grace once, nothing more
is claimed, every lease is released."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from structlog.testing import capture_logs

from service.worker import run_scheduled
from tests.integration.test_store_contract import new_watch
from tests.unit.fake_time import settle
from tests.unit.worker_rig import OWNER, running


async def test_stop_gives_polls_the_grace_once_then_releases_every_lease() -> None:
    """A poll whose request takes 30 s is given the 5 s grace, then cancelled; the watches'
    leases are released, and a claim meanwhile takes nothing."""
    async with running(duration_s=30.0) as rig:
        for n in range(3):
            await rig.register(f"job-{n}")
        await rig.run_for(0)
        assert len(rig.upstream.requests) == 3  # in flight
        await rig.store.insert_watch(rig.watch("job-unclaimed"))
        started = rig.clock.now()
        stopping = asyncio.ensure_future(rig.worker.stop(5.0))
        await asyncio.sleep(0)  # it has begun
        await rig.worker.leases.claim()
        await rig.until(stopping.done, "stopped")
        assert rig.clock.now() - started == 5.0
        assert {lease.owner for lease in rig.store.leases.values()} == {None}
        assert OWNER not in {lease.owner for lease in rig.store.leases.values()}
        assert rig.worker.poller.held_count == 3  # the claim adopted nothing


async def test_the_start_reports_watches_of_upstreams_not_configured_once_per_upstream() -> None:
    """Active watches of an upstream no longer in the settings are never claimed here: the
    start logs one warning per such upstream, with how many and what to do, and the claims
    after it add none; configured upstreams' watches and ended ones are not reported."""
    stored = [
        *(new_watch(job_id=f"job-{n}", upstream="runway") for n in range(3)),
        new_watch(job_id="job-fal", upstream="fal"),
        new_watch(job_id="job-ended", upstream="luma", status="cancelled"),
        new_watch(job_id="job-studio", upstream="studio"),
        new_watch(job_id="job-default"),
    ]
    with capture_logs() as logs:
        async with running(stored=stored, upstreams={"studio": {}}) as rig, rig.upkeep():
            await rig.run_for(5)

    reported = [entry for entry in logs if entry["event"] == "watches.upstream_not_configured"]
    assert [(e["log_level"], e["upstream"], e["watches"]) for e in reported] == [
        ("warning", "fal", 1), ("warning", "runway", 3),
    ]  # fmt: skip
    assert "add [upstreams.runway] back" in reported[1]["detail"]
    assert "cancel them" in reported[1]["detail"]


async def test_an_upkeep_job_cut_short_by_the_shutdown_is_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The scheduler's shutdown at a drain cancels an upkeep job under way: the bridge is
    stopping, not failing, so nothing is logged as an error (an alert on error lines would
    fire at every such stop)."""
    started, never = asyncio.Event(), asyncio.Event()

    async def job() -> None:
        started.set()
        await never.wait()

    scheduler = AsyncIOScheduler()
    scheduler.add_job(
        run_scheduled,
        "interval",
        args=("gauges", job),
        seconds=3600,
        next_run_time=datetime.now(UTC),
    )
    scheduler.start()
    await asyncio.wait_for(started.wait(), timeout=10)
    with capture_logs() as logs:
        scheduler.shutdown(wait=False)
        await settle()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert logs == [{"event": "upkeep.cut_short", "job": "gauges", "log_level": "info"}]
