"""The poller's timing, on the memory store and a fake clock (no real sleep), with the upstream
behind an `httpx.MockTransport`: first polls, polls on time under load, rate-cap turns, the
circuit breaker, the timeout sweep, and leases renewed and lost."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Sequence

import httpx

from service import pacing, profiles
from service.clock import Clock
from service.errors import StoreUnavailable
from service.store.base import Completion, Delivery
from service.store.memory import MemoryStore
from tests.unit.fake_time import settle
from tests.unit.worker_rig import BRIDGE_KEY, running, succeeded


class GatedStore(MemoryStore):
    """The memory store whose lease renewals and completions wait for their gate (open at
    first): a write under way when another call commits, as a store serving several at once
    lets happen."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.renewals, self.completions = asyncio.Event(), asyncio.Event()
        self.renewals.set()
        self.completions.set()

    async def renew_watch_leases(
        self, owner: str, held: Sequence[tuple[str, int]], lease_until: float
    ) -> set[str]:
        await self.renewals.wait()
        return await super().renew_watch_leases(owner, held, lease_until)

    async def complete_watch(
        self, owner: str, now: float, completion: Completion, delivery_lease_until: float
    ) -> list[Delivery]:
        await self.completions.wait()
        return await super().complete_watch(owner, now, completion, delivery_lease_until)


async def test_the_first_poll_is_made_at_once_then_every_interval() -> None:
    """A registered watch is polled at once, without the clock moving, then every 2.5 s."""
    async with running() as rig:
        await rig.register("job-1")
        await rig.run_for(0)
        assert rig.upstream.jobs() == ["job-1"]
        assert rig.upstream.requests[0].key == BRIDGE_KEY
        await rig.run_for(10)
        assert rig.upstream.times("job-1") == [0, 2.5, 5, 7.5, 10]


async def test_polls_stay_on_time_under_load() -> None:
    """500 watches at 2.5 s through 4 concurrent requests of 10 ms each (twice what they need):
    the claimed ones' first polls are spread over one interval, then every poll starts within
    one request's time of when it is due."""
    async with running(duration_s=0.01, upstream={"max_concurrency": 4}) as rig:
        overdue = rig.clock.now() - 60
        for n in range(500):
            await rig.store.insert_watch(rig.watch(f"job-{n}", created_at=overdue))
        await rig.worker.leases.claim()  # as after a restart: all of them due long ago
        assert rig.worker.poller.held_count == 500
        await rig.run_for(10)
        firsts = sorted(rig.upstream.times(f"job-{n}")[0] for n in range(500))
        assert firsts[-1] < 2.5  # spread over one interval, not all at once
        assert max(firsts[n + 100] - firsts[n] for n in range(400)) < 0.6
        for n in range(500):
            times = rig.upstream.times(f"job-{n}")
            assert len(times) in (3, 4)  # every 2.5 s after the answer, for 10 s
            gaps = [b - a for a, b in itertools.pairwise(times)]
            assert all(2.5 <= gap <= 2.52 for gap in gaps), (n, times)
        assert max(rig.observed.lateness) <= 0.01
        assert rig.worker.poller.due_backlog() == 0


async def test_keys_take_turns_under_the_global_rate_cap() -> None:
    """Under a cap of 2 requests/s, a key with one job is not held behind a key with twenty:
    keys with due polls take turns."""
    async with running(upstream={"max_requests_per_s": 2, "request_burst": 1}) as rig:
        for n in range(20):
            await rig.register(f"busy-{n}")
        await rig.register("other", upstream_api_key="bw_other_key")
        await rig.run_for(2)
        keys = [request.key for request in rig.upstream.requests]
        assert keys[:2] == [BRIDGE_KEY, "bw_other_key"]  # its turn came second
        assert len(keys) == 5  # the cap: one at once, then two a second


async def test_a_key_at_its_own_cap_does_not_delay_the_others() -> None:
    """A key capped at 1 request/s with many due polls leaves another key's polls on time."""
    per_key = {"max_requests_per_s_per_key": 1, "request_burst_per_key": 1}
    async with running(upstream=per_key) as rig:
        for n in range(10):
            await rig.register(f"busy-{n}")
        await rig.register("other", upstream_api_key="bw_other_key")
        await rig.run_for(5.1)
        assert rig.upstream.times("other") == [0, 2.5, 5]
        busy = [r.at for r in rig.upstream.requests if r.key == BRIDGE_KEY]
        assert len(busy) == 6  # one a second


