"""Checks every request of the API port passes before it is routed: how many header fields it
has, which host it was addressed to, and, for the API, whether a browser says another site
sent it.

Without tokens (`make run`, a sidecar) the API trusts whoever can reach it, which a web page
open in a browser on the same machine can: with a "simple" cross-site request (a form's
`text/plain` POST) or with a DNS name of its own that resolves to 127.0.0.1 (rebinding). So:

- a request addressed to a host other than a loopback name or `server.allowed_hosts` is
  refused when there are no tokens (or when `allowed_hosts` is set);
- a request under `/v1` that a browser marks as sent by another site (`Sec-Fetch-Site`, or an
  `Origin` whose host is not the request's) is refused whatever the tokens: the API serves no
  browser page, and answers no CORS preflight, so no other site has a reason to call it;
- JSON bodies must say `Content-Type: application/json` (the handlers check it: 415).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.problems import problem
from service.config import Settings, is_loopback

# Browsers' `Sec-Fetch-Site` values of a request the API's own origin (or the user) made.
_OWN_SITE = frozenset({"same-origin", "none"})


class RequestGuard:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self._max_headers = settings.server.max_headers
        allowed = settings.server.allowed_hosts
        self._check_host = bool(allowed) or not settings.auth.tokens
        self._hosts = frozenset(host.strip("[]") for host in allowed if not host.startswith("*."))
        self._suffixes = tuple(host[1:] for host in allowed if host.startswith("*."))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = self._refusal(scope) if scope["type"] == "http" else None
        if refusal is not None:
            await refusal(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> Response | None:
        raw = scope["headers"]
        if len(raw) > self._max_headers:
            return problem(
                431, "too-many-headers", "Too many header fields",
                f"the request has {len(raw)} header fields; at most {self._max_headers} are "
                "accepted (server.max_headers)",
            )  # fmt: skip
        headers = Headers(raw=raw)
        host = _host_name(headers.get("host", ""))
        if self._check_host and not self._host_allowed(host):
            return problem(
                421, "host-not-allowed", "Host not served",
                f"this bridge does not answer requests addressed to {host[:80]!r}: without "
                "auth.tokens it answers only loopback names (localhost, 127.0.0.1, [::1]) and "
                "the names in server.allowed_hosts; add the name there",
            )  # fmt: skip
        if scope["path"].startswith("/v1/") and from_another_site(headers):
            return problem(
                403, "cross-site-request", "Cross-site request refused",
                "a browser says another site sent this request (Origin or Sec-Fetch-Site); "
                "the API takes no requests from web pages of other sites",
            )  # fmt: skip
        return None

    def _host_allowed(self, host: str) -> bool:
        return (
            is_loopback(host)
            or host in self._hosts
            or (bool(self._suffixes) and host.endswith(self._suffixes))
        )


def _host_name(value: str) -> str:
    """The lower-case host of a `Host` header, without its port ("" when it has none)."""
    try:
        return (urlsplit(f"//{value}").hostname or "").lower()
    except ValueError:
        return ""


def from_another_site(headers: Headers) -> bool:
    """Whether a browser says another site sent the request: `Sec-Fetch-Site`, or an `Origin`
    whose host is not the request's. Clients that send neither are not browsers acting for
    another site."""
    site = headers.get("sec-fetch-site")
    if site is not None and site not in _OWN_SITE:
        return True
    origin = headers.get("origin")
    if origin is None:
        return False
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return True
    return origin == "null" or netloc != headers.get("host")
