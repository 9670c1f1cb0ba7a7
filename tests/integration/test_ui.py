"""The dashboard in process, on a real SQLite store: sign-in and its cookie, CSRF, tenants, the
list's filters and pages, the watch page, actions without JavaScript, live updates, escaping."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import structlog
from starlette.applications import Starlette
from starlette.types import Message, Scope

from service import config
from service.app import create_app
from service.bridge import Bridge
from service.clock import FakeClock
from service.store.base import Attempt, Completion, NewDelivery, NewEvent, Watch
from service.ui import dashboard

TOKENS = '[{"name": "acme", "token": "acme-token"}, {"name": "globex", "token": "globex-token"}]'
ACME = {"Authorization": "Bearer acme-token"}
GLOBEX = {"Authorization": "Bearer globex-token"}
# Loopback, with nothing listening: deliveries and polls fail at once, without leaving the host.
CALLBACK = "http://127.0.0.1:9/hooks"
DEADLINE_S = 10.0


@dataclass
class Bridged:
    """A bridge served in process: an HTTP client, the app, its state and its clock."""

    client: httpx.AsyncClient
    app: Starlette
    state: dict[str, Any]
    clock: FakeClock

    @property
    def bridge(self) -> Bridge:
        bridge: Bridge = self.app.state.bridge
        return bridge

    async def register(self, headers: dict[str, str] = ACME, **changes: Any) -> str:
        body = {"job_id": "job_1", "callback_url": CALLBACK, **changes}
        response = await self.client.post("/v1/watches", json=body, headers=headers)
        assert response.status_code == 201, response.text
        self.clock.advance(0.01)  # the next id is newer
        watch_id: str = response.json()["id"]
        return watch_id

    async def sign_in(self, token: str = "acme-token") -> httpx.Response:  # noqa: S107
        response = await self.client.post("/ui/login", data={"token": token})
        assert response.status_code == 303, response.text
        return response

    async def csrf(self, path: str = "/ui/") -> str:
        page = await self.client.get(path)
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert found is not None, page.text
        return found.group(1)

    async def stream(
        self, path: str, until: bytes, opened: asyncio.Event | None = None
    ) -> tuple[int, bytes]:
        """GET `path` as a browser's EventSource would, until `until` arrives (then the client
        goes away) or the stream ends: the status and what was received. `opened` is set once
        the answer has started."""
        received = bytearray()
        status: list[int] = []
        seen = asyncio.Event()
        cookie = self.client.cookies.get("bridge_ui", path="/ui")
        headers = [(b"host", b"bridge")]
        if cookie:
            headers.append((b"cookie", f"bridge_ui={cookie}".encode()))
        raw_path, _, query = path.partition("?")
        scope: Scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": raw_path, "raw_path": raw_path.encode(),
            "query_string": query.encode(), "root_path": "", "headers": headers,
            "client": ("127.0.0.1", 50000), "server": ("bridge", 80), "state": dict(self.state),
        }  # fmt: skip

        async def receive() -> Message:
            await seen.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                if opened is not None:
                    opened.set()
            elif message["type"] == "http.response.body":
                received.extend(message.get("body", b""))
                if until in received or not message.get("more_body", False):
                    seen.set()

        task = asyncio.create_task(self.app(scope, receive, send))
        try:
            async with asyncio.timeout(DEADLINE_S):
                await seen.wait()
                await task
        finally:
            task.cancel()
        return status[0], bytes(received)


async def serve(tmp_path: Path, **environ: str) -> AsyncIterator[Bridged]:
    clock = FakeClock()
    settings = config.load(
        environ={
            "BRIDGE_STORE__URL": f"sqlite:///{tmp_path}/bridge.db",
            "BRIDGE_UPSTREAM__BASE_URL": "http://127.0.0.1:9",
            "BRIDGE_SECURITY__ALLOW_PRIVATE_CALLBACKS": "true",
            "BRIDGE_CONFIG": str(Path(__file__).parents[2] / "config" / "bridge.toml"),
            **environ,
        },
    )
    app = create_app(settings, clock)
    async with app.router.lifespan_context(app) as state:
        served = dict(state or {})

        async def with_state(scope: Scope, receive: Any, send: Any) -> None:
            scope["state"] = dict(served)
            await app(scope, receive, send)

        transport = httpx.ASGITransport(app=with_state)
        async with httpx.AsyncClient(transport=transport, base_url="http://bridge") as client:
            yield Bridged(client, app, served, clock)


@pytest.fixture
async def ui(tmp_path: Path) -> AsyncIterator[Bridged]:
    """A bridge with two tenants, acme and globex."""
    async for served in serve(tmp_path, BRIDGE_AUTH__TOKENS=TOKENS):
        yield served


def set_cookie(response: httpx.Response, name: str) -> Any:
    jar = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        jar.load(header)
    return jar[name]


async def delivered(ui: Bridged, **changes: Any) -> Watch:
    """A watch of acme whose final event (its error written by the upstream) reached its
    callback with a 200, written through the store as the progress writer would."""
    store, now = ui.bridge.store, ui.clock.now()
    watch = Watch(
        id=f"wch_{int(now * 1000)}ui", tenant="acme", job_id="job_done",
        callback_url="http://user:pw@127.0.0.1:9/hooks", callback_method="POST",
        callback_headers={"X-Api-Secret": "sealed"}, metadata=None,
        events=("job.succeeded", "job.failed"), payload_format="raw", secret="whsec_x",
        poll_interval_s=5, timeout_s=600, upstream_api_key=None, created_at=now,
        updated_at=now, next_poll_at=now + 600,
    )  # fmt: skip
    watch = await store.insert_watch(
        replace(watch, **changes), lease_owner="test", lease_until=now + 600
    )
    envelope = orjson.dumps({"type": "job.failed", "error": "<img src=x onerror=alert(1)>"})
    body = orjson.dumps({"id": "job_done", "status": "failed", "error": "<b>boom</b>"})
    event = NewEvent(
        "evt_1ui", "job.failed", True, envelope, NewDelivery("msg_1ui", "job.failed", body, True)
    )
    [delivery] = await store.complete_watch(
        "test", now, Completion(watch.id, 1, "failed", "boom", event), now + 600
    )
    attempt = Attempt(delivery.id, "job.failed", 1, now, 0.0123, 200, None)
    await store.record_attempt("test", delivery, attempt, "succeeded", now)
    return watch


# Signing in and out.


async def test_pages_ask_for_a_sign_in(ui: Bridged) -> None:
    """Without a sign-in every page redirects to the sign-in form, which has its labelled
    token field; the live stream answers 401."""
    for path in ("/ui/", "/ui/watches/wch_0123456789"):
        response = await ui.client.get(path)
        assert (response.status_code, response.headers["location"]) == (303, "/ui/login")
    form = await ui.client.get("/ui/login")
    assert form.status_code == 200
    assert '<label for="token">API token</label>' in form.text
    assert 'name="token"' in form.text
    assert ">Sign in</button>" in form.text
    assert (await ui.client.get("/ui/live")).status_code == 401
    assert (await ui.client.get("/ui")).headers["location"] == "http://bridge/ui/"


async def test_a_sign_in_sets_a_signed_http_only_same_site_cookie(ui: Bridged) -> None:
    """A good token: 303 to /ui/ and a cookie that holds no token, HttpOnly, SameSite=Strict,
    Path=/ui (not Secure over plain http to a non-loopback host, where browsers drop it)."""
    response = await ui.sign_in()

    assert response.headers["location"] == "/ui/"
    cookie = set_cookie(response, "bridge_ui")
    assert "acme-token" not in cookie.value
    assert cookie["httponly"] is True
    assert cookie["samesite"].lower() == "strict"
    assert cookie["path"] == "/ui"
    assert not cookie["secure"]
    page = await ui.client.get("/ui/")
    assert page.status_code == 200
    assert "Signed in as <strong>acme</strong>" in page.text


async def test_the_cookie_is_secure_over_https_and_on_loopback(ui: Bridged) -> None:
    """Browsers keep Secure cookies over https and on loopback addresses even over http."""
    for base in ("https://bridge.example", "http://127.0.0.1:8080", "http://localhost"):
        response = await ui.client.post(f"{base}/ui/login", data={"token": "acme-token"})
        assert set_cookie(response, "bridge_ui")["secure"] is True, base


async def test_a_wrong_token_gets_the_form_again_with_401(ui: Bridged) -> None:
    """A wrong or empty token: the form again, an error, no cookie."""
    for token in ("acme-tokem", ""):
        response = await ui.client.post("/ui/login", data={"token": token})
        assert response.status_code == 401
        assert 'id="login-error"' in response.text
        assert "set-cookie" not in response.headers
    assert (await ui.client.get("/ui/")).status_code == 303


async def test_repeated_wrong_tokens_lock_the_sign_in_form(tmp_path: Path) -> None:
    """Past `auth.failed_auth_burst` refused sign-ins from one address, even the right token
    gets the form again with 429 and the wait, and no cookie."""
    async for ui in serve(tmp_path, BRIDGE_AUTH__TOKENS=TOKENS, BRIDGE_AUTH__FAILED_AUTH_BURST="2"):
        for _ in range(2):
            assert (await ui.client.post("/ui/login", data={"token": "guess"})).status_code == 401
        locked = await ui.client.post("/ui/login", data={"token": "acme-token"})
        assert locked.status_code == 429
        assert "Too many failed sign-ins" in locked.text
        assert int(locked.headers["retry-after"]) >= 1
        assert "set-cookie" not in locked.headers
        ui.clock.advance(60)  # the rate gives the address another try
        assert (await ui.sign_in()).status_code == 303


async def test_a_forged_or_expired_cookie_is_refused(ui: Bridged) -> None:
    """A cookie whose tenant was changed, or whose time ran out, is no sign-in."""
    await ui.sign_in()
    value = ui.client.cookies["bridge_ui"]
    _, expiry, session_id, mac = value.split(".")
    ui.client.cookies.clear()

    async def status(cookie: str) -> int:
        response = await ui.client.get("/ui/", headers={"Cookie": f"bridge_ui={cookie}"})
        return response.status_code

    assert await status(f"Z2xvYmV4.{expiry}.{session_id}.{mac}") == 303  # "globex"
    assert await status(f"YWNtZQ.{int(expiry) + 3600}.{session_id}.{mac}") == 303  # longer
    assert await status(f"YWNtZQ.{expiry}.{'A' * 22}.{mac}") == 303  # another sign-in's id
    assert await status(f"YWNtZQ.{expiry}.{mac}") == 303  # without an id
    assert await status(value) == 200
    ui.clock.advance(12 * 3600 + 1)  # ui.session_hours
    assert await status(value) == 303


async def test_sign_out_clears_the_cookie(ui: Bridged) -> None:
    """POST /ui/logout (with its CSRF token) ends the sign-in."""
    await ui.sign_in()
    csrf = await ui.csrf()

    response = await ui.client.post("/ui/logout", data={"csrf": csrf})

    assert (response.status_code, response.headers["location"]) == (303, "/ui/login")
    assert set_cookie(response, "bridge_ui")["max-age"] == "0"
    assert (await ui.client.get("/ui/")).status_code == 303


async def test_a_copy_of_the_cookie_is_refused_once_signed_out(ui: Bridged) -> None:
    """After sign-out, the cookie copied before it is no sign-in: pages and actions redirect
    to the sign-in form (which shows, no loop), /ui/live is a 401, and the stream the copy had
    open ends within its recheck period. Another sign-in of the tenant stays good."""
    watch_id = await ui.register()
    await ui.sign_in()  # another browser, say
    other = {"Cookie": f"bridge_ui={ui.client.cookies['bridge_ui']}"}
    await ui.sign_in()
    copied = {"Cookie": f"bridge_ui={ui.client.cookies['bridge_ui']}"}
    csrf = await ui.csrf(f"/ui/watches/{watch_id}")
    opened = asyncio.Event()
    streaming = asyncio.create_task(ui.stream("/ui/live", b"event: changed", opened))
    async with asyncio.timeout(DEADLINE_S):
        await opened.wait()

    signed_out = await ui.client.post("/ui/logout", data={"csrf": csrf})

    assert signed_out.headers["location"] == "/ui/login"
    status, received = await streaming  # it ends by itself: a timeout fails the test
    assert (status, received) == (200, b"retry: 2000\n\n")
    ui.client.cookies.clear()
    for path in ("/ui/", f"/ui/watches/{watch_id}", f"/ui/watches/{watch_id}?fragment=1"):
        page = await ui.client.get(path, headers=copied)
        assert (page.status_code, page.headers.get("location")) == (303, "/ui/login"), path
    cancel = await ui.client.post(
        f"/ui/watches/{watch_id}/cancel", data={"csrf": csrf, "confirm": "yes"}, headers=copied
    )
    assert (cancel.status_code, cancel.headers["location"]) == (303, "/ui/login")
    watch = await ui.client.get(f"/v1/watches/{watch_id}", headers=ACME)
    assert watch.json()["status"] == "active"
    assert (await ui.client.get("/ui/live", headers=copied)).status_code == 401
    login = await ui.client.get("/ui/login", headers=copied)
    assert login.status_code == 200
    assert 'name="token"' in login.text
    assert (await ui.client.get("/ui/", headers=other)).status_code == 200


async def test_housekeeping_forgets_a_sign_out_once_its_cookie_expired(ui: Bridged) -> None:
    """The revoked id is kept while its cookie could be presented, and purged after."""
    await ui.sign_in()
    session_id = ui.client.cookies["bridge_ui"].split(".")[2]
    csrf = await ui.csrf()
    await ui.client.post("/ui/logout", data={"csrf": csrf})
    store = ui.bridge.store

    ui.clock.advance(12 * 3600 - 1)  # ui.session_hours, less a second
    await ui.bridge.housekeeping()
    assert await store.session_revoked(session_id)
    ui.clock.advance(1)
    await ui.bridge.housekeeping()
    assert not await store.session_revoked(session_id)


# CSRF.


@pytest.mark.parametrize(
    ("form", "headers"),
    [
        ({}, {}),  # no token
        ({"csrf": "forged"}, {}),  # a wrong token
        ({"csrf": None}, {"Origin": "https://evil.example"}),  # a good token, another site
        ({"csrf": None}, {"Sec-Fetch-Site": "cross-site"}),
        ({"csrf": None}, {"Origin": "null"}),
        ({"csrf": None}, {"Origin": "http://[::1"}),  # no URL: it names no site of ours
    ],
)
async def test_an_action_without_the_csrf_token_or_from_elsewhere_is_refused(
    ui: Bridged, form: dict[str, str | None], headers: dict[str, str]
) -> None:
    """403 and nothing done: the watch stays active."""
    watch_id = await ui.register()
    await ui.sign_in()
    csrf = await ui.csrf(f"/ui/watches/{watch_id}")
    data = {"confirm": "yes", **{k: v or csrf for k, v in form.items()}}

    response = await ui.client.post(f"/ui/watches/{watch_id}/cancel", data=data, headers=headers)

    assert response.status_code == 403
    assert "<h1>Refused</h1>" in response.text
    watch = await ui.client.get(f"/v1/watches/{watch_id}", headers=ACME)
    assert watch.json()["status"] == "active"


# Tenants.


async def test_another_tenants_watch_is_not_found_nor_listed_nor_cancellable(
    ui: Bridged,
) -> None:
    """acme gets a 404 page for globex's watch, does not see it listed or counted, and cannot
    cancel it."""
    theirs = await ui.register(GLOBEX, job_id="job_globex")
    await ui.sign_in()
    csrf = await ui.csrf()

    page = await ui.client.get(f"/ui/watches/{theirs}")
    assert page.status_code == 404
    assert "<h1>Not found</h1>" in page.text
    listing = await ui.client.get("/ui/")
    assert theirs not in listing.text
    assert count(listing, "outcome", "in_progress") == 0
    cancel = await ui.client.post(
        f"/ui/watches/{theirs}/cancel", data={"csrf": csrf, "confirm": "yes"}
    )
    assert cancel.status_code == 404
    watch = await ui.client.get(f"/v1/watches/{theirs}", headers=GLOBEX)
    assert watch.json()["status"] == "active"


# The list.


def rows(page: httpx.Response) -> list[str]:
    return re.findall(r'<tr data-watch-id="(wch_[0-9a-z]+)"', page.text)


def count(page: httpx.Response, kind: str, value: str) -> int:
    """The count of watches whose `kind` (outcome, delivery) is `value` atop the list."""
    found = re.search(
        rf'<li data-{kind}="{value}"[^>]*><a [^>]*><span class="count">(\d+)</span>', page.text
    )
    assert found is not None
    return int(found.group(1))


async def test_the_list_is_newest_first_with_counts_and_filters(ui: Bridged) -> None:
    """Rows newest first; counts per job outcome; filters by outcome, by job id, and by the
    watch status that older links carry (kept in the form)."""
    first = await ui.register(job_id="job_a")
    second = await ui.register(job_id="job_b")
    third = await ui.register(job_id="job_b")
    await ui.client.delete(f"/v1/watches/{second}", headers=ACME)
    await ui.sign_in()

    page = await ui.client.get("/ui/")
    assert rows(page) == [third, second, first]
    counted = [count(page, "outcome", o) for o in ("in_progress", "cancelled", "failed")]
    assert counted == [2, 1, 0]
    assert count(page, "delivery", "none") == 3
    assert rows(await ui.client.get("/ui/?outcome=cancelled")) == [second]
    assert rows(await ui.client.get("/ui/?job_id=job_b")) == [third, second]
    both = await ui.client.get("/ui/?outcome=in_progress&job_id=job_b")
    assert rows(both) == [third]
    assert '<option value="in_progress" selected>' in both.text
    assert 'name="job_id" value="job_b"' in both.text
    old_link = await ui.client.get("/ui/?status=active")
    assert rows(old_link) == [third, first]
    assert '<input type="hidden" name="status" value="active">' in old_link.text


async def test_a_bad_filter_gets_a_400_page(ui: Bridged) -> None:
    """An unknown status, a job id outside the allowed characters, a forged cursor: 400."""
    await ui.sign_in()
    for query in (
        "status=lost", "outcome=lost", "delivery=%3Cb%3E", "job_id=%3Cscript%3E", "job_id=..",
        "cursor=nope",
    ):  # fmt: skip
        page = await ui.client.get(f"/ui/?{query}")
        assert page.status_code == 400, query
        assert "<script>" not in page.text


async def test_older_pages_follow_the_cursor_and_keep_the_filter(
    ui: Bridged, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With two rows a page, five watches take three pages through the "Older" links, each
    keeping the filter; the last page has no "Older" link."""
    monkeypatch.setattr(dashboard, "PAGE_SIZE", 2)
    made = [await ui.register(job_id="job_p") for _ in range(5)]
    await ui.register(job_id="job_other")
    await ui.sign_in()

    seen: list[str] = []
    path: str | None = "/ui/?job_id=job_p"
    while path is not None:
        page = await ui.client.get(path)
        seen += rows(page)
        older = re.search(r'<a href="([^"]+)" rel="next" class="older">Older</a>', page.text)
        path = older.group(1).replace("&amp;", "&") if older else None
        assert path is None or "job_id=job_p" in path
    assert seen == made[::-1]


