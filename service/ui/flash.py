"""The one-line message a page shows once after an action (a cookie read by the next page)."""

from __future__ import annotations

import base64
import binascii

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from service.api.state import State
from service.config import is_loopback

COOKIE = "bridge_ui_flash"


def read(request: Request[State]) -> str | None:
    value = request.cookies.get(COOKIE)
    if not value:
        return None
    try:
        return base64.urlsafe_b64decode(value.encode()).decode()[:500]
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def redirect(request: Request[State], url: str, message: str) -> Response:
    """See `url`, which shows `message` once."""
    response = RedirectResponse(url, 303)
    response.set_cookie(
        COOKIE, base64.urlsafe_b64encode(message.encode()).decode(), max_age=60, path="/ui",
        secure=secure(request), httponly=True, samesite="strict",
    )  # fmt: skip
    return response


def clear(response: Response, message: str | None) -> None:
    """Forget the message once shown (`message` None: there was none)."""
    if message is not None:
        response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict")


def secure(request: Request[State]) -> bool:
    """Mark cookies Secure over https, and on loopback addresses, which browsers treat as
    secure contexts even over plain http (and where a Secure cookie is kept). Over plain http
    to any other host a browser would drop a Secure cookie, and sign-in could never succeed:
    serve the dashboard over https there."""
    return request.url.scheme == "https" or is_loopback(request.url.hostname or "")