async def test_a_429_holds_every_poll_of_its_key_until_retry_after() -> None:
    """A 429 with Retry-After: 5 stops the key's polls (every job of it) for 5 s; another
    key's go on."""
    limited = {"job-a": True}

    def answer(job_id: str) -> httpx.Response:
        if job_id == "job-a" and limited["job-a"]:
            limited["job-a"] = False
            return httpx.Response(429, headers={"Retry-After": "5"})
        return httpx.Response(200, json={"id": job_id, "status": "queued"})

    async with running(answer) as rig:
        await rig.register("job-a")
        await rig.run_for(0)
        await rig.register("job-b")  # same key, due now: held
        await rig.register("other", upstream_api_key="bw_other_key")
        await rig.run_for(6)
        assert rig.upstream.times("job-a") == [0, 5]
        assert rig.upstream.times("job-b") == [5]
        assert rig.upstream.times("other") == [0, 2.5, 5]


async def test_the_breaker_opens_probes_and_respreads_the_backlog() -> None:
    """Five failures in a row open the circuit: no request for the cool-down, then one probe;
    a failed probe doubles the cool-down; a probe that succeeds closes it, and the polls that
    fell due meanwhile are spread over one interval, not sent at once."""
    down = {"yes": True}

    def answer(job_id: str) -> httpx.Response:
        if down["yes"]:
            return httpx.Response(503)
        return httpx.Response(200, json={"id": job_id, "status": "queued"})

    # One request at a time, so that none is in flight when the circuit opens.
    breaker = {"circuit_consecutive_failures": 5, "circuit_cooldown_s": 5.0, "max_concurrency": 1}
    async with running(answer, upstream=breaker) as rig:
        for n in range(10):
            await rig.register(f"job-{n}")
        await rig.run_for(0)
        assert len(rig.upstream.requests) == 5  # the fifth failure opened it
        assert rig.observed.states() == ["open"]
        await rig.run_for(4.9)
        assert len(rig.upstream.requests) == 5
        await rig.run_for(0.1)
        assert len(rig.upstream.requests) == 6  # the probe, which fails
        assert rig.observed.states() == ["open", "half_open", "open"]
        down["yes"] = False
        await rig.run_for(9.9)
        assert len(rig.upstream.requests) == 6  # the cool-down doubled
        await rig.run_for(0.1)
        assert rig.observed.states()[-2:] == ["half_open", "closed"]
        probe, closed_at = rig.upstream.requests[6], rig.clock.now()
        await rig.run_for(2.4)
        after = rig.upstream.requests[7:]
        assert sorted(r.job_id for r in after) == sorted(
            {f"job-{n}" for n in range(10)} - {probe.job_id}
        )
        times = [r.at - closed_at for r in after]
        assert times[0] == 0
        assert times[-1] > 2.0  # spread over the interval
        assert max(b - a for a, b in itertools.pairwise(times)) < 0.3


async def test_watches_time_out_on_time_while_polls_wait_for_the_rate_cap() -> None:
    """With polls held by a cap of one request every 10 s, watches whose 5 s timeout passes
    end with their timeout event within the sweep's second, without a request: their jobs
    timed out."""
    cap = {"max_requests_per_s": 0.1, "request_burst": 1}
    async with running(upstream=cap) as rig:
        registered = rig.clock.now()
        for n in range(5):
            await rig.register(f"job-{n}", timeout_s=5.0)
        await rig.run_for(7)
        assert len(rig.upstream.requests) == 1
        ended = [e for e in rig.store.events if e.final]
        assert len(ended) == 5
        assert all(b'"error_code":"timeout"' in e.body.replace(b" ", b"") for e in ended)
        assert all(5 <= e.created_at - registered <= 6 for e in ended)
        assert {w.status for w in rig.store.watches.values()} == {"delivered"}  # webhooks sent
        assert {w.outcome for w in rig.store.watches.values()} == {"timed_out"}


async def test_watches_time_out_on_time_while_the_circuit_is_open() -> None:
    """With the circuit open for a minute, watches whose 10 s timeout passes end on time."""
    breaker = {"circuit_consecutive_failures": 1, "circuit_cooldown_s": 60.0, "max_concurrency": 1}
    async with running(lambda _: httpx.Response(500), upstream=breaker) as rig:
        registered = rig.clock.now()
        for n in range(3):
            await rig.register(f"job-{n}", timeout_s=10.0)
        await rig.run_for(12)
        assert len(rig.upstream.requests) == 1
        ended = [e.created_at - registered for e in rig.store.events if e.final]
        assert len(ended) == 3
        assert all(10 <= at <= 11 for at in ended)