# The watch page and its actions.


async def test_the_watch_page_shows_the_timeline_payload_and_masked_headers(
    ui: Bridged,
) -> None:
    """Registered, the upstream's final event, the attempt (endpoint, code, duration); the
    body as sent, pretty-printed; secrets masked; HTML from the upstream escaped; the
    redeliver button (not cancel) for a delivered watch."""
    watch = await delivered(ui)
    await ui.sign_in()

    page = await ui.client.get(f"/ui/watches/{watch.id}")

    assert page.status_code == 200
    assert 'id="watch-status" class="badge badge-delivered" data-status="delivered"' in page.text
    kinds = re.findall(r'data-kind="(\w+)"', page.text)
    assert kinds == ["registered", "event", "attempt"]
    assert '<dd class="code">200</dd>' in page.text
    assert "12.3 ms" in page.text
    payload = re.search(r'<pre id="payload"[^>]*>(.*?)</pre>', page.text, re.S)
    assert payload is not None
    assert payload.group(1) == (
        "{\n  &#34;id&#34;: &#34;job_done&#34;,\n  &#34;status&#34;: &#34;failed&#34;,\n"
        "  &#34;error&#34;: &#34;&lt;b&gt;boom&lt;/b&gt;&#34;\n}"
    )
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text
    assert "<img" not in page.text
    assert "<b>boom" not in page.text
    for name in ("X-Api-Secret", "authorization", "webhook-signature"):
        assert re.search(rf"<code>{name}</code></th><td><code>[^<]*\*{{8}}</code>", page.text)
    assert "user:pw" not in page.text
    assert "sealed" not in page.text
    assert '<form class="redeliver"' in page.text
    assert '<form class="cancel"' not in page.text


