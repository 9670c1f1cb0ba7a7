"""Driving the worker's loops on a fake clock, with no real sleep: let the event loop run what
is runnable, then move the clock to the next wake-up, and so on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from service.clock import FakeClock

# Passes over the ready tasks that let a chain of hand-offs (a poll, its write, the next claim)
# run to its end: each pass runs every task that was ready.
TURNS = 50


async def settle(turns: int = TURNS) -> None:
    """Let the event loop run what is runnable, without moving time."""
    for _ in range(turns):
        await asyncio.sleep(0)


async def run_for(clock: FakeClock, seconds: float) -> None:
    """Move `clock` forward by `seconds`, stopping at each wake-up on the way and letting the
    loop settle there."""
    until = clock.now() + seconds
    await settle()
    while (wake := clock.next_wake) is not None and wake <= until:
        clock.advance(max(0.0, wake - clock.now()))
        await settle()
    clock.advance(max(0.0, until - clock.now()))
    await settle()


async def run_until(
    clock: FakeClock, predicate: Callable[[], Any], what: str, within_s: float = 60.0
) -> None:
    """Let the loop run, and the clock move from one wake-up to the next, until `predicate()`
    is true; fail when nothing is left to happen within `within_s` of the clock's time."""
    deadline = clock.now() + within_s
    while True:
        await settle()
        if predicate():
            return
        wake = clock.next_wake
        assert wake is not None, f"nothing left to happen: {what}"
        assert wake <= deadline, f"not within {within_s:g} s: {what}"
        clock.advance(max(0.0, wake - clock.now()))
