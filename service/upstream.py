"""The upstream job API: one GET per poll, and the reading of its answers.

`read_answer` is pure: it turns a status code, headers and body into an `Observation`, the
only thing the polling rules look at. `UpstreamClient` makes the requests, sharing one
in-flight request between every watch of the same job and key. It also makes the one POST that
starts a job (`create`, for `POST /v1/generate`), whose answer `read_creation` reads.

No text the upstream sends reaches a tenant with a key in it: the key a request carried and
the bridge's own are masked (`Secrets`), and a refusal of the bridge's own key says only that.

Whatever the upstream answers costs bounded time and memory: the whole request is under the
timeout, the body is read (and decoded, `service.decoding`) up to a cap, and answers that are
too large, encoded twice, not JSON, nested too deeply or of the wrong types are transient
failures that say why (never a crash).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import httpx
import orjson

from service import USER_AGENT, decoding
from service.observation import Observation

PROGRESS_STATUSES = frozenset({"queued", "processing"})
TERMINAL_STATUSES = frozenset({"succeeded", "failed"})
# Each known status as one string: every held watch keeps the last status it saw, and a parsed
# body makes a new string each time.
_KNOWN_STATUSES = {status: status for status in PROGRESS_STATUSES | TERMINAL_STATUSES}
# Upstream answers that end a watch with a failure the bridge decides itself.
REFUSALS: Mapping[int, tuple[str, str]] = {
    400: ("bad_request", "the upstream refused the request as malformed (400)"),
    401: ("unauthorized", "the upstream refused the API key (401)"),
    403: ("unauthorized", "the upstream refused the API key (403)"),
    404: ("not_found", "the upstream does not know this job (404)"),
}
# The refusal of the bridge's own key (upstream.api_key): the upstream's words are not relayed.
BRIDGE_KEY_REFUSED = "the upstream refused the bridge's key"
REDACTED = "********"
_MAX_ERROR_TEXT = 200
# A job's status is a few KiB; reading stops past this.
DEFAULT_MAX_BODY_BYTES = 1 << 20
# Real answers nest a handful of levels; the bridge re-serializes what it keeps (orjson stops
# at 255 levels), so deeper documents are refused at the door.
MAX_DEPTH = 64
# The store keeps queue positions in a 64-bit column; a real queue is far shorter.
_MAX_QUEUE_POSITION = 2**31 - 1
# A job id the bridge watches: one segment of the upstream's path. No leading dot: "." and ".."
# would be read as other paths of the upstream (its API root), polled with the bridge's key.
JOB_ID = re.compile(r"^[A-Za-z0-9_:\-][A-Za-z0-9_.:\-]{0,127}$")
JOB_ID_RULE = "1 to 128 characters among A-Z a-z 0-9 _ . : - that do not start with a dot"


@dataclass(frozen=True, slots=True)
class Secrets:
    """The keys no text relayed from the upstream may show: the key a request carried and the
    bridge's own (longest first, so that a key holding another is masked whole);
    `bridge_key` when the request carried the bridge's own key."""

    keys: tuple[str, ...] = ()
    bridge_key: bool = False

    def redact(self, text: str) -> str:
        for key in self.keys:
            if key in text:
                text = text.replace(key, REDACTED)
        return text

    def redact_json(self, value: Any) -> Any:
        """A parsed JSON value with the keys masked in every string, names included."""
        if not self.keys:
            return value
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {self.redact(k): self.redact_json(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.redact_json(item) for item in value]
        return value


NO_SECRETS = Secrets()


def _upstream_message(document: dict[str, Any] | None, secrets: Secrets) -> str | None:
    if document is not None and isinstance(document.get("error"), str):
        # Masked before it is cut: a cut could leave the start of a key.
        return secrets.redact(str(document["error"]))[:_MAX_ERROR_TEXT]
    return None


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether `value` nests lists and objects more than `limit` levels deep."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _parse(body: bytes) -> tuple[dict[str, Any] | None, str]:
    """The body as a JSON object, or None and why it is not one."""
    if not body:
        return None, "an empty body"
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        return None, f"a body that is not JSON ({error})"
    if not isinstance(parsed, dict):
        return None, f"JSON that is not an object but {type(parsed).__name__}"
    # Each level opens a bracket: a body with few of them (in strings too) is shallow enough
    # without walking it.
    brackets = body.count(b"{") + body.count(b"[")
    if brackets > MAX_DEPTH and _deeper_than(parsed, MAX_DEPTH):
        return None, f"JSON nested more than {MAX_DEPTH} levels deep"
    return parsed, ""


def _queue_position(value: Any) -> int | None:
    """A queue position worth trusting: a small non-negative integer."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 <= value <= _MAX_QUEUE_POSITION else None
    return None


def read_answer(
    status: int, headers: Mapping[str, str], body: bytes, secrets: Secrets = NO_SECRETS
) -> Observation:
    """Classify one upstream answer; what a refusal relays has the `secrets` masked."""
    document, unreadable = _parse(body)

    if status in REFUSALS:
        code, sentence = REFUSALS[status]
        if code == "unauthorized" and secrets.bridge_key:
            # What the upstream says of the operator's key is not for tenants.
            error = f"{BRIDGE_KEY_REFUSED} ({status})"
            return Observation("refused", error_code=code, error=error, http_status=status)
        message = _upstream_message(document, secrets)
        error = f"{sentence}: {message}" if message else sentence
        return Observation(
            "refused", document=secrets.redact_json(document), error_code=code, error=error,
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
            "transient", error=f"upstream answered {unreadable}"[:_MAX_ERROR_TEXT],
            http_status=status,
        )  # fmt: skip
    job_status = document.get("status")
    if not isinstance(job_status, str):
        shown = (
            "no status" if job_status is None else f"a status of type {type(job_status).__name__}"
        )
        return Observation("transient", error=f"upstream answered {shown}", http_status=status)
    job_status = _KNOWN_STATUSES.get(job_status, job_status)
    if job_status in PROGRESS_STATUSES:
        return Observation(
            "progress", job_status=job_status,
            queue_position=_queue_position(document.get("queue_position")),
            body=body, document=document, http_status=status,
        )  # fmt: skip
    output = document.get("output")
    if job_status == "succeeded" and output is not None and not isinstance(output, dict):
        # Receivers read the images from `output`; a malformed one may be fixed by a later poll.
        return Observation(
            "transient", http_status=status,
            error=f"upstream answered succeeded with an output of type {type(output).__name__}",
        )  # fmt: skip
    if job_status in TERMINAL_STATUSES:
        return Observation(
            "terminal", job_status=job_status, body=body, document=document, http_status=status
        )
    shown = repr(secrets.redact(job_status))[:40]
    return Observation(
        "transient", error=f"upstream answered an unknown status {shown}", http_status=status
    )


def network_failure(error: BaseException, secrets: Secrets = NO_SECRETS) -> Observation:
    """The observation of a request that got no answer; its error text (which may quote the
    request) has the `secrets` masked."""
    # The aiohttp transport reports most connection errors as httpx.ConnectTimeout: judge by
    # the original error underneath.
    root = error.__cause__ or error
    timed_out = isinstance(error, TimeoutError) or isinstance(root, TimeoutError)
    if timed_out or (root is error and isinstance(error, httpx.TimeoutException)):
        text = "upstream did not answer in time"
    else:
        detail = secrets.redact(str(root)) or type(root).__name__
        text = f"upstream request failed: {detail}"[:_MAX_ERROR_TEXT]
    return Observation("transient", error=text)


@dataclass(frozen=True, slots=True)
class Creation:
    """What the upstream answered a request to start a job."""

    kind: Literal["created", "refused", "failed"]
    job_id: str | None = None
    # The answer, parsed, of a created job.
    document: dict[str, Any] | None = None
    http_status: int | None = None
    # Why it was refused (the upstream's own words) or why it failed.
    error: str | None = None
    retry_after: str | None = None


def _excerpt(body: bytes, document: dict[str, Any] | None, secrets: Secrets) -> str:
    """The start of a body as one line of printable text, the `secrets` masked (in JSON, once
    its escapes are read: a key may be spelt with them)."""
    if document is not None:
        text = orjson.dumps(secrets.redact_json(document)).decode()
    else:
        # Masked whole, before it is cut: a cut could leave the start of a key.
        text = secrets.redact(body.decode(errors="replace"))
    text = "".join(ch if ch.isprintable() else " " for ch in text[: _MAX_ERROR_TEXT * 4])
    return " ".join(text.split())[:_MAX_ERROR_TEXT]


def read_creation(
    status: int, headers: Mapping[str, str], body: bytes, secrets: Secrets = NO_SECRETS
) -> Creation:
    """Classify the answer to `POST /api/v1/generate`: a 2xx JSON object with a string `id`
    started a job; a 4xx refused the request (its `error`, else the start of its body, says
    why, the `secrets` masked; a refusal of the bridge's own key only says so); anything else
    failed, and may or may not have started a job."""
    document, unreadable = _parse(body)
    if 400 <= status < 500:
        if status in (401, 403) and secrets.bridge_key:
            message = f"{BRIDGE_KEY_REFUSED} ({status})"
        else:
            message = (
                _upstream_message(document, secrets)
                or _excerpt(body, document, secrets)
                or f"HTTP {status}"
            )
        return Creation(
            "refused", http_status=status, error=message, retry_after=headers.get("retry-after")
        )
    if not 200 <= status < 300:
        # A redirect too: following one could send the key and the request elsewhere.
        return Creation("failed", http_status=status, error=f"upstream answered HTTP {status}")
    if document is None:
        error = f"upstream answered {unreadable}"[:_MAX_ERROR_TEXT]
        return Creation("failed", http_status=status, error=error)
    job_id = document.get("id")
    if not isinstance(job_id, str) or not job_id:
        shown = "no job id" if job_id is None else f"a job id of type {type(job_id).__name__}"
        if job_id == "":
            shown = "an empty job id"
        return Creation("failed", http_status=status, error=f"upstream answered {shown}")
    return Creation("created", job_id=job_id, document=document, http_status=status)


class UpstreamClient:
    """GETs job statuses through `transport` (`http_clients.transport`). One request is in
    flight per (job, key) at a time; concurrent callers for the same pair share its
    observation."""

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        base_url: str,
        timeout_s: float,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        bridge_key: str | None = None,
        observe: Callable[[Observation, float], None] | None = None,
    ) -> None:
        """`bridge_key` is the configured upstream.api_key: masked in whatever the upstream
        answers, and refusals of it are not relayed. `observe` is told of each request made
        (not of shared answers) and its duration: the metrics."""
        self._transport = transport
        # An uncompressed answer costs no inflating; one compressed anyway is still read.
        self._headers = (
            (b"Accept-Encoding", b"identity"),
            (b"User-Agent", USER_AGENT.encode()),
        )
        self._extensions = {"timeout": httpx.Timeout(timeout_s).as_dict()}
        self._base = base_url.rstrip("/")
        self._timeout = timeout_s
        self._max_body = max_body_bytes
        self._bridge_key = bridge_key
        # A password in the base URL is sent too, and an error may quote the URL.
        self._held = tuple(k for k in (bridge_key, httpx.URL(base_url).password) if k)
        self._bridge_secrets = self._secrets(bridge_key)
        # A request's future is made only when a second caller comes to share its answer.
        self._in_flight: dict[tuple[str, str | None], asyncio.Future[Observation] | None] = {}
        self.requests = 0
        self.last_duration_s = 0.0
        self._observe = observe

    async def fetch(self, job_id: str, api_key: str | None) -> Observation:
        if not JOB_ID.fullmatch(job_id):
            # Registration refuses such ids; a watch stored before it did ends here.
            error = f"the bridge does not poll job id {job_id[:40]!r}: a job id is {JOB_ID_RULE}"
            return Observation("refused", error_code="bad_request", error=error)
        key = (job_id, api_key)
        in_flight = self._in_flight
        if key in in_flight:
            shared = in_flight[key]
            if shared is None:
                shared = in_flight[key] = asyncio.get_running_loop().create_future()
            return await asyncio.shield(shared)
        in_flight[key] = None
        try:
            observation = await self._get(job_id, api_key)
            if self._observe is not None:
                self._observe(observation, self.last_duration_s)
        except BaseException as error:
            shared = in_flight.pop(key)
            if shared is not None:
                shared.set_exception(error)
                shared.exception()  # marks it retrieved should every sharer be gone
            raise
        shared = in_flight.pop(key)
        if shared is not None:
            shared.set_result(observation)
        return observation

    def secrets(self, api_key: str | None) -> Secrets:
        """What the answer to a request carrying `api_key` must not relay."""
        return self._bridge_secrets if api_key == self._bridge_key else self._secrets(api_key)

    def _secrets(self, api_key: str | None) -> Secrets:
        keys = sorted({*self._held, *([api_key] if api_key else [])}, key=len, reverse=True)
        return Secrets(tuple(keys), bridge_key=api_key is not None and api_key == self._bridge_key)

    def request(self, job_id: str, api_key: str | None) -> httpx.Request:
        """The GET of one job's status."""
        headers: tuple[tuple[bytes, bytes], ...] = self._headers
        if api_key:
            headers = (*headers, (b"Authorization", b"Bearer " + api_key.encode()))
        url = f"{self._base}/api/v1/generate/{quote(job_id, safe='')}"
        return httpx.Request("GET", url, headers=headers, extensions=self._extensions)

    async def _get(self, job_id: str, api_key: str | None) -> Observation:
        self.requests += 1
        started = time.perf_counter()
        secrets = self.secrets(api_key)
        try:
            answer = await get_capped(
                self._transport, self.request(job_id, api_key), self._timeout, self._max_body
            )
        except Unread as unread:
            return Observation(
                "transient",
                error=f"{unread.error(secrets)}; the rest was not read",
                retry_after=unread.headers.get("retry-after"),
                http_status=unread.status,
            )
        except (httpx.HTTPError, OSError, TimeoutError) as error:
            return network_failure(error, secrets)
        except Exception as error:  # keep polling, and say why, whatever the client raised
            return network_failure(error, secrets)
        finally:
            self.last_duration_s = time.perf_counter() - started
        status, headers, body = answer
        return read_answer(status, headers, body, secrets)

    async def create(
        self, body: bytes, api_key: str | None, idempotency_key: str | None
    ) -> Creation:
        """POST `body` (a JSON object) to start a job, and read the answer. Never shared and
        never retried: each call may start a job; `idempotency_key` lets the upstream tell a
        retry from a new request."""
        headers = [*self._headers, (b"Content-Type", b"application/json")]
        if api_key:
            headers.append((b"Authorization", b"Bearer " + api_key.encode()))
        if idempotency_key:
            headers.append((b"Idempotency-Key", idempotency_key.encode()))
        request = httpx.Request(
            "POST", f"{self._base}/api/v1/generate", headers=headers, content=body,
            extensions=self._extensions,
        )  # fmt: skip
        secrets = self.secrets(api_key)
        try:
            status, answer_headers, answer = await get_capped(
                self._transport, request, self._timeout, self._max_body
            )
        except Unread as unread:
            return Creation("failed", http_status=unread.status, error=unread.error(secrets))
        except Exception as error:  # whatever the client raised: say why, never crash
            return Creation("failed", error=network_failure(error, secrets).error)
        return read_creation(status, answer_headers, answer, secrets)


class Unread(Exception):
    """An answer whose body was not read whole (too long, or encoded in a way the bridge does
    not decode): its status and headers, and why."""

    def __init__(self, status: int, headers: httpx.Headers, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.headers = headers

    def error(self, secrets: Secrets) -> str:
        """Why, as relayed: the reason may quote the upstream's headers, so the `secrets` are
        masked before it is cut."""
        reason = secrets.redact(str(self))[: _MAX_ERROR_TEXT // 2]
        return f"upstream answered {reason} (HTTP {self.status})"


async def get_capped(
    transport: httpx.AsyncBaseTransport, request: httpx.Request, timeout_s: float, cap: int
) -> tuple[int, httpx.Headers, bytes]:
    """Send `request` and read its answer's body, decoded, up to `cap` bytes: the status, the
    headers and the body; `Unread` past the cap. The whole exchange, body included, is under
    `timeout_s`: a slow drip is cut too. The connection goes back to the pool, or is closed,
    before it returns."""
    async with asyncio.timeout(timeout_s):
        response = await transport.handle_async_request(request)
        try:
            body = await _read_capped(response, cap)
        except decoding.Refused as refused:
            raise Unread(response.status_code, response.headers, str(refused)) from None
        finally:
            await response.aclose()
    return response.status_code, response.headers, body


async def _read_capped(response: httpx.Response, cap: int) -> bytes:
    """The body, decoded; `decoding.Refused` as soon as it is known to be longer than `cap`
    bytes (encoded or decoded), or encoded in a way the bridge does not decode."""
    headers = response.headers
    declared = headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and (len(declared) > 19 or int(declared) > cap):
        raise decoding.Refused(f"more than {cap} bytes")
    body = decoding.CappedBody(headers.get("content-encoding"), cap)
    # The raw bytes straight from the transport, past httpx's decoder chain, which would
    # inflate a compressed chunk whole (decoding.CappedBody inflates within the cap).
    stream = response.stream
    chunks: AsyncIterable[bytes]
    chunks = stream if isinstance(stream, httpx.AsyncByteStream) else response.aiter_raw()
    async for chunk in chunks:
        body.add(chunk)
        if body.complete:
            break
    return body.body()