async def test_the_watch_page_masks_the_query_values_of_the_callback(ui: Bridged) -> None:
    """A resume URL's `?signature=` (n8n 2.x) is shown masked, in the watch's details, in the
    redelivery's choice of endpoints and where the sent body is, on the page and in its live
    fragment."""
    resume = "http://127.0.0.1:9/webhook-waiting/77?signature=5f3e9a7c"
    watch = await delivered(ui, callback_url=resume)
    await ui.sign_in()
    for path in (f"/ui/watches/{watch.id}", f"/ui/watches/{watch.id}?fragment=1"):
        page = await ui.client.get(path)
        assert page.status_code == 200
        assert "5f3e9a7c" not in page.text
        shown = "POST http://127.0.0.1:9/webhook-waiting/77?signature=********"
        assert page.text.count(shown) == 3, page.text


async def test_cancel_without_javascript_confirms_on_a_page_then_flashes(ui: Bridged) -> None:
    """The first POST shows a confirmation page; its form's POST (confirm=yes) cancels and
    redirects to the watch page, which says so once."""
    watch_id = await ui.register()
    await ui.sign_in()
    csrf = await ui.csrf(f"/ui/watches/{watch_id}")
    action = f"/ui/watches/{watch_id}/cancel"

    asked = await ui.client.post(action, data={"csrf": csrf})
    assert asked.status_code == 200
    assert f'action="{action}" class="confirm confirm-cancel"' in asked.text
    assert '<input type="hidden" name="confirm" value="yes">' in asked.text
    assert (await ui.client.get(f"/v1/watches/{watch_id}", headers=ACME)).json()[
        "status"
    ] == "active"

    done = await ui.client.post(action, data={"csrf": csrf, "confirm": "yes"})
    assert (done.status_code, done.headers["location"]) == (303, f"/ui/watches/{watch_id}")
    page = await ui.client.get(f"/ui/watches/{watch_id}")
    assert '<p role="status" id="flash">Watch cancelled.</p>' in page.text
    assert 'data-status="cancelled"' in page.text
    assert '<form class="cancel"' not in page.text
    again = await ui.client.get(f"/ui/watches/{watch_id}")
    assert 'id="flash"' not in again.text