async def test_renewals_extend_the_leases_and_a_watch_taken_over_is_no_longer_polled() -> None:
    """A renewal pushes the leases on; a watch whose lease another process took is let go at
    the next renewal, and its job is polled no more, while the other watch's polls go on."""
    async with running() as rig:
        kept, taken = await rig.register("job-kept"), await rig.register("job-taken")
        await rig.run_for(5)
        await rig.worker.leases.renew()
        assert rig.store.leases[kept.id].until == rig.clock.now() + 15
        rig.store.leases[taken.id].take("another", rig.clock.now() + 15)
        await rig.worker.leases.renew()
        assert rig.worker.poller.held() == [(kept.id, kept.lease_token)]
        polled = len(rig.upstream.times("job-taken"))
        await rig.run_for(10)
        assert len(rig.upstream.times("job-taken")) == polled
        assert len(rig.upstream.times("job-kept")) == 7


async def test_a_write_that_finds_the_lease_lost_lets_the_watch_go() -> None:
    """When a poll's change cannot be written because another process took the watch, the
    poller stops polling it at once, not at the next renewal."""
    position = {"job-1": 3}

    def answer(job_id: str) -> httpx.Response:
        position[job_id] = position.get(job_id, 3) - 1
        body = {"id": job_id, "status": "queued", "queue_position": position[job_id]}
        return httpx.Response(200, json=body)

    async with running(answer) as rig:
        watch = await rig.register("job-1")
        await rig.run_for(0.1)
        rig.store.leases[watch.id].take("another", rig.clock.now() + 15)
        await rig.run_for(2.5)  # the second poll sees a new position: its write is refused
        assert rig.worker.poller.held() == []
        await rig.run_for(10)
        assert rig.upstream.times("job-1") == [0, 2.5]


async def test_after_a_store_outage_longer_than_the_lease_polling_goes_on() -> None:
    """A store outage outlasting the leases: once the store is back, this process claims its
    own watch again and goes on polling it every 2.5 s under the same token (not letting it go
    at the next renewal, then waiting for that lease to run out); the status seen during the
    outage is recorded once."""
    status = {"job-1": "queued"}

    def answer(job_id: str) -> httpx.Response:
        return httpx.Response(200, json={"id": job_id, "status": status[job_id]})

    async with running(answer) as rig, rig.upkeep():
        watch = await rig.register("job-1")
        await rig.run_for(1.3)
        rig.store.outage = StoreUnavailable("the server is restarting")
        await rig.run_for(20)
        status["job-1"] = "processing"
        await rig.run_for(20)
        rig.store.outage = None
        polled = len(rig.upstream.times("job-1"))
        await rig.run_for(30)
        times = rig.upstream.times("job-1")[polled - 1 :]
        assert [round(b - a, 6) for a, b in itertools.pairwise(times)] == [2.5] * 12
        assert rig.worker.poller.held() == [(watch.id, rig.store.leases[watch.id].token)]
        assert rig.store.leases[watch.id].token == watch.lease_token
        assert [e.type for e in rig.store.events] == ["job.queued", "job.processing"]


async def test_a_renewal_under_way_when_a_watch_is_claimed_again_keeps_it() -> None:
    """A renewal under way while this process claims its watch again (its lease ran out) keeps
    the watch, and it is polled on."""
    async with running(store_type=GatedStore) as rig:
        store = rig.store
        assert isinstance(store, GatedStore)
        watch = await rig.register("job-1")
        await rig.run_for(16)  # not renewed: its lease ran out
        store.renewals.clear()
        renewing = asyncio.ensure_future(rig.worker.leases.renew())
        await settle()
        await rig.worker.leases.claim()
        store.renewals.set()
        await renewing
        assert rig.worker.poller.held() == [(watch.id, store.leases[watch.id].token)]
        polled = len(rig.upstream.times("job-1"))
        await rig.run_for(10)
        assert len(rig.upstream.times("job-1")) == polled + 4


