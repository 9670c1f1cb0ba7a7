"""The bridge's HTTP clients: httpx on aiohttp's transport, no redirects, no cookies."""

from __future__ import annotations

from http.cookiejar import CookieJar, DefaultCookiePolicy

import aiohttp
import httpx

from service import ssrf
from service.aiohttp_transport import AiohttpTransport
from service.config import DeliverySettings, SecuritySettings


def session(connector: aiohttp.TCPConnector) -> aiohttp.ClientSession:
    # No cookie jar: a cookie one receiver sets must never reach another watch's receiver.
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())


def http_client(client_session: aiohttp.ClientSession, timeout_s: float) -> httpx.AsyncClient:
    # The aiohttp transport: several times the throughput of httpx's default one under
    # concurrency (bench/README.md). Redirects are never followed; cookies never kept.
    return httpx.AsyncClient(
        transport=AiohttpTransport(client_session),
        timeout=timeout_s,
        follow_redirects=False,
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
    )


def delivery_client(delivery: DeliverySettings, security: SecuritySettings) -> httpx.AsyncClient:
    """The client webhooks are sent with: its connector refuses addresses the callback policy
    does not allow, at every connection."""
    connector = ssrf.guarded_connector(security.callback_policy(), limit=delivery.max_concurrency)
    return http_client(session(connector), delivery.timeout_s)
