"""Making a webhook's request: in the bridge's own process, or in a sender process beside it.

`InlineSender` sends with the delivery client (`http_clients.delivery_client`), straight to its
transport: the client's own layer (redirects, cookies, auth, default headers) has nothing to
add to a webhook, only cost. It answers (status code, Retry-After, error) and reads at most
`max_response_bytes` of the body.

`ProcessSender` (`delivery.sender = "process"`) hands the requests to a child process,
`python -m service.sender`, which makes them with an `InlineSender` of its own. Why: the
HTTP exchange is about two thirds of what the event loop does per webhook, and one process
has one interpreter lock, so a single bridge process sends at most what one core can. The
event loop keeps everything else (claims, signatures, judging, outcomes, per-host slots); the
child only talks HTTP. Requests and answers cross a socket pair as length-prefixed `marshal`
frames (the child is the same interpreter, started by the bridge itself).

If the child dies, every request it held is answered with an error (the attempt is recorded
as failed and retried on schedule, with the same `webhook-id`), and the next request starts
a new child. When the bridge dies, the child reads the end of its socket and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import marshal
import socket
import struct
import sys
from typing import Any, Protocol

import httpx
import structlog

from service.config import DeliverySettings, LogSettings, SecuritySettings

log = structlog.get_logger("service.sender")

# (status code, Retry-After, error): None for what there was not.
Answer = tuple[int | None, str | None, str | None]
# Parsed callback URLs kept (the busiest ones stay: a claim's deliveries mostly go to few
# receivers).
URLS = 1024
# A request the child has not answered this long after its timeout is given up on.
GRACE_S = 5.0
_LENGTH = struct.Struct("!I")


class Sender(Protocol):
    async def send(self, method: str, url: str, headers: dict[str, str], body: bytes) -> Answer:
        """Make one request to `url` (without userinfo) and say how it went; never raises."""

    async def aclose(self) -> None:
        """Let go of connections (and of the child process, if any)."""


class InlineSender:
    def __init__(self, client: httpx.AsyncClient, timeout_s: float, max_response_bytes: int):
        self._client = client
        self._transport: httpx.AsyncBaseTransport = client._transport
        self._extensions = {"timeout": client.timeout.as_dict()}
        self._timeout_s = timeout_s
        self._max_response_bytes = max_response_bytes
        self._urls: dict[str, httpx.URL | str] = {}  # parsed, or why it cannot be requested

    async def send(self, method: str, url: str, headers: dict[str, str], body: bytes) -> Answer:
        parsed = self._parse(url)
        if isinstance(parsed, str):
            return None, None, parsed
        try:
            async with asyncio.timeout(self._timeout_s):
                request = httpx.Request(
                    method, parsed, content=body, headers=headers, extensions=self._extensions
                )
                response = await self._transport.handle_async_request(request)
                try:
                    await _read_capped(response, self._max_response_bytes)
                finally:
                    await response.aclose()
        except TimeoutError:
            return None, None, f"no answer within {self._timeout_s:g} s"
        except (httpx.HTTPError, OSError) as failure:
            return None, None, describe(failure)
        except Exception as failure:  # anything else must still be recorded as an attempt
            log.warning("delivery.unexpected_error", webhook_id=headers.get("webhook-id"),
                        exc_info=True)  # fmt: skip
            return None, None, describe(failure)
        code = response.status_code
        error = None if 200 <= code < 300 else f"HTTP {code}"
        if 300 <= code < 400:
            error = f"HTTP {code} (redirects are not followed)"
        return code, response.headers.get("retry-after"), error

    def _parse(self, url: str) -> httpx.URL | str:
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) >= URLS:  # the oldest goes
                del self._urls[next(iter(self._urls))]
            try:
                parsed = httpx.URL(url)
            except Exception as invalid:  # whatever httpx refuses, recorded as the error
                parsed = describe(invalid)
            self._urls[url] = parsed
        return parsed

    async def aclose(self) -> None:
        await self._client.aclose()


class ProcessSender:
    def __init__(
        self, delivery: DeliverySettings, security: SecuritySettings, logging: LogSettings
    ) -> None:
        self._config = marshal.dumps(
            {
                "delivery": delivery.model_dump_json(include=_DELIVERY_FIELDS),
                "security": security.model_dump_json(include=_SECURITY_FIELDS),
                "log": logging.model_dump_json(),
            }
        )
        self._timeout_s = delivery.timeout_s + GRACE_S
        self._ids = itertools.count()
        self._child: _Child | None = None
        self._starting = asyncio.Lock()

    async def send(self, method: str, url: str, headers: dict[str, str], body: bytes) -> Answer:
        try:
            child = await self._running()
        except OSError as failure:
            log.error("delivery.sender_failed", error=str(failure))
            return None, None, f"the sender process could not start: {failure}"
        request_id = next(self._ids)
        answer = child.ask(request_id, (request_id, method, url, tuple(headers.items()), body))
        try:
            async with asyncio.timeout(self._timeout_s):
                return await answer
        except TimeoutError:
            return None, None, f"no answer from the sender process within {self._timeout_s:g} s"
        finally:
            child.forget(request_id)

    async def _running(self) -> _Child:
        child = self._child
        if child is not None and child.alive:
            return child
        async with self._starting:
            if self._child is None or not self._child.alive:
                self._child = await _Child.start(self._config)
            return self._child

    async def aclose(self) -> None:
        if self._child is not None:
            await self._child.stop()


_DELIVERY_FIELDS = {"timeout_s", "max_concurrency", "max_response_bytes"}
_SECURITY_FIELDS = {"allow_private_callbacks", "callback_allow_cidrs", "require_https"}


class _Child:
    """One sender process and the requests it holds."""

    def __init__(self, process: asyncio.subprocess.Process, sock: socket.socket) -> None:
        self._process = process
        self._waiting: dict[int, asyncio.Future[Answer]] = {}
        self._out: list[bytes] = []
        self.alive = True
        self._reader: asyncio.StreamReader
        self._writer: asyncio.StreamWriter
        self._sock = sock
        self._reading: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, config: bytes) -> _Child:
        mine, theirs = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "service.sender", str(theirs.fileno()),
                stdin=asyncio.subprocess.DEVNULL, pass_fds=(theirs.fileno(),),
            )  # fmt: skip
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        child = cls(process, mine)
        child._reader, child._writer = await asyncio.open_connection(sock=mine)
        child._writer.write(_frame(config))
        child._reading = asyncio.create_task(child._read(), name="sender answers")
        log.info("delivery.sender_started", pid=process.pid)
        return child

    def ask(self, request_id: int, request: tuple[Any, ...]) -> asyncio.Future[Answer]:
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        if not self._out:  # one write for every request made in this turn of the loop
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(_frame(marshal.dumps(request)))
        return future

    def forget(self, request_id: int) -> None:
        self._waiting.pop(request_id, None)

    def _flush(self) -> None:
        if self.alive and self._out:
            self._writer.write(b"".join(self._out))
        self._out.clear()

    async def _read(self) -> None:
        buffer = b""
        try:
            while chunk := await self._reader.read(1 << 16):
                answers, buffer = _split(buffer + chunk)
                for answer in answers:
                    request_id, status, retry_after, error = _load(answer)
                    future = self._waiting.get(request_id)
                    if future is not None and not future.done():
                        future.set_result((status, retry_after, error))
        except (OSError, ValueError, EOFError) as failure:
            log.error("delivery.sender_unreadable", error=str(failure))
        finally:
            await self._ended()

    async def _ended(self) -> None:
        self.alive = False
        code = await self._process.wait() if self._process.returncode is None else None
        code = self._process.returncode if code is None else code
        if self._waiting:
            log.error("delivery.sender_exited", pid=self._process.pid, code=code,
                      requests=len(self._waiting))  # fmt: skip
        why = f"the sender process exited (code {code}) before answering"
        for future in self._waiting.values():
            if not future.done():
                future.set_result((None, None, why))
        self._waiting.clear()
        self._writer.close()

    async def stop(self) -> None:
        if self.alive:
            self._writer.close()  # the child finishes what it holds and exits
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(GRACE_S):
                    await self._process.wait()
            if self._process.returncode is None:
                self._process.kill()
        if self._reading is not None:
            await asyncio.gather(self._reading, return_exceptions=True)


def _frame(payload: bytes) -> bytes:
    return _LENGTH.pack(len(payload)) + payload


def _load(frame: bytes) -> Any:
    # Frames only come from the other end of a private socket pair: the bridge or the child it
    # started, the same interpreter.
    return marshal.loads(frame)  # noqa: S302


def _split(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The whole frames at the start of `buffer`, and what follows them."""
    frames, at = [], 0
    while len(buffer) - at >= _LENGTH.size:
        (size,) = _LENGTH.unpack_from(buffer, at)
        end = at + _LENGTH.size + size
        if end > len(buffer):
            break
        frames.append(buffer[at + _LENGTH.size : end])
        at = end
    return frames, buffer[at:]