async def test_redeliver_sends_again_and_a_refusal_is_flashed(ui: Bridged) -> None:
    """Redeliver (confirmed, the callback ticked) makes a delivered watch deliver again in a
    new series; a second one, while it is delivering, is refused with the service's reason."""
    watch = await delivered(ui)
    await ui.sign_in()
    csrf = await ui.csrf(f"/ui/watches/{watch.id}")
    action = f"/ui/watches/{watch.id}/redeliver"

    done = await ui.client.post(
        action, data={"csrf": csrf, "confirm": "yes", "endpoint": "callback"}
    )

    assert done.status_code == 303
    page = await ui.client.get(f"/ui/watches/{watch.id}")
    started = "Redelivery started to callback (series 2)."
    assert f'<p role="status" id="flash">{started}</p>' in page.text
    stored = await ui.bridge.store.get_watch("acme", watch.id)
    assert stored is not None
    assert stored.status != "delivered"  # delivering again (or already failed once more)
    refused = await ui.client.post(
        action, data={"csrf": csrf, "confirm": "yes", "endpoint": "callback"}
    )
    assert refused.status_code == 303
    page = await ui.client.get(f"/ui/watches/{watch.id}")
    assert re.search(r'id="flash">Not done: watch \S+ is \w+; only delivered', page.text)


