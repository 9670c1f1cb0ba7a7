"""Redelivery in process, on a real SQLite store: a watch's final event sent again to the
endpoints chosen (the API's body, the dashboard's dialog and its page without JavaScript, which
say that one that accepted it gets it again when ticked), each in a new series that the
timeline and the deliveries number on their own and whose outcome the page says; and the
failed webhooks of many watches at once ("Redeliver N failed", `POST /v1/watches/failed/redeliver`),
bounded by api.max_redeliveries, never for a viewer token."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.events import iso8601
from service.signing import new_secret
from service.store.base import (
    Attempt,
    AttemptOutcome,
    Completion,
    NewDelivery,
    NewEvent,
    Watch,
)
from tests.integration.test_ui import ACME, DEADLINE_S, Bridged, serve
from tests.integration.test_viewers import READ_ONLY, TOKENS, VIEWER

# Loopback, with nothing listening: attempts fail at once ("connection refused").
CLOSED = "http://127.0.0.1:9/hooks"
MOST = 10  # attempts in a series under config/bridge.toml's retry schedule


@pytest.fixture
async def ui(tmp_path: Path) -> AsyncIterator[Bridged]:
    """A bridge with tenants acme and globex and a viewer of acme; a bulk redelivery takes 2."""
    async for served in serve(
        tmp_path, BRIDGE_AUTH__TOKENS=json.dumps(TOKENS), BRIDGE_API__MAX_REDELIVERIES="2"
    ):
        yield served


async def subscribed(ui: Bridged) -> str:
    """A subscription of acme to job.failed at a closed port, newer than any before."""
    ui.clock.advance(0.01)
    created = await ui.client.post(
        "/v1/subscriptions", json={"url": CLOSED, "events": ["job.failed"]}, headers=ACME
    )
    assert created.status_code == 201, created.text
    subscription_id: str = created.json()["id"]
    return subscription_id


async def ended(ui: Bridged, job_id: str, outcomes: list[AttemptOutcome], **changes: Any) -> Watch:
    """A watch of acme calling back a closed port whose job failed; its final deliveries (the
    callback's first, then one per subscription) each ended by one attempt of `outcomes`."""
    store, now = ui.bridge.store, ui.clock.now()
    ui.clock.advance(0.01)  # the next id is newer
    watch = Watch(
        id=f"wch_{int(now * 1000)}{job_id.replace('_', '')}", tenant="acme", job_id=job_id,
        callback_url=CLOSED, callback_method="POST", callback_headers={}, metadata=None,
        events=("job.succeeded", "job.failed"), payload_format="envelope", secret=new_secret(),
        poll_interval_s=5, timeout_s=600, upstream_api_key=None, created_at=now,
        updated_at=now, next_poll_at=now + 600, **changes,
    )  # fmt: skip
    watch = await store.insert_watch(watch, lease_owner="test", lease_until=now + 600)
    body = orjson.dumps({"type": "job.failed", "error_code": "generation_failed"})
    callback = NewDelivery(f"msg_{watch.id[4:]}", "job.failed", body, True)
    event = NewEvent(f"evt_{watch.id[4:]}", "job.failed", True, body, callback, "generation_failed")
    done = Completion(watch.id, 1, "failed", "generation failed", event)
    finals = await store.complete_watch("test", now, done, now + 600)
    assert len(finals) == len(outcomes)
    for delivery, outcome in zip(finals, outcomes, strict=True):
        code = {"succeeded": 200, "failed": 500, "gone": 410, "retry": 503}[outcome]
        verdict = "exhausted" if outcome == "failed" else outcome
        attempt = Attempt(
            delivery.id, "job.failed", MOST, now, 0.01, code,
            None if code == 200 else f"HTTP {code}", verdict=verdict,
        )  # fmt: skip
        await store.record_attempt("test", delivery, attempt, outcome, now)
    return watch


async def attempts_in_series(ui: Bridged, watch_id: str, series: int) -> list[Attempt]:
    """The watch's attempts of `series`, once there is one (within DEADLINE_S)."""
    async with asyncio.timeout(DEADLINE_S):
        while True:
            found = await ui.bridge.store.list_attempts("acme", watch_id)
            if any(attempt.series == series for attempt in found):
                return [attempt for attempt in found if attempt.series == series]
            await asyncio.sleep(0.02)


def checkbox(page: str, endpoint: str) -> str:
    found = re.search(rf'<input type="checkbox" name="endpoint" value="{endpoint}"[^>]*>', page)
    assert found is not None, endpoint
    return found.group(0)


def text_of(page: str, element_id: str) -> str:
    found = re.search(rf'<[a-z0-9]+ [^>]*id="{element_id}"[^>]*>(.*?)</', page, re.S)
    assert found is not None, element_id
    return re.sub(r"\s+", " ", found.group(1)).strip()


# One watch, the endpoints chosen.


async def test_the_choice_says_who_gets_it_again_and_ticks_those_that_did_not_accept(
    ui: Bridged,
) -> None:
    """The watch page's dialog and the page without JavaScript offer the same choice: the
    failed callback ticked, the subscription that accepted it not (ticked, it gets it a second
    time), a disabled subscription not at all, and say so."""
    accepted, disabled = await subscribed(ui), await subscribed(ui)
    watch = await ended(ui, "job_mixed", ["failed", "succeeded", "failed"])
    await ui.client.post(f"/v1/subscriptions/{disabled}/disable", headers=ACME)
    await ui.sign_in()

    page = (await ui.client.get(f"/ui/watches/{watch.id}")).text
    asked = await ui.client.post(
        f"/ui/watches/{watch.id}/redeliver", data={"csrf": await ui.csrf(f"/ui/watches/{watch.id}")}
    )

    assert '<dialog id="redeliver-dialog"' in page
    assert asked.status_code == 200
    for shown in (page, asked.text):
        assert "already accepted it gets it again too if you tick it" in re.sub(r"\s+", " ", shown)
        assert " checked" in checkbox(shown, "callback")
        assert " checked" not in checkbox(shown, accepted)
        assert "It accepted it: ticked, it gets it a second time." in text_of(
            shown, f"redeliver-{accepted}-state"
        )
        assert " disabled" in checkbox(shown, disabled)
        assert "a subscription no longer active" in text_of(shown, f"redeliver-{disabled}-state")
        assert "Retries stopped: the schedule ran out after attempt 10." in text_of(
            shown, "redeliver-callback-state"
        )
    assert '<h1 id="redeliver-title">' in asked.text
    assert 'formmethod="dialog"' not in asked.text


async def test_a_redelivery_to_one_subscription_is_numbered_as_its_own_series(
    ui: Bridged,
) -> None:
    """Only the subscription ticked gets it again, in series 2: its attempt is "series 2,
    attempt 1" on the timeline and in the deliveries, the failed callback and the watch stay as
    they were, and the page says how the redelivery went (the attempt failed), not that it
    started; ticking nothing is refused with what to do."""
    subscription = await subscribed(ui)
    watch = await ended(ui, "job_sub", ["failed", "succeeded"])
    await ui.sign_in()
    csrf = await ui.csrf(f"/ui/watches/{watch.id}")
    action = f"/ui/watches/{watch.id}/redeliver"

    done = await ui.client.post(
        action, data={"csrf": csrf, "confirm": "yes", "endpoint": subscription}
    )

    assert done.status_code == 303
    [again] = await attempts_in_series(ui, watch.id, 2)
    assert (again.number, again.error) == (1, "connection refused")
    page = (await ui.client.get(f"/ui/watches/{watch.id}")).text
    assert text_of(page, "flash") == f"Redelivery started to {subscription} (series 2)."
    steps = re.findall(r'<span class="title">(?:<span[^>]*>[^<]*</span>)?([^<]+)</span>', page)
    assert [step for step in steps if "attempt" in step.lower()] == [
        f"Attempt {MOST} of {MOST}: job.failed",  # the callback's, and the subscription's
        f"Attempt {MOST} of {MOST}: job.failed",
        f"Series 2, attempt 1 of {MOST}: job.failed",
    ]
    row = re.search(rf'<tr data-delivery-id="{again.delivery_id}".*?</tr>', page, re.S)
    assert row is not None
    assert f"1 of {MOST} (series 2)" in row.group(0)
    assert f"(series 2, attempt 2 of {MOST})" in row.group(0)
    status = text_of(page, "redelivery")
    assert status.startswith(f"Redelivery: {subscription}: Series 2, attempt 1 of {MOST} failed")
    assert "(connection refused); the next at" in status
    assert re.search(r'id="watch-status"[^>]*data-status="failed"', page)

    refused = await ui.client.post(action, data={"csrf": csrf, "confirm": "yes"})
    assert refused.status_code == 303
    page = (await ui.client.get(f"/ui/watches/{watch.id}")).text
    assert text_of(page, "flash") == (
        f"Not done: endpoints: choose at least one of callback, {subscription}"
    )


# One watch through the API.


async def test_the_api_redelivers_to_the_endpoints_its_body_names(ui: Bridged) -> None:
    """`endpoints` names callback or subscriptions the event was addressed to: an accepted one
    named is sent again; one it was not addressed to, a malformed one or none at all is a 422
    naming the field; without a body every endpoint that can still get it is."""
    subscription = await subscribed(ui)
    watch = await ended(ui, "job_api", ["failed", "succeeded"])
    path = f"/v1/watches/{watch.id}/redeliver"

    for body, says in (
        ({"endpoints": ["sub_0nope"]}, "sub_0nope did not get the final event"),
        ({"endpoints": ["nope"]}, "'nope' is neither callback nor a subscription id"),
        ({"endpoints": []}, "choose at least one of callback, " + subscription),
        ({"endpoints": ["callback"], "also": 1}, "also"),
    ):
        refused = await ui.client.post(path, json=body, headers=ACME)
        assert refused.status_code == 422, refused.text
        assert says in refused.text
    chosen = await ui.client.post(path, json={"endpoints": [subscription]}, headers=ACME)
    assert chosen.status_code == 202, chosen.text
    answer = chosen.json()
    assert answer["status"] == "failed"
    assert [(d["subscription_id"], d["series"], d["status"]) for d in answer["deliveries"]] == [
        (subscription, 2, "pending")
    ]
    await attempts_in_series(ui, watch.id, 2)
    rest = await ui.client.post(path, headers=ACME)  # the subscription's is pending again
    assert rest.status_code == 202, rest.text
    assert [(d["subscription_id"], d["series"]) for d in rest.json()["deliveries"]] == [(None, 2)]
    listed = (await ui.client.get(f"/v1/watches/{watch.id}/deliveries", headers=ACME)).json()
    assert [(a["series"], a["attempt"]) for a in listed["data"]][:3] == [
        (1, MOST),
        (1, MOST),
        (2, 1),
    ]
    nothing = await ui.client.post(path, json={"endpoints": [subscription]}, headers=ACME)
    assert nothing.status_code == 409
    assert nothing.json()["detail"].startswith("watch ")  # delivering again: not redeliverable


# The failed webhooks of many.


async def test_redeliver_n_failed_confirms_how_many_and_where_then_leaves_the_rest(
    ui: Bridged,
) -> None:
    """With the list filtered to failed deliveries, "Redeliver 2 failed" (api.max_redeliveries)
    asks first on a page that says 3 match, 2 are taken, and which endpoints get them; then the
    newest two are sent again to their callback and the subscription that did not accept it,
    the list says so and that one is left, and offers the next one."""
    subscription = await subscribed(ui)
    oldest = await ended(ui, "job_a", ["failed", "failed"])
    middle = await ended(ui, "job_b", ["failed", "succeeded"])
    newest = await ended(ui, "job_c", ["failed", "failed"])
    fine = await ended(ui, "job_d", ["succeeded", "succeeded"])
    await ui.sign_in()

    listed = (await ui.client.get("/ui/?delivery=failed")).text
    assert text_of(listed, "recover") == "Redeliver 2 failed…"
    assert 'action="/ui/redeliver-failed?delivery=failed"' in listed
    assert 'id="recover"' not in (await ui.client.get("/ui/")).text
    csrf = await ui.csrf("/ui/?delivery=failed")

    asked = await ui.client.post("/ui/redeliver-failed?delivery=failed", data={"csrf": csrf})
    assert asked.status_code == 200
    said = re.sub(r"\s+", " ", asked.text)
    assert "Redeliver the failed webhooks of 2 watches?" in said
    assert "3 watches whose webhook failed match these filters." in said
    assert "takes at most 2 (api.max_redeliveries), the newest: the other 1 are left" in said
    endpoints = re.findall(r'<li data-endpoint="([^"]+)">(.*?)</li>', asked.text)
    assert [(key, re.sub(r"<[^>]+>", "", text)) for key, text in endpoints] == [
        ("callback", "Its callback: 2 watches"),
        (subscription, f"Subscription {subscription} {CLOSED}: 1 watch"),
    ]
    assert all(w.status == "failed" for w in [await reread(ui, oldest), await reread(ui, newest)])

    done = await ui.client.post(
        "/ui/redeliver-failed?delivery=failed", data={"csrf": csrf, "confirm": "yes"}
    )
    assert (done.status_code, done.headers["location"]) == (303, "/ui/?delivery=failed")
    page = (await ui.client.get("/ui/?delivery=failed")).text
    assert text_of(page, "flash") == (
        f"Redelivery started for 2 watches: to the callback of 2, to subscription {subscription}"
        " of 1. "
        "1 more failed watches match: redeliver again for the next 1."
    )
    statuses = {w.id: (await reread(ui, w)).status for w in (oldest, middle, newest, fine)}
    assert statuses == {
        oldest.id: "failed", middle.id: "delivering", newest.id: "delivering",
        fine.id: "delivered",
    }  # fmt: skip
    series = {
        (d.subscription_id, d.series)
        for w in (middle, newest)
        for d in await ui.bridge.store.watch_deliveries("acme", w.id)
    }
    assert series == {(None, 2), (subscription, 2), (subscription, 1)}
    assert text_of(page, "recover") == "Redeliver 1 failed…"


async def test_the_api_recovers_the_failed_ones_its_filters_match(ui: Bridged) -> None:
    """`POST /v1/watches/failed/redeliver` takes the list's filters: the failed watches
    created since a time, the newest 2 sent again, with how many matched and are left; none of
    another upstream; a bad filter is a 422 naming it."""
    before = await ended(ui, "job_old", ["failed"])
    ui.clock.advance(1)
    since = iso8601(ui.clock.now()).removesuffix("Z")  # UTC without an offset
    taken = [await ended(ui, f"job_new{n}", ["failed"]) for n in range(3)]

    for field, value in (("created_from", "soon"), ("upstream", "Not A Name")):
        bad = await ui.client.post(
            "/v1/watches/failed/redeliver", json={field: value}, headers=ACME
        )
        assert bad.status_code == 422
        assert bad.json()["errors"][0]["field"] == field
    elsewhere = await ui.client.post(
        "/v1/watches/failed/redeliver", json={"upstream": "elsewhere"}, headers=ACME
    )
    assert elsewhere.json()["matched"] == 0
    done = await ui.client.post(
        "/v1/watches/failed/redeliver", json={"created_from": since}, headers=ACME
    )
    assert done.status_code == 202, done.text
    answer = done.json()
    assert (answer["matched"], answer["max_redeliveries"], answer["left"]) == (3, 2, 1)
    assert [w["id"] for w in answer["redelivered"]] == [taken[2].id, taken[1].id]
    assert all(w["deliveries"][0]["series"] == 2 for w in answer["redelivered"])
    assert answer["unsendable"] == []
    assert (await reread(ui, before)).status == "failed"


async def test_a_viewer_cannot_redeliver_many(ui: Bridged) -> None:
    """A viewer's list has no "Redeliver N failed", its POST is refused, and so is the API's."""
    watch = await ended(ui, "job_v", ["failed"])
    await ui.sign_in("support-token")

    page = (await ui.client.get("/ui/?delivery=failed")).text
    assert 'id="recover"' not in page
    refused = await ui.client.post(
        "/ui/redeliver-failed?delivery=failed",
        data={"csrf": await ui.csrf("/ui/?delivery=failed"), "confirm": "yes"},
    )
    assert refused.status_code == 403
    api = await ui.client.post("/v1/watches/failed/redeliver", json={}, headers=VIEWER)
    assert (api.status_code, api.json()["type"]) == (403, READ_ONLY)
    assert (await reread(ui, watch)).status == "failed"


async def reread(ui: Bridged, watch: Watch) -> Watch:
    found = await ui.bridge.store.get_watch("acme", watch.id)
    assert found is not None
    return found
