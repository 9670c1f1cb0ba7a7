"""The clocks: the fake one's time moves only when told, and waking follows it."""

from __future__ import annotations

import asyncio

import pytest

from service.clock import FakeClock, SystemClock


async def turns(n: int = 5) -> None:
    """Let the loop run the tasks that are ready."""
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_sleeper_wakes_when_time_reaches_it_not_before() -> None:
    """`sleep(5)` ends once `advance` has moved 5 s, whatever real time passed."""
    clock = FakeClock()
    sleeper = asyncio.ensure_future(clock.sleep(5))
    await turns()
    clock.advance(4.9)
    await turns()
    assert not sleeper.done()
    clock.advance(0.1)
    await turns()
    assert sleeper.done()


async def test_sleepers_wake_in_time_order() -> None:
    """One advance past several deadlines wakes each of them, earliest first."""
    clock = FakeClock()
    woke: list[float] = []

    async def sleep(seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(seconds)

    tasks = [asyncio.ensure_future(sleep(s)) for s in (3, 1, 2)]
    await turns()
    assert clock.next_wake == clock.now() + 1
    clock.advance(10)
    await asyncio.gather(*tasks)
    assert woke == [1, 2, 3]
    assert clock.next_wake is None


async def test_wait_ends_when_the_event_is_set_or_at_the_timeout() -> None:
    """`wait` answers True as soon as the event is set, False once the clock passes the
    timeout; a cancelled sleeper leaves nothing behind."""
    clock = FakeClock()
    event = asyncio.Event()
    waiting = asyncio.ensure_future(clock.wait(event, 10))
    await turns()
    event.set()
    assert await waiting is True
    assert clock.next_wake is None

    event.clear()
    timing_out = asyncio.ensure_future(clock.wait(event, 10))
    await turns()
    clock.advance(10)
    assert await timing_out is False


def test_time_cannot_go_backwards() -> None:
    """A negative advance is refused."""
    with pytest.raises(ValueError, match="backwards"):
        FakeClock().advance(-1)


async def test_the_system_clock_waits_on_the_loop() -> None:
    """The real clock's wait answers the event at once, and times out after its seconds."""
    clock = SystemClock()
    event = asyncio.Event()
    event.set()
    assert await clock.wait(event, 30) is True
    assert await clock.wait(asyncio.Event(), 0.01) is False
    await clock.sleep(0)
