"""One thread that runs functions one at a time, in the order given: SQLite's connection lives
on it, so the store's calls are serialized without locks.

`concurrent.futures.ThreadPoolExecutor(1)` does the same with more machinery per call: a
`Future` with its own condition variable, a semaphore deciding whether to start another
thread, and `asyncio.wrap_future` chaining that future to one on the loop. At a few hundred
durable registrations a second each makes two or three calls, and that machinery is a
measurable share of their CPU (docs/performance.md). Here a call is a tuple on a C
`SimpleQueue` and an asyncio future settled with one `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from service.errors import StoreError

T = TypeVar("T")

# What the thread takes: the function, then the loop and the future to settle (None for `post`).
_Item = tuple[Callable[[], Any], asyncio.AbstractEventLoop | None, "asyncio.Future[Any] | None"]


class SerialThread:
    """Runs `call`s and `post`s on one thread, first given first run. Use it from one event
    loop's thread; `close` stops it once what was given before has run."""

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        # Started by the first call or post (its `ident` is set from then on).
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._closed = False

    async def call(self, fn: Callable[[], T]) -> T:
        """`fn()` on the thread: its result, or what it raised. A caller that stops waiting
        (cancelled) does not stop `fn`, which runs all the same."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._put((fn, loop, future))
        return await future

    def post(self, fn: Callable[[], object]) -> None:
        """Run `fn()` on the thread without waiting for it; it must deliver its own outcome and
        handle its own errors (what it raises is dropped)."""
        self._put((fn, None, None))

    def close(self) -> None:
        """Refuse new work, let the thread run what it was given, and wait for it to end."""
        if self._closed:
            return
        self._closed = True
        if self._thread.ident is not None:
            self._queue.put(None)
            self._thread.join()

    def _put(self, item: _Item) -> None:
        if self._closed:
            raise StoreError("the store is not open")
        if self._thread.ident is None:
            self._thread.start()
        self._queue.put(item)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            fn, loop, future = item
            try:
                result, error = fn(), None
            except BaseException as raised:  # the caller gets it, as from an executor
                result, error = None, raised
            if loop is None or future is None:
                continue
            # The loop is gone (closed without closing the store): nobody is waiting.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, future, result, error)


def settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """On the loop: give `future` its outcome, `error` if any, unless its caller gave up."""
    if future.done():  # its caller was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
