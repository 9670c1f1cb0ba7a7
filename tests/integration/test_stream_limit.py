"""The per-tenant cap on open streams (event streams, long-polls, dashboard live streams), in
process on a real SQLite store: requests are made straight to the app, whose clients stay or go
as each test says."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from starlette.types import Message, Scope

from tests.integration.test_ui import ACME, GLOBEX, TOKENS, Bridged, serve
from tests.loopback import eventually

DEADLINE_S = 10.0


@dataclass
class Held:
    """A request made straight to the app, whose client stays until `leave()`."""

    task: asyncio.Task[None]
    gone: asyncio.Event
    status: asyncio.Future[int]
    body: bytearray = field(default_factory=bytearray)

    def leave(self) -> None:
        self.gone.set()

    async def answered(self) -> int:
        async with asyncio.timeout(DEADLINE_S):
            return await asyncio.shield(self.status)

    async def ended(self) -> None:
        async with asyncio.timeout(DEADLINE_S):
            await self.task


# Every request `hold` made, so that a failed test still lets them go.
HELD: list[Held] = []


def hold(served: Bridged, path: str, headers: dict[str, str]) -> Held:
    loop = asyncio.get_running_loop()
    gone, status = asyncio.Event(), loop.create_future()
    raw_path, _, query = path.partition("?")
    scope: Scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": raw_path, "raw_path": raw_path.encode(),
        "query_string": query.encode(), "root_path": "",
        "headers": [(b"host", b"bridge")]
        + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000), "server": ("bridge", 80), "state": dict(served.state),
    }  # fmt: skip
    asked = False

    async def receive() -> Message:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    held: Held

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            status.set_result(message["status"])
        elif message["type"] == "http.response.body":
            held.body.extend(message.get("body", b""))

    held = Held(asyncio.create_task(served.app(scope, receive, send)), gone, status)
    HELD.append(held)
    return held


async def refused(served: Bridged, path: str, headers: dict[str, str]) -> Held:
    """A request that must be answered 429 at once (not a stream held open), answered."""
    held = hold(served, path, headers)
    assert await held.answered() == 429
    await held.ended()
    return held


@pytest.fixture
async def capped(tmp_path: Path) -> AsyncIterator[Bridged]:
    """A bridge with two tenants, each allowed two open streams."""
    async for served in serve(
        tmp_path, BRIDGE_AUTH__TOKENS=TOKENS, BRIDGE_API__MAX_STREAMS_PER_TENANT="2"
    ):
        try:
            yield served
        finally:
            for held in HELD:
                held.task.cancel()
            await asyncio.gather(*(held.task for held in HELD), return_exceptions=True)
            HELD.clear()


async def browser(served: Bridged) -> dict[str, str]:
    """The headers of acme's dashboard, signed in."""
    await served.sign_in()
    return {"Cookie": f"bridge_ui={served.client.cookies.get('bridge_ui', path='/ui')}"}


def held_by(served: Bridged, tenant: str) -> Callable[[], int]:
    return lambda: served.bridge.streams.held(tenant)


async def test_a_tenant_holds_at_most_its_streams_and_others_keep_theirs(
    capped: Bridged,
) -> None:
    """With an event stream and a long-poll open, a tenant's next event stream, long-poll and
    dashboard live stream are refused (429, the API's naming the limit); another tenant's are
    not."""
    watch_id = await capped.register()
    stream = hold(capped, f"/v1/watches/{watch_id}/events", ACME)
    assert await stream.answered() == 200
    poll = hold(capped, f"/v1/watches/{watch_id}/wait?timeout_s=60", ACME)
    await eventually(lambda: held_by(capped, "acme")() == 2, "the long-poll counted")

    third = await refused(capped, f"/v1/watches/{watch_id}/events", ACME)
    problem = json.loads(third.body)
    assert problem["type"] == "/problems/too-many-streams"
    assert "2 open streams" in problem["detail"]
    assert "api.max_streams_per_tenant" in problem["detail"]
    waited = await refused(capped, f"/v1/watches/{watch_id}/wait?timeout_s=0", ACME)
    assert json.loads(waited.body)["type"] == "/problems/too-many-streams"
    live = await refused(capped, f"/ui/live?watch_id={watch_id}", await browser(capped))
    assert b"api.max_streams_per_tenant" in live.body  # plain text, for the dashboard

    theirs = await capped.register(GLOBEX)
    other = hold(capped, f"/v1/watches/{theirs}/events", GLOBEX)
    assert await other.answered() == 200
    assert held_by(capped, "acme")() == 2
    for held in (stream, poll, other):
        held.leave()
        await held.ended()


async def test_a_stream_whose_client_leaves_or_that_ends_gives_its_place_back(
    capped: Bridged,
) -> None:
    """A client that closes its event stream or its long-poll frees its place at once (a new
    one is accepted), and so does a stream that ends by itself (its watch cancelled)."""
    watch_id = await capped.register()
    first = hold(capped, f"/v1/watches/{watch_id}/events", ACME)
    poll = hold(capped, f"/v1/watches/{watch_id}/wait?timeout_s=60", ACME)
    assert await first.answered() == 200
    await eventually(lambda: held_by(capped, "acme")() == 2, "both counted")

    first.leave()
    await first.ended()
    assert held_by(capped, "acme")() == 1
    second = hold(capped, f"/v1/watches/{watch_id}/events", ACME)
    assert await second.answered() == 200

    poll.leave()
    await poll.ended()  # not after its 60 s: as soon as its client left
    assert held_by(capped, "acme")() == 1
    again = hold(capped, f"/v1/watches/{watch_id}/wait?timeout_s=60", ACME)
    await eventually(lambda: held_by(capped, "acme")() == 2, "the new long-poll counted")

    cancelled = await capped.client.delete(f"/v1/watches/{watch_id}", headers=ACME)
    assert cancelled.status_code == 200
    await second.ended()  # the stream ends with its watch
    assert await again.answered() == 409  # and the long-poll answers: no final event
    await again.ended()
    assert held_by(capped, "acme")() == 0


async def test_the_dashboard_live_stream_counts_and_gives_its_place_back(
    capped: Bridged,
) -> None:
    """The dashboard's live streams count among the tenant's streams; one whose page is closed
    makes room for another."""
    watch_id = await capped.register()
    signed_in = await browser(capped)
    pages = [hold(capped, f"/ui/live?watch_id={watch_id}", signed_in) for _ in range(2)]
    assert [await page.answered() for page in pages] == [200, 200]
    await refused(capped, f"/ui/live?watch_id={watch_id}", signed_in)

    pages[0].leave()
    await pages[0].ended()
    reopened = hold(capped, f"/ui/live?watch_id={watch_id}", signed_in)
    assert await reopened.answered() == 200
    for page in (pages[1], reopened):
        page.leave()
        await page.ended()
    assert held_by(capped, "acme")() == 0
