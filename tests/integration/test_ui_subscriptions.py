"""The subscriptions page in process: health, masked URLs, tenant isolation, the timeline's links
to it, and its actions (test event, disable and enable, secret rotation) without JavaScript."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import standardwebhooks
from aiohttp import web

from service.store.base import Attempt, Completion, NewEvent, Watch
from tests.integration.test_ui import ACME, GLOBEX, TOKENS, Bridged, serve
from tests.loopback import loopback_server

PAGE = "/ui/subscriptions"


@pytest.fixture
async def ui(tmp_path: Path) -> AsyncIterator[Bridged]:
    """Tenants acme and globex, and a viewer token of acme (`support-token`)."""
    tokens = [
        *orjson.loads(TOKENS),
        {"name": "acme-support", "tenant": "acme", "role": "viewer", "token": "support-token"},
    ]
    async for served in serve(tmp_path, BRIDGE_AUTH__TOKENS=orjson.dumps(tokens).decode()):
        yield served


async def subscribe(ui: Bridged, url: str, headers: dict[str, str] = ACME) -> Any:
    created = await ui.client.post(
        "/v1/subscriptions", json={"url": url, "events": ["job.failed"]}, headers=headers
    )
    assert created.status_code == 201, created.text
    return created.json()


async def attempted(ui: Bridged, subscription_id: str, codes: list[int | None]) -> Watch:
    """A watch of acme whose final event reached acme's subscriptions, `subscription_id` of
    which got one attempt per code (None: no answer), a second apart; a 2xx ends the delivery, so it
    comes last."""
    store, now = ui.bridge.store, ui.clock.now()
    watch = Watch(
        id=f"wch_{int(now * 1000)}sub", tenant="acme", job_id="job_sub", callback_url=None,
        callback_method="POST", callback_headers={}, metadata=None, events=(),
        payload_format="raw", secret="", poll_interval_s=5, timeout_s=600,
        upstream_api_key=None, created_at=now, updated_at=now, next_poll_at=now + 600,
    )  # fmt: skip
    watch = await store.insert_watch(watch, lease_owner="test", lease_until=now + 600)
    event = NewEvent("evt_ui_sub", "job.failed", True, orjson.dumps({"type": "job.failed"}), None)
    deliveries = await store.complete_watch(
        "test", now, Completion(watch.id, 1, "failed", "boom", event), now + 600
    )
    [subscribed] = [d for d in deliveries if d.subscription_id == subscription_id]
    for number, code in enumerate(codes, 1):
        ok = code is not None and code < 300
        error = (
            None if ok else ("Refused: nothing listens there" if code is None else f"HTTP {code}")
        )
        at = now + number
        attempt = Attempt(subscribed.id, "job.failed", number, at, 0.01, code, error, at + 10**6)
        await store.record_attempt("test", subscribed, attempt, "succeeded" if ok else "retry", at)
        if not ok:
            again = await store.claim_deliveries("test", at + 10**6, at + 10**7, 10)
            [subscribed] = [d for d in again if d.id == subscribed.id]
    return watch


async def test_the_page_lists_the_tenants_subscriptions_with_health_and_masked_urls(
    ui: Bridged,
) -> None:
    """Each of the tenant's subscriptions: its URL with query values masked, events, status,
    the share of its last day's attempts that succeeded and its latest error with its time;
    another tenant's are not there."""
    mine = await subscribe(ui, "http://127.0.0.1:9/in?token=t0ps3cret")
    quiet = await subscribe(ui, "http://127.0.0.1:9/quiet")
    theirs = await subscribe(ui, "http://127.0.0.1:9/theirs", GLOBEX)
    await attempted(ui, mine["id"], [500, None, 200])
    await ui.sign_in()

    page = await ui.client.get(PAGE)

    assert page.status_code == 200
    assert "t0ps3cret" not in page.text
    assert "POST http://127.0.0.1:9/in?token=********" in page.text
    assert theirs["id"] not in page.text
    section = _section(page.text, mine["id"])
    assert "job.failed" in section
    assert "33 % succeeded: 1 of 3 attempts in the last 24 h." in section
    assert re.search(
        r"<time datetime=\"[^\"]+\">[^<]+ UTC</time>: Refused: nothing listens", section
    )
    assert "No attempts in the last 24 h." in _section(page.text, quiet["id"])


