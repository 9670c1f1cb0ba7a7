"""The API in process answers how a job ended and what became of its delivery (and lists by
them), where each delivery's attempts stand and what the receiver answered, and retries a
pending delivery at once; tenants apart."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from service.clock import FakeClock
from service.signing import new_secret
from service.store.base import (
    Attempt,
    AttemptOutcome,
    Completion,
    Delivery,
    NewDelivery,
    NewEvent,
    ResponseStart,
    Store,
    Watch,
)
from tests.integration.test_api import ACME, GLOBEX, TOKENS, serve

OWNER = "test"
SCHEDULE = [5.0, 60.0, 600.0]  # three waits: four attempts a series


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """Two tenants, a retry schedule of three waits, callbacks to loopback, a fake clock."""
    async for served in serve(
        tmp_path, FakeClock(), BRIDGE_AUTH__TOKENS=TOKENS,
        BRIDGE_SECURITY__ALLOW_PRIVATE_CALLBACKS="true",
        BRIDGE_DELIVERY__RETRY_SCHEDULE_S=orjson.dumps(SCHEDULE).decode(),
    ):  # fmt: skip
        yield served


def store_of(api: httpx.AsyncClient) -> Store:
    store: Store = api.app.state.bridge.store  # type: ignore[attr-defined]
    return store


def now_of(api: httpx.AsyncClient) -> float:
    clock: FakeClock = api.app.state.bridge.clock  # type: ignore[attr-defined]
    return clock.now()


_serial = itertools.count(1)


async def ended(
    api: httpx.AsyncClient, event_type: str, error_code: str | None, tenant: str = "acme"
) -> tuple[Watch, Delivery]:
    """A watch of `tenant` calling back a closed loopback port whose job ended with the final
    event of `event_type` and `error_code` (the upstream left it queued); its callback delivery,
    held by OWNER."""
    store, now, n = store_of(api), now_of(api), next(_serial)
    watch = Watch(
        id=f"wch_{int(now)}t{n:04d}", tenant=tenant, job_id=f"job_{n}",
        callback_url="http://127.0.0.1:9/hooks", callback_method="POST", callback_headers={},
        metadata=None, events=("job.succeeded", "job.failed"), payload_format="envelope",
        secret=new_secret(), poll_interval_s=5, timeout_s=300, upstream_api_key=None,
        created_at=now, updated_at=now, next_poll_at=now + 600,
    )  # fmt: skip
    await store.insert_watch(watch, lease_owner=OWNER, lease_until=now + 600)
    body = orjson.dumps({"type": event_type, "error_code": error_code})
    final = NewDelivery(f"msg_t{n:04d}", event_type, body, True)
    event = NewEvent(f"evt_t{n:04d}", event_type, True, body, final, error_code)
    [delivery] = await store.complete_watch(
        OWNER, now, Completion(watch.id, 1, "queued", None, event), now + 600
    )
    return watch, delivery


async def answered(api: httpx.AsyncClient, delivery: Delivery, **changes: Any) -> Attempt:
    """The delivery's first attempt got a 503 with a JSON body; the next is due in 60 s."""
    now = now_of(api)
    fields: dict[str, Any] = {
        "delivery_id": delivery.id, "event_type": delivery.event_type, "number": 1,
        "started_at": now, "duration_s": 0.0421, "status_code": 503, "error": "HTTP 503",
        "next_attempt_at": now + 60, "verdict": "retry",
        "response": ResponseStart('{"error": "maintenance"}', 24, False, "application/json"),
        **changes,
    }  # fmt: skip
    attempt = Attempt(**fields)
    outcome: AttemptOutcome = "retry" if attempt.verdict == "retry" else "failed"
    await store_of(api).record_attempt(OWNER, delivery, attempt, outcome, now)
    return attempt


async def test_a_watch_says_how_its_job_ended_and_what_became_of_its_delivery(
    api: httpx.AsyncClient,
) -> None:
    """A job that timed out while queued, whose webhook is being retried: `outcome` says the
    first, `delivery` the second; the listing filters by each and answers 422 for a value that
    is neither."""
    watch, _ = await ended(api, "job.failed", "timeout")
    other, _ = await ended(api, "job.succeeded", None)

    shown = (await api.get(f"/v1/watches/{watch.id}", headers=ACME)).json()

    assert (shown["status"], shown["outcome"], shown["delivery"]) == (
        "delivering", "timed_out", "pending",
    )  # fmt: skip
    assert shown["queue_position"] is None
    timed_out = await api.get("/v1/watches?outcome=timed_out", headers=ACME)
    assert [w["id"] for w in timed_out.json()["data"]] == [watch.id]
    pending = await api.get("/v1/watches?delivery=pending&outcome=succeeded", headers=ACME)
    assert [w["id"] for w in pending.json()["data"]] == [other.id]
    assert (await api.get("/v1/watches?delivery=pending", headers=GLOBEX)).json()["data"] == []