async def test_hostile_metadata_is_escaped(ui: Bridged) -> None:
    """Metadata is shown as JSON text, never as markup."""
    watch_id = await ui.register(metadata={"note": "</pre><script>alert(1)</script>"})
    await ui.sign_in()

    page = await ui.client.get(f"/ui/watches/{watch_id}")

    assert "<script>alert" not in page.text
    assert "&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


async def test_pages_forbid_framing_and_outside_scripts(ui: Bridged) -> None:
    """Every page says: no framing, scripts and styles from the bridge only, not cached."""
    for path in ("/ui/login", "/ui/", "/ui/watches/nope", "/ui/nowhere"):
        if path == "/ui/":
            await ui.sign_in()
        response = await ui.client.get(path)
        policy = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy
        assert "script-src 'self'" in policy
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["cache-control"] == "no-store"


async def test_static_files_are_served(ui: Bridged) -> None:
    """The stylesheet and the script come from the bridge itself."""
    assert (
        (await ui.client.get("/ui/static/app.css")).headers["content-type"].startswith("text/css")
    )
    script = await ui.client.get("/ui/static/app.js")
    assert script.status_code == 200
    assert "EventSource" in script.text


async def test_the_health_strip_shows_the_circuit_backlog_and_failure_rate(
    ui: Bridged,
) -> None:
    """The strip reads the bridge's own figures: the circuit's state, the due deliveries gauge
    and the failed share of the last hour's attempts, saying what it counts."""
    await ui.sign_in()
    page = await ui.client.get("/ui/")
    assert "<dd>Closed (polling)</dd>" in page.text
    assert "<dd>No attempts</dd>" in page.text

    ui.bridge.metrics.delivery_backlog.set(7)
    for failed in (True, False, False, False):
        ui.bridge.metrics.recent_attempts.record(ui.clock.now(), failed)
    page = await ui.client.get("/ui/")

    health = re.search(r'<section id="health".*?</section>', page.text, re.S)
    assert health is not None
    assert re.search(r'data-health="backlog">\s*<dt>[^<]+</dt>\s*<dd>7</dd>', health.group(0))
    assert "<dt>Failed attempts, last hour (this process, all tenants)</dt>" in health.group(0)
    assert "<dd>25.0 % (1 of 4 attempts, retries included)</dd>" in health.group(0)


