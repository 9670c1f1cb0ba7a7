"""httpx requests sent over an aiohttp session: httpx's API and aiohttp's speed.

The bridge's own take on `httpx_aiohttp.AiohttpTransport`, for the only sessions the bridge
makes (no proxy, no client certificate, plain or TLS by the URL): per request it skips what that
transport rebuilds every time (the timeout object, httpx's header mapping walked through
aiohttp's, the proxy arguments), which is a tenth of a poll's CPU at thousands of polls per
second. Errors are mapped to httpx's exactly as that transport maps them
(`map_aiohttp_exceptions`), so callers see the same exception types and causes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp.transport import map_aiohttp_exceptions

# Bigger than any answer the bridge reads whole (upstream statuses, receivers' first bytes).
_CHUNK_BYTES = 64 * 1024


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Send each httpx request through `session`; closing the transport (the httpx client)
    closes the session.

    Redirects are never followed and bodies are neither compressed nor decompressed by
    aiohttp (httpx decodes what it reads), as with httpx's own transports."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self._timeouts: dict[tuple[Any, ...], aiohttp.ClientTimeout] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        data: bytes | httpx.AsyncByteStream | None
        try:
            data = request.content or None
        except httpx.RequestNotRead:  # a streamed body: aiohttp chunks it itself
            data = request.stream  # type: ignore[assignment]
            request.headers.pop("transfer-encoding", None)
        with map_aiohttp_exceptions():
            response = await self.session._request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=data,
                allow_redirects=False,
                auto_decompress=False,
                compress=False,
                timeout=self._timeout(request.extensions.get("timeout") or {}),
                server_hostname=request.extensions.get("sni_hostname"),
            )
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode()
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_ResponseStream(response),
            request=request,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        await self.session.close()

    def _timeout(self, timeouts: dict[str, float | None]) -> aiohttp.ClientTimeout:
        # httpx's timeouts are the client's, the same for nearly every request: build once.
        key = (timeouts.get("connect"), timeouts.get("read"), timeouts.get("pool"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = aiohttp.ClientTimeout(sock_connect=key[0], sock_read=key[1], connect=key[2])
            self._timeouts[key] = timeout
        return timeout


class _ResponseStream(httpx.AsyncByteStream):
    """The raw (still encoded) body of an aiohttp response, as httpx reads it."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with map_aiohttp_exceptions():
            async for chunk in self._response.content.iter_chunked(_CHUNK_BYTES):
                yield chunk

    async def aclose(self) -> None:
        with map_aiohttp_exceptions():
            await self._response.__aexit__(None, None, None)
