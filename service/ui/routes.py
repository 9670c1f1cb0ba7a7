"""The dashboard's pages: parse the request, check the sign-in (and the CSRF token of a form),
call the dashboard, render a template. Mounted at `/ui` by `service.app` when `ui.enabled`.

Pages work without JavaScript, where Redeliver and Cancel ask on a page of their own; `app.js`
asks in a dialog instead (Redeliver's offers the same choice of endpoints; Retry now needs none:
it only brings a pending attempt forward) and adds live updates: an EventSource on `/ui/live`
says `changed`, and the page fetches its own URL with `?fragment=1` and swaps the part that
changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import structlog
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from service.api.guard import from_another_site
from service.api.handlers import (
    READ_METHODS,
    RECONNECT_MS,
    SSE_HEADERS,
    WATCH_ID,
    WEBHOOK_ID,
    HeldStream,
    client_address,
    client_gone,
    route,
)
from service.api.problems import STORE_RETRY_AFTER_S
from service.api.state import State
from service.clock import Clock
from service.config import DEFAULT_UPSTREAM, Settings
from service.errors import (
    ApiError,
    NotFound,
    StoreUnavailable,
    TooManyRequests,
    TooManyStreams,
    Unauthorized,
)
from service.event_hub import EventHub
from service.events import iso8601
from service.image_hosts import ImageHost
from service.store.base import DELIVERY_STATES, JOB_OUTCOMES, Watch
from service.subscriptions import MAX_ACTIVE
from service.ui import flash, images, list_filters, trends, words
from service.ui.dashboard import PAGE_SIZE, PAGE_SIZES, Dashboard, WatchPage
from service.ui.recovery_pages import RecoveryPages
from service.ui.session import COOKIE, Session, Sessions
from service.ui.subscription_pages import SubscriptionPages

log = structlog.get_logger("service.ui")
HERE = Path(__file__).parent
MAX_FORM_BYTES = 16 * 1024
# A redelivery's form names at most every endpoint of a final event: its callback and the
# subscriptions, besides a few fields of its own.
MAX_FORM_FIELDS = 10 + 1 + MAX_ACTIVE
# How often a live stream looks for changes (other replicas' changes wake nobody here), and
# how often a quiet one sends a comment so that proxies keep it open.
RECHECK_S = 1.0
KEEPALIVE_S = 15.0
_FINGERPRINT = re.compile(r"^[0-9a-f]{32}$")
# The list's fields by name, as its form labels them (the error summary links to each).
FILTER_LABELS = {
    "outcome": "Job outcome", "delivery": "Delivery", "upstream": "Upstream", "job_id": "Job id",
    "metadata_key": "Metadata key", "metadata_value": "Its value",
    "created_from": "Created from", "created_to": "Created before", "limit": "Per page",
}  # fmt: skip
Handler = Callable[[Request[State], Session], Awaitable[Response]]


def security_headers(image_hosts: tuple[ImageHost, ...]) -> dict[str, str]:
    """Every page's: no framing (the action buttons), no inline script, nothing from elsewhere
    but the images of the hosts the operator listed (`ui.image_hosts`)."""
    policy = (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        f"{images.img_src(image_hosts)}; connect-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }


def _time(value: float | None) -> str:
    return "" if value is None else iso8601(value)


def _when(value: float | None) -> str:
    return "" if value is None else words.when(value)


def _dashboard(request: Request[State]) -> Dashboard:
    state = request.state
    return Dashboard(state["watches"], state["redelivery"], state["subscriptions"])


@dataclass(frozen=True, slots=True)
class Form:
    """A posted form's fields: the first value of each, or every value of one (checkboxes)."""

    fields: dict[str, list[str]]

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.fields.get(name, [default])[0]

    def every(self, name: str) -> list[str]:
        return self.fields.get(name, [])


