"""Viewer tokens (`role = "viewer"` in auth.tokens), in process on a real SQLite store: they read
their tenant's watches through the API's GET routes and the dashboard's pages, and every change
(an API POST or DELETE, a dashboard action) is refused with a 403 that says why, before its body
or form is looked at."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from starlette.routing import Route

from service.api.handlers import READ_METHODS
from service.ui.words import when
from service.vault import new_key
from tests.integration import test_ui_outcomes as outcomes
from tests.integration.test_ui import ACME, CALLBACK, Bridged, delivered, serve

TOKENS = [
    {"name": "acme", "token": "acme-token"},
    {"name": "globex", "token": "globex-token"},
    {"name": "acme-support", "tenant": "acme", "role": "viewer", "token": "support-token"},
]
VIEWER = {"Authorization": "Bearer support-token"}
READ_ONLY = "/problems/read-only-token"


async def status_of(ui: Bridged, watch_id: str, headers: dict[str, str] = ACME) -> str:
    status: str = (await ui.client.get(f"/v1/watches/{watch_id}", headers=headers)).json()["status"]
    return status


@pytest.fixture
async def ui(tmp_path: Path) -> AsyncIterator[Bridged]:
    """A bridge with tenants acme and globex, and a viewer token of acme."""
    async for served in serve(tmp_path, BRIDGE_AUTH__TOKENS=json.dumps(TOKENS)):
        yield served


# The API.


async def test_a_viewer_reads_its_tenants_watches(ui: Bridged) -> None:
    """`GET /v1/me` names the tenant and the role; the watches, one watch, its attempts, the
    events, the subscriptions and a long-poll answer as they do to the tenant's own token,
    and another tenant's watch stays a 404."""
    mine = await ui.register(job_id="job_acme")
    theirs = await ui.register({"Authorization": "Bearer globex-token"}, job_id="job_globex")
    subscribed = await ui.client.post("/v1/subscriptions", json={"url": CALLBACK}, headers=ACME)
    assert subscribed.status_code == 201

    me = await ui.client.get("/v1/me", headers=VIEWER)
    assert me.json() == {"tenant": "acme", "authenticated": True, "role": "viewer"}
    assert (await ui.client.get("/v1/me", headers=ACME)).json()["role"] == "full"
    for path in (
        "/v1/watches", f"/v1/watches/{mine}", f"/v1/watches/{mine}/deliveries", "/v1/events",
        "/v1/subscriptions",
    ):  # fmt: skip
        as_viewer = await ui.client.get(path, headers=VIEWER)
        assert as_viewer.status_code == 200, (path, as_viewer.text)
        assert as_viewer.json() == (await ui.client.get(path, headers=ACME)).json(), path
        assert (await ui.client.head(path, headers=VIEWER)).status_code == 200, path
    waited = await ui.client.get(f"/v1/watches/{mine}/wait?timeout_s=0", headers=VIEWER)
    assert waited.status_code == 202
    assert (await ui.client.get(f"/v1/watches/{theirs}", headers=VIEWER)).status_code == 404


async def test_every_change_is_refused_to_a_viewer(ui: Bridged) -> None:
    """Every route's every method other than GET and HEAD answers a viewer 403 with the
    read-only problem, whatever the body (none, or an invalid one): no watch is registered,
    cancelled or redelivered, no subscription made or removed."""
    active = await ui.register(job_id="job_active")
    done = await delivered(ui)
    subscribed = await ui.client.post("/v1/subscriptions", json={"url": CALLBACK}, headers=ACME)
    subscription = subscribed.json()["id"]
    [attempt] = (await ui.client.get(f"/v1/watches/{done.id}/deliveries", headers=ACME)).json()[
        "data"
    ]
    values = {
        "watch_id": done.id, "subscription_id": subscription, "webhook_id": attempt["webhook_id"]
    }  # fmt: skip
    changes = [
        (method, route.path.format(**values))
        for route in ui.app.routes
        if isinstance(route, Route) and route.path.startswith("/v1/")
        for method in sorted(route.methods or ())
        if method not in READ_METHODS
    ]
    assert {method for method, _ in changes} == {"POST", "DELETE"}
    # Registration, generation, cancel, redeliver, redeliver the failed ones, retry now; a
    # subscription's creation, deletion, disabling, enabling, secret rotation and test event.
    assert len(changes) == 12

    for method, path in changes:
        for body in (None, {"job_id": "job_new", "callback_url": CALLBACK}, {"bad": 1}):
            refused = await ui.client.request(method, path, json=body, headers=VIEWER)
            assert refused.status_code == 403, (method, path, refused.text)
            problem = refused.json()
            assert problem["type"] == READ_ONLY
            assert problem["detail"] == (
                f"token 'acme-support' has role viewer: it may read but not change anything; "
                f"{method} {path} needs a token with role full"
            )

    listed = (await ui.client.get("/v1/watches", headers=ACME)).json()["data"]
    assert sorted((w["id"], w["status"]) for w in listed) == sorted(
        [(active, "active"), (done.id, "delivered")]
    )
    assert len((await ui.client.get(f"/v1/watches/{done.id}/deliveries", headers=ACME)).json()[
        "data"
    ]) == 1  # fmt: skip
    subscriptions = (await ui.client.get("/v1/subscriptions", headers=ACME)).json()["data"]
    assert [s["id"] for s in subscriptions] == [subscription]


