"""Clients without an endpoint, end to end: the long-poll and the Server-Sent Events stream."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.e2e import harness
from tests.e2e.harness import Bridge, Receiver, StartBridge, Upstream

pytestmark = pytest.mark.e2e
EVERY_EVENT = ["job.queued", "job.processing", "job.succeeded", "job.failed"]


@pytest.fixture(scope="module")
def streaming(
    tmp_path_factory: pytest.TempPathFactory, upstream: Upstream, receiver: Receiver
) -> Iterator[Bridge]:
    """A bridge whose quiet streams get a keep-alive comment every 0.3 s."""
    directory = tmp_path_factory.mktemp("streaming")
    started = harness.launch_bridge(
        "streaming.bridge", directory, upstream.url, directory / "bridge.db",
        BRIDGE_API__SSE_KEEPALIVE_S="0.3",
    )  # fmt: skip
    try:
        yield started
    finally:
        harness.close_bridge(started)


def test_the_long_poll_answers_the_final_event_as_it_happens(
    streaming: Bridge, upstream: Upstream
) -> None:
    """A wait started before the job ends answers 200 with the final envelope soon after the
    job ends, well before its timeout; the body is the one /v1/events lists."""
    job = upstream.create_job(queue_positions=1, seconds_per_position=0.5, processing_s=0.5)
    watch = streaming.register(job_id=job)
    started = time.monotonic()
    waited = streaming.client.get(f"/v1/watches/{watch['id']}/wait?timeout_s=30", timeout=40)
    assert waited.status_code == 200, waited.text
    assert time.monotonic() - started < 15
    final = waited.json()
    assert (final["type"], final["watch_id"], final["job_id"]) == (
        "job.succeeded",
        watch["id"],
        job,
    )
    assert final["id"].startswith("evt_")
    listed = streaming.client.get("/v1/events", params={"type": "job.succeeded"}).json()
    assert final in listed
    # Once there is a final event, a wait answers it at once, again and again.
    assert streaming.client.get(f"/v1/watches/{watch['id']}/wait").json() == final


def test_a_long_poll_that_times_out_says_not_yet(streaming: Bridge, upstream: Upstream) -> None:
    """A job still processing when the wait runs out: 202, the watch, Retry-After 0."""
    job = upstream.create_job(queue_positions=0, processing_s=120)
    watch = streaming.register(job_id=job)
    started = time.monotonic()
    waited = streaming.client.get(f"/v1/watches/{watch['id']}/wait?timeout_s=1")
    assert time.monotonic() - started >= 1
    assert waited.status_code == 202, waited.text
    assert waited.headers["retry-after"] == "0"
    body = waited.json()
    assert body["status"] == "pending"
    assert (body["watch"]["id"], body["watch"]["status"]) == (watch["id"], "active")
    streaming.client.delete(f"/v1/watches/{watch['id']}")


@dataclass
class Frame:
    """One server-sent event, or a comment (`comment` set, the rest empty)."""

    id: str = ""
    event: str = ""
    data: str = ""
    comment: str = ""
    retry: str = ""


def frames(lines: Iterator[str]) -> Iterator[Frame]:
    """The frames of an event stream, as its lines arrive."""
    frame = Frame()
    for line in lines:
        if line == "":
            yield frame
            frame = Frame()
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "":
            frame.comment = value
        else:
            setattr(frame, name, value)


def test_the_stream_resumes_after_the_last_event_id_and_ends_after_the_final(
    streaming: Bridge, upstream: Upstream
) -> None:
    """A client reads the first event and goes away; reconnecting with Last-Event-ID, it gets
    only the events after that one, keep-alives while nothing happens, and the stream ends
    after the final event. A fresh connection then replays them all and ends at once."""
    job = upstream.create_job(queue_positions=2, seconds_per_position=1.0, processing_s=1.5)
    watch = streaming.register(job_id=job)
    path = f"/v1/watches/{watch['id']}/events"

    with streaming.client.stream("GET", path, timeout=30) as first:
        assert first.status_code == 200
        assert first.headers["content-type"].startswith("text/event-stream")
        read = frames(first.iter_lines())
        assert next(read).retry == "2000"
        seen = next(frame for frame in read if frame.id)
    assert seen.event == "job.queued"

    with streaming.client.stream(
        "GET", path, headers={"Last-Event-ID": seen.id}, timeout=30
    ) as resumed:
        rest = list(frames(resumed.iter_lines()))  # ends: the server closes after the final
    events = [frame for frame in rest if frame.id]
    assert seen.id not in [frame.id for frame in events]
    assert [frame.event for frame in events][-1] == "job.succeeded"
    assert all(frame.event in EVERY_EVENT for frame in events)
    assert any(frame.comment == "keep-alive" for frame in rest)

    with streaming.client.stream("GET", path, timeout=30) as replay:
        replayed = [frame for frame in frames(replay.iter_lines()) if frame.id]
    assert [frame.id for frame in replayed] == [seen.id] + [frame.id for frame in events]
    assert replayed[-1].data == events[-1].data

    # An EventSource reconnects after the stream ends, with the final event's id: a 204 stops it.
    over = streaming.client.get(path, headers={"Last-Event-ID": events[-1].id}, timeout=30)
    assert (over.status_code, over.content) == (204, b"")


def test_a_closed_stream_or_long_poll_frees_its_place_at_once(
    start_bridge: StartBridge, upstream: Upstream
) -> None:
    """With one stream allowed per token, a second is refused (429) while the first is open;
    once its client closes the connection (an event stream, then a long-poll given up on
    long before its timeout), a new one is accepted."""
    bridge = start_bridge(BRIDGE_API__MAX_STREAMS_PER_TENANT="1")
    watch = bridge.register(job_id=upstream.create_job(queue_positions=0, processing_s=120))
    path = f"/v1/watches/{watch['id']}/events"

    def accepted() -> bool:
        with bridge.client.stream("GET", path, timeout=10) as stream:
            return stream.status_code == 200

    with bridge.client.stream("GET", path, timeout=10) as first:
        assert first.status_code == 200
        refused = bridge.client.get(path)
        assert refused.status_code == 429
        assert refused.json()["type"] == "/problems/too-many-streams"
    harness.wait_until(accepted, 10, what="a new stream once the first was closed")

    def given_up() -> bool:
        """A long-poll held, then given up on by its client (the server would wait 60 s)."""
        try:
            bridge.client.get(f"/v1/watches/{watch['id']}/wait?timeout_s=60", timeout=1)
        except httpx.ReadTimeout:
            return True
        return False  # refused: the last stream's place was not back yet

    harness.wait_until(given_up, 10, what="a long-poll held")
    harness.wait_until(accepted, 10, what="a new stream once the long-poll was closed")
