"""The redelivery of the failed webhooks a filtered list shows ("Redeliver N failed", as an
endpoint's "recover" elsewhere): its confirmation page, which says how many watches and which
endpoints, then the action, back to the list with what it did. Both go through the redelivery
service; the forms work without JavaScript."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlencode

import structlog
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from service.api.responses import public_url
from service.api.state import State
from service.redelivery import Recovery
from service.ui import flash, list_filters
from service.ui.session import Session

if TYPE_CHECKING:  # `routes` imports this module for its routes
    from service.ui.routes import Pages

log = structlog.get_logger("service.ui")


class RecoveryPages:
    """The confirmation and the action; `pages` is the dashboard's `Pages` (rendering,
    sign-in, forms)."""

    def __init__(self, pages: Pages) -> None:
        self._pages = pages

    async def recover(self, request: Request[State], session: Session) -> Response:
        form = await self._pages.form(request, session)
        shown = list_filters.shown(request)
        back = "/ui/?" + urlencode({name: value for name, value in shown.items() if value})
        try:
            chosen, _, _ = list_filters.read(request)
        except list_filters.BadFilters:
            return RedirectResponse(back, 303)  # the list says what to fix
        service = request.state["redelivery"]
        if form.get("confirm") != "yes":
            plan = await service.plan(session.tenant, chosen)
            found = await request.state["subscriptions"].list(session.tenant)
            context = self._pages.context(
                request, session, recovery=plan, filters=shown, back=back,
                action=f"{request.url.path}?{request.url.query}",
                urls={subscription.id: public_url(subscription.url) for subscription in found},
            )  # fmt: skip
            return self._pages.render(request, "recover_confirm.html", **context)
        recovery = await service.recover(session.tenant, chosen)
        message = said(recovery)
        log.info("ui.action", verb="recover", result=message)
        return flash.redirect(request, back, message)


def said(recovery: Recovery) -> str:
    """What a redelivery of failed webhooks did, in a few sentences."""
    done = len(recovery.redelivered)
    if not done:
        return "Not done: none of the failed watches matched had anything left to send."
    counted = recovery.endpoints()
    where = ", ".join(
        f"to {'the callback' if key == 'callback' else 'subscription ' + key} of {n}"
        for key, n in counted.items()
    )
    words = [f"Redelivery started for {done} watch{'es' if done > 1 else ''}: {where}."]
    if recovery.unsendable:
        words.append(f"{len(recovery.unsendable)} had nothing left to send.")
    if recovery.left:
        words.append(
            f"{recovery.left} more failed watches match: redeliver again for the next "
            f"{min(recovery.left, recovery.limit)}."
        )
    return " ".join(words)
