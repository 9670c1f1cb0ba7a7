"""The upstream job API's client: one status request per poll, through the upstream's profile.

`UpstreamClient` asks for a job's status as its profile says (`service.profile`: method, path,
headers, how the key is sent), sharing one in-flight request between every watch of the same
job and key, and, once a job succeeded, makes the profile's result request if it has one. It
also makes the one request that starts a job (`create`, for `POST /v1/generate`). The answers
are read by `service.answers`.

Whatever the upstream answers costs bounded time and memory: the whole request is under the
timeout, and the body is read (and decoded, `service.decoding`) up to a cap.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, Callable
from urllib.parse import quote

import httpx

from service import USER_AGENT, decoding
from service.answers import (
    DEFAULT_READER,
    JOB_ID,
    JOB_ID_RULE,
    MAX_ERROR_TEXT,
    Creation,
    Secrets,
    network_failure,
    read_answer,
    read_creation,
    read_result,
)
from service.observation import Observation
from service.profile import Auth, Reader, fill

# A job's status is a few KiB; reading stops past this.
DEFAULT_MAX_BODY_BYTES = 1 << 20


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
        reader: Reader = DEFAULT_READER,
    ) -> None:
        """`bridge_key` is the configured upstream.api_key: masked in whatever the upstream
        answers, and refusals of it are not relayed. `observe` is told of each request made
        (not of shared answers) and its duration: the metrics."""
        self._transport = transport
        self._reader = reader
        self._profile = reader.profile
        # Built once: the profile's headers (an API version, say) go with every request.
        self._named = self._named_headers({})
        auth = self._profile.auth
        # The key goes in a header (its name and the value's prefix) or a query parameter.
        self._key_header = _key_header(auth)
        self._key_param = auth.name if auth.scheme == "query" else None
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

    @property
    def creates(self) -> bool:
        """Whether the profile says how to start a job."""
        return self._profile.create is not None

    def secrets(self, api_key: str | None) -> Secrets:
        """What the answer to a request carrying `api_key` must not relay."""
        return self._bridge_secrets if api_key == self._bridge_key else self._secrets(api_key)

    def _secrets(self, api_key: str | None) -> Secrets:
        found = {*self._held, *([api_key] if api_key else [])}
        if self._profile.auth.scheme == "query":
            # A key in the query is spelt encoded in the URL, which errors may quote.
            found |= {str(httpx.QueryParams({"k": key}))[2:] for key in found}
        keys = sorted(found, key=len, reverse=True)
        return Secrets(tuple(keys), bridge_key=api_key is not None and api_key == self._bridge_key)

    def request(self, job_id: str, api_key: str | None) -> httpx.Request:
        """The status request of one job."""
        status = self._profile.status
        return self._build(status.method, status.path, job_id, api_key)

    def result_request(self, job_id: str, api_key: str | None) -> httpx.Request | None:
        """The request of a succeeded job's result, if the profile has one."""
        result = self._profile.result
        return None if result is None else self._build(result.method, result.path, job_id, api_key)

    def read(self, answer: tuple[int, httpx.Headers, bytes], api_key: str | None) -> Observation:
        """An answer to the status request of a job, read through the profile."""
        status, headers, body = answer
        return read_answer(status, headers, body, self.secrets(api_key), self._reader)

    def read_result(
        self, answer: tuple[int, httpx.Headers, bytes], api_key: str | None, ended: Observation
    ) -> Observation:
        """An answer to the result request of a job seen `ended`, read through the profile."""
        status, headers, body = answer
        secrets = self.secrets(api_key)
        return read_result(status, headers, body, secrets, self._reader, ended)

    def _named_headers(self, extra: dict[str, str]) -> list[tuple[bytes, bytes]]:
        """The profile's headers, those `extra` names (whatever their case) replaced by it."""
        replaced = {name.lower() for name in extra}
        named = {k: v for k, v in self._profile.status.headers.items() if k.lower() not in replaced}
        return [(name.encode(), value.encode()) for name, value in {**named, **extra}.items()]

    def _build(
        self,
        method: str,
        path: str,
        job_id: str,
        api_key: str | None,
        extra: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Request:
        """A request to `path` (its `{job_id}` filled in) with the key as the profile sends it,
        and the profile's headers, `extra` taking the place of any of the same name."""
        url: str | httpx.URL = self._base + fill(path, quote(job_id, safe=""))
        key: list[tuple[bytes, bytes]] = []
        if api_key and self._key_header is not None:
            name, prefix = self._key_header
            key.append((name, prefix + api_key.encode()))
        elif api_key and self._key_param is not None:
            url = httpx.URL(url).copy_merge_params({self._key_param: api_key})
        named = self._named_headers(extra) if extra else self._named
        headers = [*_FIXED_HEADERS, *key, *named]
        return httpx.Request(
            method, url, headers=headers, content=content, extensions=self._extensions
        )

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
        except Exception as error:  # keep polling, and say why, whatever the client raised
            return network_failure(error, secrets)
        finally:
            self.last_duration_s = time.perf_counter() - started
        seen = self.read(answer, api_key)
        request = self.result_request(job_id, api_key)
        if request is None or seen.job_status != "succeeded":
            return seen
        try:
            answer = await get_capped(self._transport, request, self._timeout, self._max_body)
        except Unread as unread:
            why = f"{unread.error(secrets)} to the result request; the rest was not read"
            return Observation("transient", error=why, http_status=unread.status)
        except Exception as failure:  # whatever the client raised: keep polling, say why
            return network_failure(failure, secrets)
        return self.read_result(answer, api_key, seen)

    async def create(
        self, body: bytes, api_key: str | None, idempotency_key: str | None
    ) -> Creation:
        """Send `body` (a JSON object) as the profile's create request, and read the answer.
        Never shared and never retried: each call may start a job; `idempotency_key` lets the
        upstream tell a retry from a new request."""
        create = self._profile.create
        if create is None:
            return Creation("failed", error="this upstream's profile declares no create request")
        extra = {"Content-Type": "application/json"}
        if idempotency_key:
            extra["Idempotency-Key"] = idempotency_key
        # The create path holds no job id: `_build` fills nothing in it.
        request = self._build(create.method, create.path, "", api_key, extra, body)
        secrets = self.secrets(api_key)
        try:
            status, answer_headers, answer = await get_capped(
                self._transport, request, self._timeout, self._max_body
            )
        except Unread as unread:
            return Creation("failed", http_status=unread.status, error=unread.error(secrets))
        except Exception as error:  # whatever the client raised: say why, never crash
            return Creation("failed", error=network_failure(error, secrets).error)
        return read_creation(status, answer_headers, answer, secrets, self._reader)


# An uncompressed answer costs no inflating; one compressed anyway is still read.
_FIXED_HEADERS = ((b"Accept-Encoding", b"identity"), (b"User-Agent", USER_AGENT.encode()))


def _key_header(auth: Auth) -> tuple[bytes, bytes] | None:
    """The header that carries the key, as (name, the value's prefix), if the key goes in one."""
    if auth.scheme == "bearer":
        return b"Authorization", b"Bearer "
    if auth.scheme == "key":
        return b"Authorization", b"Key "
    if auth.scheme == "header":
        assert auth.name is not None
        return auth.name.encode(), b""
    return None


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
        reason = secrets.redact(str(self))[: MAX_ERROR_TEXT // 2]
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