async def test_the_timeline_links_subscription_ids_to_their_page(ui: Bridged) -> None:
    """A watch's deliveries and attempts name each subscription with a link to it."""
    subscription = await subscribe(ui, "http://127.0.0.1:9/in")
    watch = await attempted(ui, subscription["id"], [500])
    await ui.sign_in()

    page = await ui.client.get(f"/ui/watches/{watch.id}")

    link = f'<a href="/ui/subscriptions#{subscription["id"]}"><code>{subscription["id"]}</code></a>'
    assert page.text.count(link) == 2  # the deliveries table and the attempt in the timeline


async def test_disable_asks_first_then_cancels_and_enable_brings_it_back(ui: Bridged) -> None:
    """Disable without confirmation shows what it does; confirmed, the subscription is
    disabled, its pending delivery cancelled and the page says so; enable makes it active."""
    subscription = await subscribe(ui, "http://127.0.0.1:9/in")
    await attempted(ui, subscription["id"], [500])
    await ui.sign_in()
    csrf = await ui.csrf(PAGE)
    action = f"{PAGE}/{subscription['id']}/disable"

    asked = await ui.client.post(action, data={"csrf": csrf})
    assert asked.status_code == 200
    assert "pending\ndeliveries are cancelled now" in asked.text
    done = await ui.client.post(action, data={"csrf": csrf, "confirm": "yes"})

    assert (done.status_code, done.headers["location"]) == (303, f"{PAGE}#{subscription['id']}")
    page = await ui.client.get(PAGE)
    assert "disabled: it gets no new deliveries; pending ones were cancelled." in page.text
    assert 'data-status="disabled"' in page.text
    stored = await ui.bridge.store.get_subscription("acme", subscription["id"])
    assert stored is not None
    assert stored.status == "disabled"
    assert await ui.bridge.store.claim_deliveries("x", 10**12, 10**12 + 1, 10) == []
    enabled = await ui.client.post(f"{PAGE}/{subscription['id']}/enable", data={"csrf": csrf})
    assert enabled.status_code == 303
    assert 'data-status="active"' in (await ui.client.get(PAGE)).text


async def test_rotation_shows_the_new_secret_once_and_the_old_ones_end(ui: Bridged) -> None:
    """Confirmed, a rotation answers a page with the new secret (not shown anywhere again);
    the list then says until when the secret before signs."""
    subscription = await subscribe(ui, "http://127.0.0.1:9/in")
    await ui.sign_in()
    csrf = await ui.csrf(PAGE)

    rotated = await ui.client.post(
        f"{PAGE}/{subscription['id']}/rotate", data={"csrf": csrf, "confirm": "yes"}
    )

    assert rotated.status_code == 200
    found = re.search(r'id="secret">(whsec_[^<]+)<', rotated.text)
    assert found is not None
    assert found.group(1) != subscription["secret"]
    page = await ui.client.get(PAGE)
    assert found.group(1) not in page.text
    assert "The secret before also signs until" in _section(page.text, subscription["id"])


async def test_a_test_event_is_sent_signed_and_its_answer_flashed(ui: Bridged) -> None:
    """Send test event POSTs a webhook.test that verifies with the subscription's secret, and
    the page says what the receiver answered."""
    got: list[tuple[bytes, dict[str, str]]] = []

    async def receive(request: web.Request) -> web.Response:
        got.append((await request.read(), dict(request.headers)))
        return web.Response(status=202)

    async with loopback_server(receive) as base:
        subscription = await subscribe(ui, f"{base}/in")
        await ui.sign_in()
        csrf = await ui.csrf(PAGE)
        sent = await ui.client.post(f"{PAGE}/{subscription['id']}/test", data={"csrf": csrf})

    assert sent.status_code == 303
    page = await ui.client.get(PAGE)
    assert re.search(r"Test event msg_\w+ sent to sub_\w+: the receiver answered 202 in", page.text)
    [(body, headers)] = got
    # The fake clock stands still, so the signature's timestamp is checked by hand.
    wh = standardwebhooks.Webhook(subscription["secret"])
    expected = wh.sign(
        headers["webhook-id"],
        datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC),
        body.decode(),
    )
    assert expected in headers["webhook-signature"].split(" ")
    assert orjson.loads(body)["type"] == "webhook.test"


