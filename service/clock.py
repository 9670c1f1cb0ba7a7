"""Time as a dependency: the real clock, and a fake one that tests move by hand.

All stored times are wall-clock seconds since the epoch (floats), so they survive restarts and
compare across processes. Waiting goes through the clock too (`sleep`, `wait`), so that a fake
clock drives the loops that wait: `FakeClock.advance` wakes the sleepers whose time has come,
as Twisted's `task.Clock` and trio's `MockClock` do.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock seconds since the epoch."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock's time (at once when not positive)."""
        ...

    async def wait(self, event: asyncio.Event, seconds: float) -> bool:
        """Wait until `event` is set or `seconds` of this clock's time passed; whether it is
        set."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))

    async def wait(self, event: asyncio.Event, seconds: float) -> bool:
        if not event.is_set() and seconds > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await event.wait()
        return event.is_set()


class FakeClock:
    """A clock that only moves when told to; time never goes backwards. Sleepers wake when
    `advance` reaches their time (their tasks then run at the loop's next turns)."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time can't go backwards")
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, woken = heapq.heappop(self._sleepers)
            if not woken.done():
                woken.set_result(None)

    @property
    def next_wake(self) -> float | None:
        """When the earliest sleeper wakes (None: nobody sleeps)."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)  # cancelled sleepers
        return self._sleepers[0][0] if self._sleepers else None

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        woken = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), woken))
        await woken

    async def wait(self, event: asyncio.Event, seconds: float) -> bool:
        if event.is_set() or seconds <= 0:
            return event.is_set()
        sleeping = asyncio.ensure_future(self.sleep(seconds))
        setting = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({sleeping, setting}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeping, setting):
                task.cancel()
            await asyncio.gather(sleeping, setting, return_exceptions=True)
        return event.is_set()


async def wait_for_tasks(
    clock: Clock, tasks: set[asyncio.Task[None]], seconds: float
) -> set[asyncio.Task[None]]:
    """Wait until every one of `tasks` is done or `seconds` of `clock`'s time passed; those
    still running (left running)."""
    pending = {task for task in tasks if not task.done()}
    if not pending:
        return set()
    finished = asyncio.Event()
    waiting = asyncio.ensure_future(asyncio.wait(pending))
    waiting.add_done_callback(lambda _: finished.set())
    try:
        await clock.wait(finished, seconds)
    finally:
        waiting.cancel()  # the wait, not the tasks
    return {task for task in pending if not task.done()}
