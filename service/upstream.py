"""The upstream job API: one GET per poll, and the reading of its answers.

`read_answer` is pure: it turns a status code, headers and body into an `Observation`, the
only thing the polling rules look at. `UpstreamClient` makes the requests, sharing one
in-flight request between every watch of the same job and key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import httpx
import orjson

Kind = Literal["progress", "terminal", "refused", "transient"]
PROGRESS_STATUSES = frozenset({"queued", "processing"})
TERMINAL_STATUSES = frozenset({"succeeded", "failed"})
# Upstream answers that end a watch with a failure the bridge decides itself.
REFUSALS: Mapping[int, tuple[str, str]] = {
    400: ("bad_request", "the upstream refused the request as malformed (400)"),
    401: ("unauthorized", "the upstream refused the API key (401)"),
    403: ("unauthorized", "the upstream refused the API key (403)"),
    404: ("not_found", "the upstream does not know this job (404)"),
}
_MAX_ERROR_TEXT = 200


@dataclass(frozen=True, slots=True)
class Observation:
    """What one poll saw."""

    kind: Kind
    job_status: str | None = None
    queue_position: int | None = None
    # The upstream's body exactly as sent, and parsed, when it was a JSON object.
    body: bytes | None = None
    document: dict[str, Any] | None = None
    error_code: str | None = None
    error: str | None = None
    retry_after: str | None = None
    http_status: int | None = None


def _upstream_message(document: dict[str, Any] | None) -> str | None:
    if document is not None and isinstance(document.get("error"), str):
        return str(document["error"])[:_MAX_ERROR_TEXT]
    return None


def read_answer(status: int, headers: Mapping[str, str], body: bytes) -> Observation:
    """Classify one upstream answer."""
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    document = parsed if isinstance(parsed, dict) else None

    if status in REFUSALS:
        code, sentence = REFUSALS[status]
        message = _upstream_message(document)
        error = f"{sentence}: {message}" if message else sentence
        return Observation(
            "refused", body=body, document=document, error_code=code, error=error,
            http_status=status,
        )  # fmt: skip
    if status != 200:
        kind_of = "rate limited" if status == 429 else f"answered HTTP {status}"
        return Observation(
            "transient", error=f"upstream {kind_of}", retry_after=headers.get("retry-after"),
            http_status=status,
        )  # fmt: skip
    if document is None:
        return Observation(
            "transient", error="upstream answered a body that is not a JSON object",
            http_status=status,
        )  # fmt: skip
    job_status = document.get("status")
    if job_status in PROGRESS_STATUSES:
        position = document.get("queue_position")
        ok_position = isinstance(position, int) and not isinstance(position, bool)
        return Observation(
            "progress", job_status=str(job_status),
            queue_position=position if ok_position else None,
            body=body, document=document, http_status=status,
        )  # fmt: skip
    if job_status in TERMINAL_STATUSES:
        return Observation(
            "terminal", job_status=str(job_status), body=body, document=document,
            http_status=status,
        )  # fmt: skip
    shown = repr(job_status)[:40]
    return Observation(
        "transient", error=f"upstream answered an unknown status {shown}", http_status=status
    )


def network_failure(error: BaseException) -> Observation:
    """The observation of a request that got no answer."""
    # The aiohttp transport reports most connection errors as httpx.ConnectTimeout: judge by
    # the original error underneath.
    root = error.__cause__ or error
    timed_out = isinstance(error, TimeoutError) or isinstance(root, TimeoutError)
    if timed_out or (root is error and isinstance(error, httpx.TimeoutException)):
        text = "upstream did not answer in time"
    else:
        detail = str(root) or type(root).__name__
        text = f"upstream request failed: {detail}"[:_MAX_ERROR_TEXT]
    return Observation("transient", error=text)


class UpstreamClient:
    """GETs job statuses. One request is in flight per (job, key) at a time; concurrent
    callers for the same pair share its observation."""

    def __init__(self, client: httpx.AsyncClient, base_url: str, timeout_s: float) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        self._timeout = timeout_s
        self._in_flight: dict[tuple[str, str | None], asyncio.Future[Observation]] = {}
        self.requests = 0
        self.last_duration_s = 0.0

    async def fetch(self, job_id: str, api_key: str | None) -> Observation:
        key = (job_id, api_key)
        shared = self._in_flight.get(key)
        if shared is not None:
            return await asyncio.shield(shared)
        future: asyncio.Future[Observation] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            observation = await self._get(job_id, api_key)
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # marks it retrieved when nobody shares it
            raise
        else:
            future.set_result(observation)
            return observation
        finally:
            del self._in_flight[key]

    async def _get(self, job_id: str, api_key: str | None) -> Observation:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        url = f"{self._base}/api/v1/generate/{quote(job_id, safe='')}"
        self.requests += 1
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._client.get(url, headers=headers)
        except (httpx.HTTPError, OSError, TimeoutError) as error:
            return network_failure(error)
        except Exception as error:  # keep polling, and say why, whatever the client raised
            return network_failure(error)
        finally:
            self.last_duration_s = time.perf_counter() - started
        return read_answer(response.status_code, response.headers, response.content)
