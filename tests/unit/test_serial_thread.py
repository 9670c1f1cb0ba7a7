"""The store's thread: calls come back with their result or error, run in the order given, one
at a time, survive a caller that gave up, and stop cleanly."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Iterator

import pytest

from service.errors import StoreError
from service.store.serial_thread import SerialThread

DEADLINE_S = 10.0


@pytest.fixture
def worker() -> Iterator[SerialThread]:
    thread = SerialThread("store-test")
    yield thread
    thread.close()


async def test_a_call_returns_what_the_function_returned_on_the_thread(
    worker: SerialThread,
) -> None:
    """The function runs on the named thread, not the loop's."""
    name = await worker.call(lambda: threading.current_thread().name)

    assert name == "store-test"
    assert name != threading.current_thread().name


async def test_a_call_raises_what_the_function_raised(worker: SerialThread) -> None:
    problem = ValueError("bad row")

    def fail() -> None:
        raise problem

    with pytest.raises(ValueError, match="bad row") as raised:
        await worker.call(fail)
    assert raised.value is problem
    assert await worker.call(lambda: "still serving") == "still serving"


async def test_calls_and_posts_run_one_at_a_time_in_the_order_given(
    worker: SerialThread,
) -> None:
    """Posts and calls interleaved from the loop run first given, first run, never together."""
    ran: list[int] = []
    running = threading.Lock()

    def step(n: int) -> int:
        assert running.acquire(blocking=False), "two functions ran at once"
        try:
            ran.append(n)
            return n
        finally:
            running.release()

    calls = []
    for n in range(200):
        if n % 3:
            worker.post(functools.partial(step, n))
        else:
            calls.append(asyncio.ensure_future(worker.call(functools.partial(step, n))))
            await asyncio.sleep(0)  # the call is given (queued) when its task first runs
    answered = await asyncio.wait_for(asyncio.gather(*calls), DEADLINE_S)
    # The posts given after the last call have run once a call given after them has.
    await asyncio.wait_for(worker.call(lambda: None), DEADLINE_S)

    assert ran == list(range(200))
    assert answered == list(range(0, 200, 3))


async def test_a_cancelled_caller_leaves_the_function_running_and_the_thread_serving(
    worker: SerialThread,
) -> None:
    """Giving up on a call does not undo it: it finishes, and the next call is answered."""
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        release.wait(DEADLINE_S)
        finished.set()
        return "done"

    loop_errors: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: loop_errors.append(context))
    waiting = asyncio.ensure_future(worker.call(slow))
    assert await asyncio.to_thread(started.wait, DEADLINE_S)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    release.set()

    assert await asyncio.wait_for(worker.call(lambda: "next"), DEADLINE_S) == "next"
    assert finished.is_set()
    assert loop_errors == []  # the late result was not forced on the cancelled future


async def test_an_error_in_a_post_does_not_stop_the_thread(worker: SerialThread) -> None:
    def fail() -> None:
        raise RuntimeError("dropped")

    worker.post(fail)

    assert await asyncio.wait_for(worker.call(lambda: 42), DEADLINE_S) == 42


async def test_close_runs_what_was_given_then_refuses_more() -> None:
    """Work queued before `close` still runs; after it, calls and posts fail as a closed
    store does."""
    worker = SerialThread("store-test")
    ran: list[str] = []
    release = threading.Event()
    worker.post(lambda: release.wait(DEADLINE_S))
    worker.post(lambda: ran.append("queued"))
    release.set()

    worker.close()

    assert ran == ["queued"]
    with pytest.raises(StoreError, match="not open"):
        await worker.call(lambda: None)
    with pytest.raises(StoreError, match="not open"):
        worker.post(lambda: None)
    worker.close()  # twice is fine


def test_closing_a_thread_never_used_returns_at_once() -> None:
    """No thread was started, so there is none to stop or wait for."""
    worker = SerialThread("store-test")
    worker.close()

    with pytest.raises(StoreError, match="not open"):
        worker.post(lambda: None)