async def test_deliveries_say_where_each_series_stands_and_what_was_answered(
    api: httpx.AsyncClient,
) -> None:
    """Each attempt names its place in the series, its verdict and the start of the answer;
    each delivery its status, attempts, and when the next one is due."""
    watch, delivery = await ended(api, "job.succeeded", None)
    first = await answered(api, delivery)

    found = (await api.get(f"/v1/watches/{watch.id}/deliveries", headers=ACME)).json()

    [attempt] = found["data"]
    shown = ("series", "attempt", "max_attempts", "verdict", "status_code")
    assert {k: attempt[k] for k in shown} == {
        "series": 1, "attempt": 1, "max_attempts": 4, "verdict": "retry", "status_code": 503,
    }  # fmt: skip
    assert attempt["response"] == {
        "body": '{"error": "maintenance"}', "size": 24, "truncated": False,
        "content_type": "application/json",
    }  # fmt: skip
    assert first.next_attempt_at is not None
    [listed] = found["deliveries"]
    assert listed == {
        "webhook_id": delivery.id, "subscription_id": None, "event": "job.succeeded",
        "status": "pending", "series": 1, "attempts": 1, "max_attempts": 4,
        "next_attempt_at": attempt["next_attempt_at"], "created_at": listed["created_at"],
    }  # fmt: skip
    assert (await api.get(f"/v1/watches/{watch.id}", headers=ACME)).json()["attempts"] == 1


async def test_retry_makes_the_next_attempt_at_once(api: httpx.AsyncClient) -> None:
    """A pending delivery retried is due now (202 with it) and attempted at once, not 60 s
    later: the closed port refuses it, and the attempt says so in words."""
    watch, delivery = await ended(api, "job.succeeded", None)
    await answered(api, delivery)
    path = f"/v1/watches/{watch.id}/deliveries/{delivery.id}/retry"

    retried = await api.post(path, headers=ACME)

    assert retried.status_code == 202, retried.text
    body = retried.json()
    assert (body["webhook_id"], body["status"], body["attempts"]) == (delivery.id, "pending", 1)
    assert (
        body["next_attempt_at"]
        == ((await api.get(f"/v1/watches/{watch.id}", headers=ACME)).json()["updated_at"])
    )
    async with asyncio.timeout(10):
        for _ in itertools.count():
            found = (await api.get(f"/v1/watches/{watch.id}/deliveries", headers=ACME)).json()
            if len(found["data"]) == 2:
                break
            await asyncio.sleep(0.02)
    second = found["data"][1]
    assert (second["attempt"], second["error"], second["verdict"]) == (
        2, "connection refused", "retry",
    )  # fmt: skip
    assert second["response"] is None
    assert second["attempted_at"] == body["next_attempt_at"]


async def test_retry_of_what_is_not_pending_is_a_409_saying_why(api: httpx.AsyncClient) -> None:
    """A delivery whose retries a final status stopped is not pending: a 409 problem says so,
    and that a redelivery sends the final event again."""
    watch, delivery = await ended(api, "job.succeeded", None)
    await answered(
        api, delivery, status_code=404, error="HTTP 404", next_attempt_at=None,
        verdict="final_status",
    )  # fmt: skip

    refused = await api.post(f"/v1/watches/{watch.id}/deliveries/{delivery.id}/retry", headers=ACME)

    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"] == "/problems/conflict"
    assert problem["detail"] == (
        f"delivery {delivery.id} is failed, not pending: there is no next attempt to make now; "
        "redeliver the watch to send its final event again"
    )


async def test_retry_is_for_the_tenant_of_the_watch_only(api: httpx.AsyncClient) -> None:
    """Another tenant's watch, or a delivery of another watch, is a 404 and is left waiting."""
    theirs, their_delivery = await ended(api, "job.succeeded", None, tenant="globex")
    await answered(api, their_delivery)
    mine, _ = await ended(api, "job.succeeded", None)

    for path in (
        f"/v1/watches/{theirs.id}/deliveries/{their_delivery.id}/retry",
        f"/v1/watches/{mine.id}/deliveries/{their_delivery.id}/retry",
    ):
        refused = await api.post(path, headers=ACME)
        assert refused.status_code == 404, path
        assert refused.json()["type"] == "/problems/not-found"
    [waiting] = (await api.get(f"/v1/watches/{theirs.id}/deliveries", headers=GLOBEX)).json()[
        "deliveries"
    ]
    assert waiting["next_attempt_at"] != waiting["created_at"]