# Live updates.


async def test_fragments_are_the_live_part_only(ui: Bridged) -> None:
    """`?fragment=1` answers the part the script swaps in, without the page around it."""
    watch_id = await ui.register()
    await ui.sign_in()
    for path in ("/ui/?fragment=1", f"/ui/watches/{watch_id}?fragment=1"):
        fragment = await ui.client.get(path)
        assert fragment.status_code == 200
        assert "<html" not in fragment.text
    assert '<table id="watches">' in (await ui.client.get("/ui/?fragment=1")).text
    watch = await ui.client.get(f"/ui/watches/{watch_id}?fragment=1")
    assert '<ol id="timeline">' in watch.text


async def test_pages_carry_the_words_a_live_update_says(ui: Bridged) -> None:
    """The list's rows and the watch's status say what app.js announces when they change; the
    polite live region that says it is on the page, empty, outside the swapped part."""
    watch_id = await ui.register(job_id="job_said")
    await ui.client.delete(f"/v1/watches/{watch_id}", headers=ACME)
    await ui.sign_in()
    region = (
        '<div id="announcer" class="visually-hidden" role="status" aria-live="polite" '
        'aria-atomic="true"></div>'
    )
    said = 'data-announce="Job job_said: cancelled"'
    for path in ("/ui/", f"/ui/watches/{watch_id}"):
        page = (await ui.client.get(path)).text
        assert region in page, path
        assert page.index(region) < page.index('id="live-region"'), path
        assert said in page, path
        fragment = (await ui.client.get(f"{path}?fragment=1")).text
        assert said in fragment, path
        assert 'id="announcer"' not in fragment, path