async def test_a_completion_under_way_when_a_watch_is_claimed_again_is_committed() -> None:
    """A final event under way while this process claims its watch again (its lease ran out) is
    committed, and the watch's webhook sent once, without waiting for a lease to run out."""
    status = {"job-1": "queued"}

    def answer(job_id: str) -> httpx.Response:
        return httpx.Response(200, json={"id": job_id, "status": status[job_id], "output": {}})

    async with running(answer, store_type=GatedStore) as rig:
        store = rig.store
        assert isinstance(store, GatedStore)
        watch = await rig.register("job-1")
        await rig.run_for(16)  # not renewed: its lease ran out
        status["job-1"] = "succeeded"
        store.completions.clear()
        await rig.until(lambda: len(rig.upstream.times("job-1")) == 8, "the job seen done")
        await rig.worker.leases.claim()
        store.completions.set()
        await rig.until(lambda: store.watches[watch.id].status == "delivered", "delivered")
        assert rig.upstream.times("job-1")[-1] == 17.5  # seen done and committed, not polled again
        assert len(rig.receivers) == 1


async def test_a_final_answer_is_committed_and_delivered() -> None:
    """A job that succeeded ends its watch: the final event is committed, then its webhook
    is sent and recorded, and the watch is no longer polled."""
    async with running(succeeded) as rig:
        watch = await rig.register("job-1")
        await rig.until(lambda: rig.store.watches[watch.id].status == "delivered", "delivered")
        [request] = rig.receivers
        assert request.url == "https://receiver.example/job-1"
        assert rig.observed.attempts[0][1] == "succeeded"
        assert rig.worker.poller.held() == []
        await rig.run_for(10)
        assert rig.upstream.times("job-1") == [0]


async def test_one_upstreams_outage_never_slows_another() -> None:
    """Each upstream has its own breaker, slots and rate cap: while the default upstream fails
    and its circuit is open, the other's watches are polled every 2.5 s as before."""

    def answer(job_id: str) -> httpx.Response:
        if job_id.startswith("down-"):
            return httpx.Response(503)
        return httpx.Response(200, json={"id": job_id, "status": "queued"})

    limits = {"circuit_consecutive_failures": 3, "circuit_cooldown_s": 60.0, "max_concurrency": 1}
    async with running(answer, upstream=limits, upstreams={"other": limits}) as rig:
        for n in range(3):
            await rig.register(f"down-{n}")
        await rig.register("fine", upstream="other")
        await rig.run_for(10)
        assert rig.observed.states() == ["open"]
        assert rig.observed.circuits == ["default"]
        assert rig.upstream.times("fine") == [0, 2.5, 5, 7.5, 10]
        assert rig.worker.poller.circuits() == {"default": "open", "other": "closed"}


async def test_a_watch_of_an_upstream_not_configured_is_left_to_its_lease() -> None:
    """A watch whose upstream is not configured here is not polled, and not lost: its lease
    is not renewed, so a process that knows the upstream takes it over."""
    async with running() as rig:
        kept = await rig.register("elsewhere", upstream="gone")
        await rig.run_for(rig.settings.store.lease_s + 1)
        assert rig.upstream.requests == []
        assert rig.worker.poller.held() == []
        assert rig.store.watches[kept.id].status == "active"


async def test_progress_read_by_the_profile_paces_the_polls() -> None:
    """With a profile that reads `progress` and the adaptive strategy, once processing times
    are learned (from the first jobs, polled every 2.5 s), a job is polled three times while
    it processes (from 25 s: 25, 27.5, 30, 32.5 at the fixed interval) and seen done within a
    second of its end (not 2 s after it, at 35): its readings reach the pacing."""
    queued_s, processing_s = 3.0, 10.0
    created: dict[str, float] = {}
    vendor = profiles.builtin(profiles.DEFAULT)
    reads = vendor.model_copy(update={"read": vendor.read.model_copy(update={"progress": "p"})})

    def answer(job_id: str) -> httpx.Response:
        elapsed = clock.now() - created.setdefault(job_id, clock.now()) - queued_s
        if elapsed < 0:
            return httpx.Response(200, json={"id": job_id, "status": "queued"})
        if elapsed < processing_s:
            done = math.floor(100 * elapsed / processing_s) / 100
            return httpx.Response(200, json={"id": job_id, "status": "processing", "p": done})
        return succeeded(job_id)

    async with running(answer, upstream={"profile": reads}, poll={"strategy": "adaptive"}) as rig:
        clock = rig.clock
        for n in range(pacing.MIN_SAMPLES + 1):
            await rig.register(f"learned-{n}")
        await rig.run_for(20)
        await rig.register("planned")
        await rig.run_for(20)
        times = rig.upstream.times("planned")
        start, end = times[0] + queued_s, times[0] + queued_s + processing_s
        assert len([at for at in times if start <= at < end]) <= 3
        assert end <= times[-1] <= end + 1.0
