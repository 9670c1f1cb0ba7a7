"""The bridge's HTTP transports: httpx's transport interface over aiohttp, no redirects, no
cookies.

The upstream client and the webhook sender are given a transport and send each request
straight to it (`httpx.AsyncBaseTransport.handle_async_request`): an `httpx.AsyncClient`'s own
layer (URL merging, cookie jar, auth, redirects, event hooks) has nothing to add to their
requests, only cost (docs/performance.md).
"""

from __future__ import annotations

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from service import ssrf
from service.config import DeliverySettings, SecuritySettings


def transport(connector: aiohttp.TCPConnector) -> httpx.AsyncBaseTransport:
    """Requests through an aiohttp session on `connector`, never following a redirect nor
    decompressing a body (the caller reads it); closing the transport closes the session.

    aiohttp rather than httpx's default transport: several times the throughput under
    concurrency (bench/README.md)."""
    # No cookie jar: a cookie one receiver sets must never reach another watch's receiver.
    session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())
    return AiohttpTransport(client=session)


def delivery_transport(
    delivery: DeliverySettings, security: SecuritySettings
) -> httpx.AsyncBaseTransport:
    """The transport webhooks are sent through: its connector refuses addresses the callback
    policy does not allow, at every connection."""
    connector = ssrf.GuardedConnector(security.callback_policy(), limit=delivery.max_concurrency)
    return transport(connector)