async def test_refused_changes_are_not_failed_authentications(tmp_path: Path) -> None:
    """A viewer's refused changes do not count against its address: past the failed
    authentication burst, its reads and the tenant's own token still work."""
    tokens = json.dumps(TOKENS)
    async for ui in serve(tmp_path, BRIDGE_AUTH__TOKENS=tokens, BRIDGE_AUTH__FAILED_AUTH_BURST="2"):
        for _ in range(5):
            refused = await ui.client.post("/v1/watches", json={}, headers=VIEWER)
            assert refused.status_code == 403
        assert (await ui.client.get("/v1/watches", headers=VIEWER)).status_code == 200
        await ui.register()


async def test_the_openapi_document_says_which_operations_a_viewer_may_not_use(
    ui: Bridged,
) -> None:
    """Each operation that changes something documents the read-only 403; reads do not."""
    spec = (await ui.client.get("/openapi.json")).json()
    for path, operations in spec["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            said = READ_ONLY in operation["responses"]["403"]["description"]
            assert said == (method.upper() not in READ_METHODS), (method, path)


# The dashboard.


async def test_a_viewer_sees_the_pages_read_only_without_action_buttons(ui: Bridged) -> None:
    """Signed in with the viewer token: the list shows acme's watches (not globex's) and says
    it is read-only; a delivered watch's page shows its timeline and payload but no Redeliver,
    an active one's no Cancel; the live fragment and stream answer as usual."""
    active = await ui.register(job_id="job_active")
    done = await delivered(ui)
    theirs = await ui.register({"Authorization": "Bearer globex-token"}, job_id="job_globex")
    await ui.sign_in("support-token")

    listing = await ui.client.get("/ui/")
    assert listing.status_code == 200
    assert "Signed in as <strong>acme</strong> (read-only)" in listing.text
    assert '<p id="read-only" class="read-only">Read-only:' in listing.text
    assert active in listing.text
    assert done.id in listing.text
    assert theirs not in listing.text

    page = await ui.client.get(f"/ui/watches/{done.id}")
    assert '<ol id="timeline">' in page.text
    assert 'id="payload"' in page.text
    assert 'id="read-only"' in page.text
    assert '<form class="redeliver"' not in page.text
    page = await ui.client.get(f"/ui/watches/{active}")
    assert 'data-status="active"' in page.text
    assert '<form class="cancel"' not in page.text
    assert (await ui.client.get(f"/ui/watches/{active}?fragment=1")).status_code == 200
    assert (await ui.client.head(f"/ui/live?watch_id={active}")).status_code == 200
    assert (await ui.client.get(f"/ui/watches/{theirs}")).status_code == 404


async def test_a_viewer_sees_when_the_next_attempt_is_but_cannot_retry_now(ui: Bridged) -> None:
    """A delivery waiting for its second attempt: the viewer sees when it is due, without
    Retry now; a retry posted anyway is a 403 and the attempt stays where it was."""
    watch = await outcomes.held(ui, "job_waits")
    failure = await outcomes.failed_once(ui, await outcomes.ended(ui, watch, "job.succeeded", None))
    assert failure.next_attempt_at is not None
    await ui.sign_in("support-token")

    page = (await ui.client.get(f"/ui/watches/{watch.id}")).text
    row = re.search(rf'<tr data-delivery-id="{failure.delivery_id}".*?</tr>', page, re.S)
    assert row is not None
    assert f">{when(failure.next_attempt_at)}</time> (attempt 2 of" in row.group(0)
    assert "Retry now" not in page
    assert '<form class="retry"' not in page

    action = f"/ui/watches/{watch.id}/deliveries/{failure.delivery_id}/retry"
    refused = await ui.client.post(action, data={"csrf": await ui.csrf()})
    assert refused.status_code == 403
    [delivery] = (await ui.client.get(f"/v1/watches/{watch.id}/deliveries", headers=ACME)).json()[
        "data"
    ]
    assert delivery["attempt"] == 1
    assert delivery["next_attempt_at"] is not None


async def test_the_tenants_own_token_still_gets_the_buttons(ui: Bridged) -> None:
    """The same pages signed in with acme's full token: no read-only note, and the buttons."""
    active = await ui.register(job_id="job_active")
    await ui.sign_in()
    page = await ui.client.get(f"/ui/watches/{active}")
    assert 'id="read-only"' not in page.text
    assert "(read-only)" not in page.text
    assert '<form class="cancel"' in page.text


@pytest.mark.parametrize(
    ("form", "headers"),
    [
        ({"csrf": None, "confirm": "yes"}, {}),  # a good CSRF token, confirmed
        ({"csrf": None}, {}),  # the first step, which would ask for a confirmation
        ({}, {}),  # no CSRF token
        ({"csrf": None, "confirm": "yes"}, {"Origin": "https://evil.example"}),  # elsewhere
    ],
)
async def test_every_action_is_refused_to_a_viewer(
    ui: Bridged, form: dict[str, str | None], headers: dict[str, str]
) -> None:
    """Cancel, redeliver and retry now answer a viewer's POST with a 403 page saying why, CSRF
    token or not, confirmed or not, and nothing is done."""
    active = await ui.register(job_id="job_active")
    done = await delivered(ui)
    await ui.sign_in("support-token")
    csrf = await ui.csrf()  # the sign-out form's: a viewer's pages have no other
    data = {name: value or csrf for name, value in form.items()}

    [attempt] = (await ui.client.get(f"/v1/watches/{done.id}/deliveries", headers=ACME)).json()[
        "data"
    ]
    for path in (
        f"/ui/watches/{active}/cancel", f"/ui/watches/{done.id}/redeliver",
        f"/ui/watches/{done.id}/deliveries/{attempt['webhook_id']}/retry",
    ):  # fmt: skip
        refused = await ui.client.post(path, data=data, headers=headers)
        assert refused.status_code == 403, path
        assert "<h1>Read-only sign-in</h1>" in refused.text
        assert "You signed in with a viewer token" in refused.text

    assert await status_of(ui, active) == "active"
    assert await status_of(ui, done.id) == "delivered"


async def test_a_viewer_signs_out(ui: Bridged) -> None:
    """Signing out is no change to the tenant's watches: a viewer may."""
    await ui.sign_in("support-token")
    signed_out = await ui.client.post("/ui/logout", data={"csrf": await ui.csrf()})
    assert (signed_out.status_code, signed_out.headers["location"]) == (303, "/ui/login")
    assert (await ui.client.get("/ui/")).status_code == 303


async def test_a_token_made_a_viewer_stops_acting_at_once(tmp_path: Path) -> None:
    """The role is the settings' at each request, not the cookie's: acme's sign-in, kept
    across a restart (same encryption key) in which acme's token became a viewer of a tenant
    with another full token, shows no buttons and may not cancel."""
    key = new_key()
    full = json.dumps([{"name": "acme", "token": "acme-token"}])
    async for before in serve(
        tmp_path, BRIDGE_AUTH__TOKENS=full, BRIDGE_SECURITY__ENCRYPTION_KEY=key
    ):
        watch_id = await before.register()
        await before.sign_in()
        cookie = {"Cookie": f"bridge_ui={before.client.cookies['bridge_ui']}"}
        assert '<form class="cancel"' in (await before.client.get(f"/ui/watches/{watch_id}")).text

    demoted = json.dumps([
        {"name": "acme-app", "tenant": "acme", "token": "app-token"},
        {"name": "acme", "role": "viewer", "tenant": "acme", "token": "acme-token"},
    ])  # fmt: skip
    async for after in serve(
        tmp_path, BRIDGE_AUTH__TOKENS=demoted, BRIDGE_SECURITY__ENCRYPTION_KEY=key
    ):
        page = await after.client.get(f"/ui/watches/{watch_id}", headers=cookie)
        assert page.status_code == 200
        assert '<form class="cancel"' not in page.text
        assert 'id="read-only"' in page.text
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert found is not None
        refused = await after.client.post(
            f"/ui/watches/{watch_id}/cancel", data={"csrf": found.group(1), "confirm": "yes"},
            headers=cookie,
        )  # fmt: skip
        assert refused.status_code == 403
        assert await status_of(after, watch_id, {"Authorization": "Bearer app-token"}) == "active"
