"""The event hub: wake-ups reach the listeners of one watch, and nothing is kept for others."""

from __future__ import annotations

import asyncio
import tracemalloc

from service.event_hub import EventHub


async def test_a_publish_wakes_every_listener_of_that_watch_only() -> None:
    """Both listeners of the watch wake; the listener of another watch does not."""
    hub = EventHub()
    with hub.listen("wch_a") as first, hub.listen("wch_a") as second, hub.listen("wch_b") as other:
        waits = [asyncio.create_task(listener.wait(30)) for listener in (first, second)]
        await asyncio.sleep(0)  # both are waiting now
        hub.publish("wch_a")
        assert await asyncio.wait_for(asyncio.gather(*waits), 5) == [True, True]
        assert await other.wait(0) is False


async def test_a_wake_up_before_the_wait_is_not_lost() -> None:
    """Published between a client's read of the store and its wait: the wait ends at once."""
    hub = EventHub()
    with hub.listen("wch_a") as listener:
        hub.publish("wch_a")
        assert await listener.wait(30) is True
        assert await listener.wait(0) is False  # consumed


async def test_a_wait_times_out_without_a_publish() -> None:
    """Nothing published: the wait ends after its timeout, not woken."""
    hub = EventHub()
    with hub.listen("wch_a") as listener:
        assert await listener.wait(0.01) is False


async def test_a_listener_leaving_keeps_the_others_of_its_watch() -> None:
    """The watch's entry stays until its last listener leaves: the others are still woken."""
    hub = EventHub()
    with hub.listen("wch_a") as staying:
        with hub.listen("wch_a"):
            pass
        hub.publish("wch_a")
        assert await staying.wait(0) is True


def test_memory_only_for_watches_with_listeners() -> None:
    """Publishing to watches nobody listens to keeps nothing; the last listener leaving frees
    its watch's entry: thousands of watches published to, then listened to, hold no memory."""
    hub = EventHub()
    tracing = tracemalloc.is_tracing()  # already on under PYTHONTRACEMALLOC: leave it on
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for number in range(10_000):
            hub.publish(f"wch_{number}")
        published = tracemalloc.get_traced_memory()[0] - before
        for number in range(10_000):
            with hub.listen(f"wch_{number}"), hub.listen(f"wch_{number}"):
                assert hub.listening == 2
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        if not tracing:
            tracemalloc.stop()
    # An entry left behind would be hundreds of bytes per watch.
    assert published < 10_000, published
    assert kept < 10_000, kept


async def test_a_listener_that_leaves_on_an_error_is_removed() -> None:
    """A client that disconnects mid-wait (its task cancelled) leaves no entry behind."""
    hub = EventHub()

    async def client() -> None:
        with hub.listen("wch_a") as listener:
            await listener.wait(30)

    task = asyncio.create_task(client())
    await asyncio.sleep(0)
    assert hub.listening == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert hub.listening == 0