async def test_the_list_stream_says_changed_when_a_watch_is_registered(ui: Bridged) -> None:
    """An open list stream sends `changed` once a new watch shows on the page."""
    await ui.sign_in()
    page = await ui.client.get("/ui/")
    since = re.search(r'data-fingerprint="([0-9a-f]+)"', page.text)
    assert since is not None

    streaming = asyncio.create_task(
        ui.stream(f"/ui/live?status=&job_id=&cursor=&since={since.group(1)}", b"event: changed")
    )
    await ui.register()
    status, received = await streaming

    assert status == 200
    assert b"event: changed\n" in received


async def test_the_watch_stream_says_changed_when_the_watch_changes(ui: Bridged) -> None:
    """An open watch stream sends `changed` when the watch is cancelled; a stream opened with
    a stale fingerprint says so at once (the change came before it connected)."""
    watch_id = await ui.register()
    await ui.sign_in()
    page = await ui.client.get(f"/ui/watches/{watch_id}")
    since = re.search(r'data-fingerprint="([0-9a-f]+)"', page.text)
    assert since is not None
    path = f"/ui/live?watch_id={watch_id}&since={since.group(1)}"

    streaming = asyncio.create_task(ui.stream(path, b"event: changed"))
    await ui.client.delete(f"/v1/watches/{watch_id}", headers=ACME)
    status, received = await streaming
    assert (status, b"event: changed\n" in received) == (200, True)

    _, again = await ui.stream(path, b"event: changed")  # `since` is stale now
    assert b"event: changed\n" in again