async def _read_capped(response: httpx.Response, cap: int) -> bytes:
    read = bytearray()
    async for chunk in response.aiter_raw():
        read += chunk
        if len(read) >= cap:
            break
    return bytes(read[:cap])


def describe(failure: BaseException) -> str:
    # The aiohttp transport maps most connection errors to httpx.ConnectTimeout; the original
    # error underneath says what actually happened.
    root = failure.__cause__ or failure
    text = str(root) or str(failure) or "connection failed"
    return f"{type(root).__name__}: {text}"[:300]


# The child.


async def _serve(fd: int) -> None:
    from service import http_clients, logs

    reader, writer = await asyncio.open_connection(sock=socket.socket(fileno=fd))
    found: list[bytes] = []
    buffer = b""
    while not found:  # the first frame is the configuration
        chunk = await reader.read(1 << 16)
        if not chunk:
            return
        found, buffer = _split(buffer + chunk)
    config = _load(found[0])
    logs.configure(LogSettings.model_validate_json(config["log"]))
    delivery = DeliverySettings.model_validate_json(config["delivery"])
    security = SecuritySettings.model_validate_json(config["security"])
    sender = InlineSender(
        http_clients.delivery_client(delivery, security),
        delivery.timeout_s,
        delivery.max_response_bytes,
    )
    loop = asyncio.get_running_loop()
    out: list[bytes] = []
    tasks: set[asyncio.Task[None]] = set()

    def flush() -> None:
        writer.write(b"".join(out))
        out.clear()

    async def answer(request: tuple[Any, ...]) -> None:
        request_id, method, url, headers, body = request
        status, retry_after, error = await sender.send(method, url, dict(headers), body)
        if not out:
            loop.call_soon(flush)
        out.append(_frame(marshal.dumps((request_id, status, retry_after, error))))

    def take(frames: list[bytes]) -> None:
        for frame in frames:
            task = loop.create_task(answer(_load(frame)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    take(found[1:])
    while chunk := await reader.read(1 << 16):
        requests, buffer = _split(buffer + chunk)
        take(requests)
    # The bridge closed its end: finish what is held, then go.
    if tasks:
        await asyncio.wait(tasks)
    with contextlib.suppress(ConnectionError):
        flush()
        await writer.drain()
    await sender.aclose()


def main() -> None:
    import uvloop

    uvloop.run(_serve(int(sys.argv[1])))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