async def test_actions_are_tenant_isolated_and_need_the_csrf_token(ui: Bridged) -> None:
    """Another tenant's subscription is 404 and left as it was; a form without the CSRF token
    is refused."""
    theirs = await subscribe(ui, "http://127.0.0.1:9/theirs", GLOBEX)
    await ui.sign_in()
    csrf = await ui.csrf(PAGE)

    for verb in ("test", "disable", "enable", "rotate"):
        refused = await ui.client.post(
            f"{PAGE}/{theirs['id']}/{verb}", data={"csrf": csrf, "confirm": "yes"}
        )
        assert refused.status_code == 404, verb
    forged = await ui.client.post(f"{PAGE}/{theirs['id']}/disable", data={"confirm": "yes"})
    assert forged.status_code == 403
    stored = await ui.bridge.store.get_subscription("globex", theirs["id"])
    assert stored is not None
    assert (stored.status, stored.previous_secret_until) == ("active", None)


async def test_the_actions_share_the_apis_rate_of_subscription_changes(tmp_path: Path) -> None:
    """Enable, disable, rotate and test spend the token's subscription changes as the API's
    calls do: past the burst the page says when to retry and nothing changes, the API's next
    change is a 429 too, and once the rate refills an action goes through. Asking to confirm
    changes nothing, so it spends nothing."""
    async for ui in serve(
        tmp_path, BRIDGE_AUTH__TOKENS=TOKENS,
        BRIDGE_AUTH__SUBSCRIPTION_CHANGE_BURST="3", BRIDGE_AUTH__SUBSCRIPTION_CHANGES_PER_MIN="6",
    ):  # fmt: skip
        subscription = await subscribe(ui, "http://127.0.0.1:9/in")  # the first change
        await ui.sign_in()
        csrf = await ui.csrf(PAGE)
        action = f"{PAGE}/{subscription['id']}"
        asked = await ui.client.post(f"{action}/disable", data={"csrf": csrf})
        assert asked.status_code == 200
        for verb in ("disable", "enable"):  # the second and third
            done = await ui.client.post(f"{action}/{verb}", data={"csrf": csrf, "confirm": "yes"})
            assert done.status_code == 303

        refused = await ui.client.post(f"{action}/disable", data={"csrf": csrf, "confirm": "yes"})

        assert refused.status_code == 303
        page = await ui.client.get(PAGE)
        assert "Not done: too many subscription changes for this token; retry in 10 s" in page.text
        stored = await ui.bridge.store.get_subscription("acme", subscription["id"])
        assert stored is not None
        assert stored.status == "active"
        deleted = await ui.client.delete(f"/v1/subscriptions/{subscription['id']}", headers=ACME)
        assert (deleted.status_code, deleted.headers["retry-after"]) == (429, "10")
        ui.clock.advance(10)
        again = await ui.client.post(f"{action}/disable", data={"csrf": csrf, "confirm": "yes"})
        assert again.status_code == 303
        stored = await ui.bridge.store.get_subscription("acme", subscription["id"])
        assert stored is not None
        assert stored.status == "disabled"


def _section(page: str, subscription_id: str) -> str:
    found = re.search(
        rf'<section class="subscription" id="{subscription_id}".*?</section>', page, re.S
    )
    assert found is not None, page
    return found.group(0)


async def test_a_viewer_sees_the_page_without_actions_and_is_refused_them(ui: Bridged) -> None:
    """Signed in with a viewer token: the subscriptions and their health, no action form; each
    action answers 403 and changes nothing."""
    subscription = await subscribe(ui, "http://127.0.0.1:9/in")
    await ui.sign_in("support-token")

    page = await ui.client.get(PAGE)

    assert page.status_code == 200
    section = _section(page.text, subscription["id"])
    assert "No attempts in the last 24 h." in section
    assert "<form" not in section
    csrf = await ui.csrf(PAGE)  # the sign-out form's
    for verb in ("test", "disable", "enable", "rotate"):
        refused = await ui.client.post(
            f"{PAGE}/{subscription['id']}/{verb}", data={"csrf": csrf, "confirm": "yes"}
        )
        assert refused.status_code == 403, verb
        assert "<h1>Read-only sign-in</h1>" in refused.text
    stored = await ui.bridge.store.get_subscription("acme", subscription["id"])
    assert stored is not None
    assert (stored.status, stored.previous_secret_until) == ("active", None)