async def test_the_stream_of_another_tenants_watch_is_not_found(ui: Bridged) -> None:
    """404 before any stream starts."""
    theirs = await ui.register(GLOBEX)
    await ui.sign_in()
    assert (await ui.client.get(f"/ui/live?watch_id={theirs}")).status_code == 404


# Configuration.


async def test_the_dashboard_can_be_switched_off(tmp_path: Path) -> None:
    """ui.enabled=false: every /ui route is a 404; the API is unchanged."""
    async for off in serve(tmp_path, BRIDGE_AUTH__TOKENS=TOKENS, BRIDGE_UI__ENABLED="false"):
        for path in ("/ui/", "/ui/login", "/ui/static/app.css", "/ui"):
            assert (await off.client.get(path)).status_code == 404, path
        assert (await off.client.post("/ui/login", data={"token": "x"})).status_code == 404
        assert (await off.client.get("/v1/me", headers=ACME)).status_code == 200


async def test_without_tokens_the_dashboard_is_open_and_says_so(tmp_path: Path) -> None:
    """No tokens (loopback development): pages need no sign-in, the sign-in page says the
    dashboard is open, and actions still need the CSRF token."""
    # The test client's host name is not a loopback one: allow it, as a sidecar would its own.
    async for bare in serve(tmp_path, BRIDGE_SERVER__ALLOWED_HOSTS='["bridge"]'):
        watch_id = await bare.register(headers={})
        page = await bare.client.get("/ui/")
        assert page.status_code == 200
        assert watch_id in page.text
        assert 'id="open-notice"' in (await bare.client.get("/ui/login")).text
        refused = await bare.client.post(f"/ui/watches/{watch_id}/cancel", data={"confirm": "yes"})
        assert refused.status_code == 403
        csrf = await bare.csrf(f"/ui/watches/{watch_id}")
        done = await bare.client.post(
            f"/ui/watches/{watch_id}/cancel", data={"csrf": csrf, "confirm": "yes"}
        )
        assert done.status_code == 303


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/ui/login", [(b"content-type", b"application/x-www-form-urlencoded")]),
        ("/v1/watches", [(b"content-type", b"application/json"),
                         (b"authorization", b"Bearer acme-token")]),
    ],
    ids=["sign-in", "registration"],
)  # fmt: skip
async def test_a_client_gone_halfway_through_its_body_is_no_crash(
    ui: Bridged, path: str, headers: list[tuple[bytes, bytes]]
) -> None:
    """A client that goes away before its body is whole (or whose connection the bridge closed
    for taking too long) is let go: no crash logged with its traceback, which any client could
    otherwise fill the logs with."""
    parts: list[Message] = [
        {"type": "http.request", "body": b'{"job_id', "more_body": True},
        {"type": "http.disconnect"},
    ]
    scope: Scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"host", b"bridge"), (b"content-length", b"100"), *headers],
        "client": ("127.0.0.1", 50000), "server": ("bridge", 80), "state": dict(ui.state),
    }  # fmt: skip

    async def receive() -> Message:
        return parts.pop(0) if parts else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        pass

    with structlog.testing.capture_logs() as logs:
        await ui.app(scope, receive, send)
    assert [entry for entry in logs if entry["log_level"] == "error"] == []