class Pages:
    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.sessions = Sessions(settings)
        self.clock = clock
        self.image_hosts = settings.ui.image_sources
        self.max_redeliveries = settings.api.max_redeliveries
        self.upstreams = settings.upstream_names
        self.headers = security_headers(self.image_hosts)
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters.update(
            time=_time, when=_when, metadata_line=words.metadata_line, duration=trends.duration,
            number=trends.number, response_note=words.response_note,
        )  # fmt: skip
        self.templates.globals.update(
            geometry=trends.GEOMETRY, delivery_state=words.delivery_of, said=words.said,
            place=words.place, STATUS_LABELS=words.STATUS_LABELS, TONES=words.TONES,
            OUTCOME_LABELS=words.OUTCOME_LABELS, DELIVERY_LABELS=words.DELIVERY_LABELS,
            DELIVERY_STATUS_LABELS=words.DELIVERY_STATUS_LABELS, FILTER_LABELS=FILTER_LABELS,
            PAGE_SIZES=PAGE_SIZES, PAGE_SIZE=PAGE_SIZE, ago=words.ago,
            OUTCOMES=JOB_OUTCOMES, DELIVERY_STATES=DELIVERY_STATES, UPSTREAMS=self.upstreams,
        )  # fmt: skip

    # Plumbing.

    def render(
        self,
        request: Request[State],
        name: str,
        status: int = 200,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        html = self.templates.get_template(name).render(request=request, **context)
        return HTMLResponse(html, status, headers={**self.headers, **(headers or {})})

    def render_with_flash(self, request: Request[State], name: str, **context: Any) -> Response:
        """`render`, with the message the last action left, which is then forgotten."""
        message = flash.read(request)
        response = self.render(request, name, flash=message, **context)
        flash.clear(response, message)
        return response

    async def _session(self, request: Request[State]) -> Session | None:
        """The request's sign-in: its cookie signed, unexpired, and not signed out."""
        session = self.sessions.verify(request.cookies.get(COOKIE), self.clock.now())
        if session is None or not session.id:
            return session
        if await request.state["sign_outs"].revoked(session.id):
            return None
        return session

    def context(self, request: Request[State], session: Session, **context: Any) -> dict[str, Any]:
        return {
            "now": self.clock.now(),  # relative times are said against the request's time
            "session": session,
            "open": self.sessions.open,
            "csrf": self.sessions.csrf(session),
            "may_act": not session.read_only,
            **context,
        }

    def signed_in(self, handler: Handler) -> Callable[[Request[State]], Awaitable[Response]]:
        """The handler, for a signed-in caller; others are sent to the sign-in page. A viewer's
        sign-in gets the pages only: every action (a POST) is refused before its form is read."""

        async def endpoint(request: Request[State]) -> Response:
            session = await self._session(request)
            if session is None:
                return RedirectResponse("/ui/login", 303)
            if session.read_only and request.method not in READ_METHODS:
                log.info("ui.refused_read_only", tenant=session.tenant, path=request.url.path)
                return self.error(
                    request, 403, "Read-only sign-in",
                    f"You signed in with a viewer token: it shows everything of {session.tenant}"
                    " but cannot redeliver, retry, cancel or change anything. Sign in with a "
                    "token of role full to act.", session,
                )  # fmt: skip
            return await handler(request, session)

        return endpoint

    def error(
        self, request: Request[State], status: int, title: str, text: str, session: Session | None
    ) -> HTMLResponse:
        context = self.context(request, session) if session is not None else {"session": None}
        return self.render(request, "error.html", status, title=title, text=text, **context)

    async def form(self, request: Request[State], session: Session | None) -> Form:
        """The urlencoded form of a POST after the same-origin checks (and the CSRF token's,
        when signed in). Raises `HTTPException(403)` when a check fails."""
        if from_another_site(request.headers):
            raise HTTPException(403, "this form was not sent from this dashboard's own pages")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise HTTPException(413, "the form is too large")
        try:
            parsed = parse_qs(body.decode("utf-8", "replace"), max_num_fields=MAX_FORM_FIELDS)
        except ValueError:
            raise HTTPException(400, "the form has too many fields") from None
        form = Form(parsed)
        if session is not None and not self.sessions.check_csrf(session, form.get("csrf")):
            raise HTTPException(
                403, "the form's security token is missing or stale; reload the page and retry"
            )
        return form

    # Signing in and out.

    async def login_form(self, request: Request[State]) -> Response:
        if await self._session(request) is not None and not self.sessions.open:
            return RedirectResponse("/ui/", 303)
        return self.render(request, "login.html", session=None, open=self.sessions.open, error=None)

    async def login(self, request: Request[State]) -> Response:
        form = await self.form(request, None)
        if self.sessions.open:
            return RedirectResponse("/ui/", 303)
        token = (form.get("token") or "").strip()
        try:
            caller = request.state["access"].caller(client_address(request), None, token)
        except TooManyRequests as refused:
            log.info("ui.sign_in_refused", reason="locked out")
            wait = refused.retry_after or "60"
            return self.render(
                request, "login.html", 429, session=None, open=False,
                error=f"Too many failed sign-ins from this address. Try again in {wait} seconds.",
                headers={"Retry-After": wait},
            )  # fmt: skip
        except Unauthorized:
            log.info("ui.sign_in_refused")
            return self.render(
                request, "login.html", 401, session=None, open=False,
                error="That token is not valid for this bridge.",
            )  # fmt: skip
        session = self.sessions.issue(caller.token, self.clock.now())
        log.info("ui.signed_in", tenant=caller.tenant, read_only=caller.read_only)
        response = RedirectResponse("/ui/", 303)
        response.set_cookie(
            COOKIE, session.value, max_age=self.sessions.lifetime_s, path="/ui",
            secure=flash.secure(request), httponly=True, samesite="strict",
        )  # fmt: skip
        return response

    async def logout(self, request: Request[State]) -> Response:
        session = await self._session(request)
        if session is not None:
            await self.form(request, session)
        if session is not None and session.id:  # without tokens there is no sign-in to end
            # Deleting the cookie is not enough: a copy of it would stay good until it expires.
            await request.state["sign_outs"].revoke(session.id, session.expires_at)
            log.info("ui.signed_out", tenant=session.tenant)
        response = RedirectResponse("/ui/login", 303)
        response.delete_cookie(
            COOKIE, path="/ui", secure=flash.secure(request), httponly=True, samesite="strict"
        )
        return response

    # Pages.

    async def watches(self, request: Request[State], session: Session) -> Response:
        shown = list_filters.shown(request)
        query = {name: value for name, value in shown.items() if value}
        filtered = any(value for name, value in query.items() if name != "limit")
        try:
            chosen, cursor, size = list_filters.read(request)
        except list_filters.BadFilters as bad:
            # The form as it was sent, each message next to its field; no list.
            context = self.context(
                request, session, page=None, filters=shown, filtered=filtered, errors=bad.errors
            )
            return self.render(request, "watches.html", 400, flash=None, **context)
        dashboard = _dashboard(request)
        page = await dashboard.list_page(session.tenant, chosen, cursor, size)
        older = newest = None
        if page.next_cursor is not None:
            older = "/ui/?" + urlencode({**query, "cursor": page.next_cursor})
        if cursor is not None:
            newest = "/ui/?" + urlencode(query)
        # The failed webhooks the filters show can be redelivered together.
        recover = None
        if chosen.delivery == "failed" and page.total and not session.read_only:
            recover = "/ui/redeliver-failed?" + urlencode(query)
        context = self.context(
            request, session, page=page, filters=shown, filtered=filtered, errors={},
            older=older, newest=newest, upstream_column=self._upstream_column(page.watches),
            health=request.state["monitor"].health(),
            live="/ui/live?" + urlencode({**query, "cursor": cursor or ""}),
            recover=recover, recover_count=min(page.total, self.max_redeliveries),
        )  # fmt: skip
        if request.query_params.get("fragment") == "1":
            return self.render(request, "_watches_live.html", **context)
        # Drawn once per page load: live updates refresh the list, not the day's trends.
        trend = trends.trends(await dashboard.watches.trend(session.tenant))
        return self.render_with_flash(request, "watches.html", trend=trend, **context)

    def _upstream_column(self, watches: list[Watch]) -> bool:
        """Whether the list shows each watch's upstream: when several are configured, or a
        watch shown is of another than the default (one no longer configured)."""
        several = len(self.upstreams) > 1
        return several or any(watch.upstream != DEFAULT_UPSTREAM for watch in watches)

    async def watch(self, request: Request[State], session: Session) -> Response:
        watch_id = str(request.path_params["watch_id"])
        page = await _watch_page(_dashboard(request), session, watch_id)
        if page is None:
            return self._no_watch(request, session)
        context = self.context(
            request, session, page=page, images=images.shown(page.image_urls, self.image_hosts),
            live="/ui/live?" + urlencode({"watch_id": watch_id}),
        )  # fmt: skip
        if request.query_params.get("fragment") == "1":
            return self.render(request, "_watch_live.html", flash=None, **context)
        return self.render_with_flash(request, "watch.html", **context)

    def _no_watch(self, request: Request[State], session: Session) -> Response:
        return self.error(
            request, 404, "Not found", "There is no such watch for this token.", session
        )

    def action(
        self, verb: str, act: Callable[[Dashboard, str, str, Form], Awaitable[str]]
    ) -> Handler:
        """A watch's Redeliver or Cancel: its confirmation page, then `act`, which says what it
        did; back to the watch page with that, or with why it was not done."""

        async def handler(request: Request[State], session: Session) -> Response:
            form = await self.form(request, session)
            watch_id = str(request.path_params["watch_id"])
            dashboard = _dashboard(request)
            page = await _watch_page(dashboard, session, watch_id)
            if page is None:
                return self._no_watch(request, session)
            if form.get("confirm") != "yes":
                context = self.context(request, session, page=page, verb=verb)
                return self.render(request, "confirm.html", **context)
            try:
                message = await act(dashboard, session.tenant, watch_id, form)
            except ApiError as refused:
                message = f"Not done: {refused.message}"
            log.info("ui.action", verb=verb, watch_id=watch_id, result=message)
            return flash.redirect(request, f"/ui/watches/{watch_id}", message)

        return handler

    async def retry(self, request: Request[State], session: Session) -> Response:
        """Retry now (a pending delivery's next attempt): no confirmation, it only brings
        forward an attempt that was going to be made; back to the watch page with a flash."""
        await self.form(request, session)
        watch_id = str(request.path_params["watch_id"])
        delivery_id = str(request.path_params["delivery_id"])
        if not (WATCH_ID.match(watch_id) and WEBHOOK_ID.match(delivery_id)):
            return self._no_watch(request, session)
        watches = request.state["watches"]
        try:
            retried = await watches.retry(session.tenant, watch_id, delivery_id)
        except NotFound:
            return self._no_watch(request, session)
        except ApiError as refused:
            message = f"Not done: {refused.message}"
        else:
            most = watches.max_attempts
            message = (
                f"Retry started: attempt {min(retried.attempts + 1, most)} of {most} of "
                f"{delivery_id} is made now."
            )
        log.info("ui.action", verb="retry", watch_id=watch_id, webhook_id=delivery_id,
                 result=message)  # fmt: skip
        return flash.redirect(request, f"/ui/watches/{watch_id}", message)

    async def live(self, request: Request[State]) -> Response:
        """`event: changed` whenever what the page shows changed (its fingerprint): at once
        for this process's events of a watch, within `RECHECK_S` for anything else. The
        stream ends within `RECHECK_S` of its sign-in ending (signed out, or expired)."""
        session = await self._session(request)
        if session is None:
            return Response("sign in first", 401, media_type="text/plain")
        dashboard = _dashboard(request)
        since = request.headers.get("last-event-id") or request.query_params.get("since")
        previous = since if since and _FINGERPRINT.match(since) else None
        watch_id = request.query_params.get("watch_id")
        fingerprint: Callable[[], Awaitable[str | None]]
        if watch_id is not None:
            if not WATCH_ID.match(watch_id):
                return Response("no such watch", 404, media_type="text/plain")
            fingerprint = functools.partial(dashboard.watch_fingerprint, session.tenant, watch_id)
        else:
            try:
                chosen, cursor, size = list_filters.read(request)
            except list_filters.BadFilters as bad:
                message = "; ".join(f"{name}: {text}" for name, text in bad.errors.items())
                return Response(message, 400, media_type="text/plain")

            async def fingerprint() -> str | None:
                page = await dashboard.list_page(session.tenant, chosen, cursor, size)
                return page.fingerprint

        if await fingerprint() is None:
            return Response("no such watch", 404, media_type="text/plain")
        if request.method == "HEAD":  # the headers only, not a stream held open for nothing
            return Response(None, headers=SSE_HEADERS, media_type="text/event-stream")

        async def signed_in() -> bool:
            return await self._session(request) is not None

        try:
            close = request.state["streams"].open(session.tenant)
        except TooManyStreams as full:
            return Response(full.message, 429, media_type="text/plain")
        hub = request.state["feed"].hub
        stream = _changes(hub, watch_id, fingerprint, previous, signed_in)
        return HeldStream(stream, close, headers=SSE_HEADERS, media_type="text/event-stream")


async def _changes(
    hub: EventHub,
    watch_id: str | None,
    fingerprint: Callable[[], Awaitable[str | None]],
    previous: str | None,
    signed_in: Callable[[], Awaitable[bool]],
) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    yield b"retry: %d\n\n" % RECONNECT_MS
    # The list's stream listens to no watch: only the hub's closing wakes it.
    with hub.listen(watch_id) as listener:
        keepalive_at = loop.time() + KEEPALIVE_S
        while True:
            try:
                current = await fingerprint()
            except StoreUnavailable:  # logged once per outage; looked at again next time
                current = previous
            else:
                if current is None:
                    return  # the watch is gone
            if current is not None and previous is not None and current != previous:
                # The id comes back as Last-Event-ID when the browser reconnects.
                yield b"id: %s\nevent: changed\ndata: %s\n\n" % (current.encode(), current.encode())
                keepalive_at = loop.time() + KEEPALIVE_S
            previous = current
            if loop.time() >= keepalive_at:
                yield b": keep-alive\n\n"
                keepalive_at = loop.time() + KEEPALIVE_S
            await listener.wait(RECHECK_S)
            if hub.closed:
                return  # shutting down: the browser reconnects to another process
            with contextlib.suppress(StoreUnavailable):  # asked again next time
                if not await signed_in():
                    return  # the browser reconnects, and is refused


async def _watch_page(dashboard: Dashboard, session: Session, watch_id: str) -> WatchPage | None:
    """The watch's page for the session's tenant; None when there is no such watch for it."""
    if not WATCH_ID.match(watch_id):
        return None
    return await dashboard.watch_page(session.tenant, watch_id)


async def _redeliver(dashboard: Dashboard, tenant: str, watch_id: str, form: Form) -> str:
    return await dashboard.redeliver(tenant, watch_id, form.every("endpoint"))


async def _cancel(dashboard: Dashboard, tenant: str, watch_id: str, form: Form) -> str:
    await dashboard.watches.cancel(tenant, watch_id)
    return "Watch cancelled."


def create_ui_app(settings: Settings, clock: Clock) -> Starlette:
    pages = Pages(settings, clock)
    subscriptions = SubscriptionPages(pages)
    recovery = RecoveryPages(pages)

    # Starlette types its exception handlers' requests without the lifespan's `State`, which
    # they hold all the same.
    async def http_error(request: Request[Any], error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        titles = {403: "Refused", 404: "Not found", 405: "Not allowed", 413: "Too large"}
        title = titles.get(error.status_code, "Error")
        text = str(error.detail) if error.status_code not in (404, 405) else (
            "There is no such page." if error.status_code == 404 else
            f"{request.method} is not allowed here."
        )  # fmt: skip
        try:
            session = await pages._session(request)
        except StoreUnavailable:  # the page without the signed-in parts
            session = None
        response = pages.error(request, error.status_code, title, text, session)
        response.headers.update(dict(error.headers or {}))
        return response

    async def unavailable(request: Request[Any], error: Exception) -> Response:
        # No log line here: the store's health logged the outage once, with the reason.
        response = pages.error(
            request, 503, "Store unavailable",
            f"The bridge cannot use its store for now. Try again in {STORE_RETRY_AFTER_S}"
            " seconds.", None,
        )  # fmt: skip
        response.headers["Retry-After"] = str(STORE_RETRY_AFTER_S)
        return response

    async def crash(request: Request[Any], error: Exception) -> Response:
        log.exception("ui.crashed", path=request.url.path)
        return pages.error(request, 500, "Internal error", "The bridge failed; see its logs.", None)

    signed_in = pages.signed_in
    routes = [
        route("/", GET=signed_in(pages.watches)),
        route("/login", GET=pages.login_form, POST=pages.login),
        route("/logout", POST=pages.logout),
        route("/live", GET=pages.live),
        route("/watches/{watch_id}", GET=signed_in(pages.watch)),
        route(
            "/watches/{watch_id}/redeliver", POST=signed_in(pages.action("redeliver", _redeliver))
        ),
        route("/watches/{watch_id}/cancel", POST=signed_in(pages.action("cancel", _cancel))),
        route("/redeliver-failed", POST=signed_in(recovery.recover)),
        route("/watches/{watch_id}/deliveries/{delivery_id}/retry", POST=signed_in(pages.retry)),
        route("/subscriptions", GET=signed_in(subscriptions.list)),
        route("/subscriptions/{subscription_id}/{verb}", POST=signed_in(subscriptions.act)),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={
            HTTPException: http_error,
            StoreUnavailable: unavailable,
            ClientDisconnect: client_gone,
            Exception: crash,
        },
    )
