"""The worker's shutdown, on the memory store and a fake clock: the work in flight gets the
grace once, nothing more is claimed, every lease is released."""

from __future__ import annotations

import asyncio

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
