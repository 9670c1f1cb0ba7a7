"""The subscriptions page (`/ui/subscriptions`): each subscription of the tenant, its health over
the last day, and the forms that test, disable or enable it and rotate its secret. Everything
goes through the subscription service; the forms work without JavaScript."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from starlette.requests import Request
from starlette.responses import Response

from service.api.handlers import SUBSCRIPTION_ID
from service.api.responses import public_url
from service.api.state import State
from service.errors import ApiError, NotFound
from service.store.base import Subscription, SubscriptionHealth
from service.subscriptions import HEALTH_WINDOW_S, ROTATION_OVERLAP_S, SubscriptionService
from service.ui import flash
from service.ui.session import Session

if TYPE_CHECKING:  # `routes` imports this module for its routes
    from service.ui.routes import Pages

log = structlog.get_logger("service.ui")
# The actions of the page that ask to be confirmed first (they stop or change deliveries).
CONFIRMED = ("disable", "rotate")
ACTIONS = ("test", "disable", "enable", "rotate")


@dataclass(frozen=True, slots=True)
class SubscriptionLine:
    """A subscription as the page shows it: its URL masked as the API masks it."""

    subscription: Subscription
    url: str
    health: SubscriptionHealth | None  # None: no attempt in the window

    @property
    def success_percent(self) -> int | None:
        health = self.health
        if health is None or not health.attempts:
            return None
        return round(100 * health.succeeded / health.attempts)


class SubscriptionPages:
    """The page and its actions; `pages` is the dashboard's `Pages` (rendering, sign-in,
    forms)."""

    def __init__(self, pages: Pages) -> None:
        self._pages = pages

    async def list(self, request: Request[State], session: Session) -> Response:
        service: SubscriptionService = request.state["subscriptions"]
        found = await service.list(session.tenant)
        health = await service.health(session.tenant)
        shown = [SubscriptionLine(s, public_url(s.url), health.get(s.id)) for s in found]
        return self._pages.render_with_flash(
            request, "subscriptions.html",
            **self._pages.context(request, session, subscriptions=shown,
                                window_h=HEALTH_WINDOW_S // 3600,
                                overlap_h=ROTATION_OVERLAP_S // 3600),
        )  # fmt: skip

    async def act(self, request: Request[State], session: Session) -> Response:
        form = await self._pages.form(request, session)
        subscription_id = str(request.path_params["subscription_id"])
        verb = str(request.path_params["verb"])
        service: SubscriptionService = request.state["subscriptions"]
        if verb not in ACTIONS or not SUBSCRIPTION_ID.fullmatch(subscription_id):
            return self._none(request, session)
        try:
            subscription = await service.get(session.tenant, subscription_id)
            if subscription.status not in ("active", "disabled"):
                raise NotFound(f"no subscription {subscription_id}")
            if verb in CONFIRMED and form.get("confirm") != "yes":
                context = self._pages.context(
                    request, session, verb=verb, url=public_url(subscription.url),
                    subscription=subscription, overlap_h=ROTATION_OVERLAP_S // 3600,
                )  # fmt: skip
                return self._pages.render(request, "subscription_confirm.html", **context)
            if verb == "rotate":
                rotated = await service.rotate(session.tenant, subscription_id)
                log.info("ui.action", verb=verb, subscription_id=subscription_id)
                context = self._pages.context(
                    request, session, subscription=rotated.subscription, secret=rotated.secret
                )
                return self._pages.render(request, "subscription_secret.html", **context)
            message = await _done(service, session.tenant, subscription_id, verb)
        except NotFound:
            return self._none(request, session)
        except ApiError as refused:
            message = f"Not done: {refused.message}"
        log.info("ui.action", verb=verb, subscription_id=subscription_id, result=message)
        return flash.redirect(request, f"/ui/subscriptions#{subscription_id}", message)

    def _none(self, request: Request[State], session: Session) -> Response:
        return self._pages.error(
            request, 404, "Not found", "There is no such subscription for this token.", session
        )


async def _done(service: SubscriptionService, tenant: str, subscription_id: str, verb: str) -> str:
    """Carry out a test, disabling or enabling; the sentence saying how it went."""
    if verb == "test":
        sent = await service.send_test(tenant, subscription_id)
        answer = f"answered {sent.status_code}" if sent.status_code is not None else "got no answer"
        why = f" ({sent.error})" if sent.error and not sent.succeeded else ""
        return (
            f"Test event {sent.message_id} sent to {subscription_id}: the receiver {answer}"
            f"{why} in {round(sent.duration_s * 1000)} ms."
        )
    if verb == "disable":
        await service.set_enabled(tenant, subscription_id, False)
        return (
            f"{subscription_id} disabled: it gets no new deliveries; pending ones were cancelled."
        )
    await service.set_enabled(tenant, subscription_id, True)
    return f"{subscription_id} enabled: it gets the events recorded from now on."
