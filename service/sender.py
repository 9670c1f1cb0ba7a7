"""Making a webhook's request: in the bridge's own process, or in a sender process beside it.

`InlineSender` sends through the delivery transport (`http_clients.delivery_transport`). It
answers with the status code, Retry-After and error (`describe` words a failed request for
people), and the start of the body: at most `max_response_bytes` of it, and whether it went on.

`ProcessSender` (`delivery.sender = "process"`) hands the requests to a child process,
`python -m service.sender`, which makes them with an `InlineSender` of its own. Why: the
HTTP exchange is most of what the event loop does per webhook, and one process has one
interpreter lock, so a single bridge process sends at most what one core can. The event loop
keeps everything else (claims, signatures, judging, outcomes); the child only
talks HTTP. Requests and answers cross a socket pair as length-prefixed `marshal` frames (the
child is the same interpreter, started by the bridge itself).

The child keeps `max_per_host`, the per-tenant limit and `max_concurrency` itself (each
request names its tenant), with the deliverer's own bookkeeping (`service.slots`), and the
bridge hands it `depth` (4) times as many: a host's next
webhook is already waiting in the child when an answer comes in, instead of making the trip
through the bridge's event loop first. Waiting requests hold no slot, so a slow host (or a
tenant's slow receivers) still costs only its own. A request the bridge gives up on (its
timeout, an attempt cancelled at a stop) is dropped by the child unless it has started.

If the child dies, every request it held is answered with an error (the attempt is recorded
as failed and retried on schedule, with the same `webhook-id`), and the next request starts
a new child. The child ignores Ctrl-C and SIGTERM: the bridge drains, then closes its end of
the socket, and the child finishes what it holds and exits (also when the bridge is killed).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import itertools
import marshal
import signal
import socket
import ssl
import struct
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple, Protocol

import aiohttp
import httpx
import structlog

from service import ssrf
from service.config import DeliverySettings, LogSettings, SecuritySettings
from service.slots import Slots
from service.store.base import callback_host

log = structlog.get_logger("service.sender")
# The longest Content-Type kept of an answer.
MAX_CONTENT_TYPE = 200


class Answer(NamedTuple):
    """How a request went: None for what there was not (no status code: no answer)."""

    status_code: int | None
    retry_after: str | None
    error: str | None
    body: bytes = b""  # at most `max_response_bytes` of it
    truncated: bool = False  # the body went on past them
    content_type: str | None = None


# Parsed callback URLs kept (the busiest ones stay: a claim's deliveries mostly go to few
# receivers).
URLS = 1024
# A request the child has not answered this long after its timeout is given up on.
GRACE_S = 5.0
# Seconds a new sender process may take to say it is ready, and the least time between two
# starts (requests meanwhile are answered with the last start's failure).
START_TIMEOUT_S = 30.0
RESTART_AFTER_S = 1.0
_LENGTH = struct.Struct("!I")
# The sender process: this interpreter, this module; its argument is its end of the socket.
COMMAND = (sys.executable, "-m", "service.sender")


class Sender(Protocol):
    # How many times `delivery.max_concurrency`, `max_per_host` and the per-tenant limit
    # requests may be handed to the sender at once: 1 when each request handed over is made at
    # once; more when the sender queues them and keeps those limits itself.
    depth: int

    async def start(self) -> None:
        """Be ready to send (the sender process started), so the first webhook waits for none."""

    async def send(
        self, method: str, url: str, headers: dict[str, str], body: bytes, tenant: str = ""
    ) -> Answer:
        """Make one request to `url` (without userinfo), a webhook of `tenant`, and say how it
        went; never raises."""

    async def aclose(self) -> None:
        """Let go of connections (and of the child process, if any)."""


class InlineSender:
    depth = 1

    def __init__(
        self, transport: httpx.AsyncBaseTransport, timeout_s: float, max_response_bytes: int
    ):
        self._transport = transport
        self._extensions = {"timeout": httpx.Timeout(timeout_s).as_dict()}
        self._timeout_s = timeout_s
        self._max_response_bytes = max_response_bytes

    async def start(self) -> None:
        pass

    async def send(
        self, method: str, url: str, headers: dict[str, str], body: bytes, tenant: str = ""
    ) -> Answer:
        parsed = _parsed(url)
        if isinstance(parsed, str):
            return Answer(None, None, parsed)
        cap = self._max_response_bytes
        try:
            async with asyncio.timeout(self._timeout_s):
                request = httpx.Request(
                    method, parsed, content=body, headers=headers, extensions=self._extensions
                )
                response = await self._transport.handle_async_request(request)
                try:
                    start, more = await _read_capped(response, cap)
                finally:
                    await response.aclose()
        except (TimeoutError, httpx.HTTPError, OSError) as failure:
            return Answer(None, None, describe(failure, self._timeout_s))
        except Exception as failure:  # anything else must still be recorded as an attempt
            log.warning("delivery.unexpected_error", webhook_id=headers.get("webhook-id"),
                        exc_info=True)  # fmt: skip
            return Answer(None, None, describe(failure, self._timeout_s))
        code, found = response.status_code, response.headers
        error = None if 200 <= code < 300 else f"HTTP {code}"
        if 300 <= code < 400:
            error = f"HTTP {code} (redirects are not followed)"
        # A body read up to the cap exactly went on unless its length said it ended there.
        declared = found.get("content-length", "")
        truncated = more or (len(start) == cap and declared != str(cap))
        content_type = found.get("content-type")
        if content_type is not None:
            content_type = content_type[:MAX_CONTENT_TYPE]
        return Answer(code, found.get("retry-after"), error, start, truncated, content_type)

    async def aclose(self) -> None:
        await self._transport.aclose()


@functools.lru_cache(maxsize=URLS)
def _parsed(url: str) -> httpx.URL | str:
    """The URL parsed, or why it cannot be requested."""
    try:
        return httpx.URL(url)
    except Exception as invalid:  # whatever httpx refuses, recorded as the error
        return f"not a valid URL: {invalid}"[:300]


class ProcessSender:
    # A busy host's next requests wait in the child (see the module doc); 4 rather than 2: the
    # child's line then rides out the bridge's pauses (a claim, a commit, a turn of its loop on
    # the other CPU; docs/performance.md, section 6).
    depth = 4

    def __init__(
        self,
        delivery: DeliverySettings,
        security: SecuritySettings,
        logging: LogSettings,
        on_exit: Callable[[int], None] | None = None,
    ) -> None:
        """`on_exit` is told of each sender process that exited while the bridge still needed
        it (its exit code): the metrics. The next request starts another."""
        self._config = marshal.dumps(
            {
                "delivery": delivery.model_dump_json(include=_DELIVERY_FIELDS),
                "security": security.model_dump_json(include=_SECURITY_FIELDS),
                "log": logging.model_dump_json(),
            }
        )
        # A request waits in the child for at most `depth - 1` attempts to its host and as many
        # of its tenant, then takes its own.
        self._timeout_s = (2 * self.depth - 1) * delivery.timeout_s + GRACE_S
        self._ids = itertools.count()
        self._child: _Child | None = None
        self._on_exit = on_exit or (lambda _: None)
        self._starting = asyncio.Lock()
        self._failed: tuple[float, OSError] | None = None  # the last start that failed, when

    async def start(self) -> None:
        # A failure here is not the bridge's: the next request tries again, and says why.
        with contextlib.suppress(OSError):
            await self._running()

    async def send(
        self, method: str, url: str, headers: dict[str, str], body: bytes, tenant: str = ""
    ) -> Answer:
        try:
            child = await self._running()
        except OSError as failure:
            return Answer(None, None, f"the sender process could not start: {failure}")
        request_id = next(self._ids)
        request = (request_id, method, url, tuple(headers.items()), body, tenant)
        answer = child.ask(request_id, request)
        try:
            async with asyncio.timeout(self._timeout_s):
                return await answer
        except TimeoutError:
            why = f"no answer from the sender process within {self._timeout_s:g} s"
            return Answer(None, None, why)
        finally:
            child.forget(request_id)

    @property
    def pid(self) -> int | None:
        """The sender process's pid, while one runs."""
        child = self._child
        return child.pid if child is not None and child.alive else None

    async def _running(self) -> _Child:
        child = self._child
        if child is not None and child.alive:
            return child
        async with self._starting:
            if self._child is None or not self._child.alive:
                now = asyncio.get_running_loop().time()
                if self._failed is not None and now - self._failed[0] < RESTART_AFTER_S:
                    raise self._failed[1]
                try:
                    self._child = await _Child.start(self._config, self._on_exit)
                except OSError as failure:
                    log.error("delivery.sender_failed", error=str(failure))
                    self._failed = (now, failure)
                    raise
                self._failed = None
            return self._child

    async def aclose(self) -> None:
        if self._child is not None:
            await self._child.stop()


_DELIVERY_FIELDS = {
    "timeout_s", "max_concurrency", "max_per_host", "max_per_tenant", "max_response_bytes",
}  # fmt: skip
_SECURITY_FIELDS = {"allow_private_callbacks", "callback_allow_cidrs", "require_https"}


class _Child:
    """One sender process and the requests it holds."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        answers: AsyncIterator[bytes],
        writer: asyncio.StreamWriter,
        on_exit: Callable[[int], None],
    ) -> None:
        self._process = process
        self._on_exit = on_exit
        self._stopping = False
        self._answers = answers
        self._writer = writer
        self._out = _Outbox(writer)
        self._waiting: dict[int, asyncio.Future[Answer]] = {}
        self.alive = True
        self._reading = asyncio.create_task(self._read(), name="sender answers")

    @classmethod
    async def start(cls, config: bytes, on_exit: Callable[[int], None]) -> _Child:
        """A new sender process, ready; `on_exit` is told its exit code if it ends before
        `stop`."""
        mine, theirs = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                *COMMAND, str(theirs.fileno()),
                stdin=asyncio.subprocess.DEVNULL, pass_fds=(theirs.fileno(),),
            )  # fmt: skip
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        reader, writer = await asyncio.open_connection(sock=mine)
        writer.write(_frame(config))
        frames = _receive(reader)
        # Ready once it has imported and built its client (a few hundred milliseconds): the
        # first webhooks should not wait for that.
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                await anext(frames)
        except (TimeoutError, StopAsyncIteration, OSError):
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            writer.close()
            raise OSError(f"the sender process (pid {process.pid}) did not start") from None
        log.info("delivery.sender_started", pid=process.pid)
        return cls(process, frames, writer, on_exit)

    @property
    def pid(self) -> int:
        return self._process.pid

    def ask(self, request_id: int, request: tuple[Any, ...]) -> asyncio.Future[Answer]:
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        if not self.alive:  # it died since it was chosen: no answer will come
            future.set_result(Answer(None, None, "the sender process exited before the request"))
            return future
        self._waiting[request_id] = future
        self._out.put(request)
        return future

    def forget(self, request_id: int) -> None:
        """Stop waiting for the answer to `request_id`. One given up on before it came (a
        timeout, a cancelled attempt) is dropped by the child unless it has started: its
        delivery is attempted again later, so sending it as well would be a duplicate."""
        future = self._waiting.pop(request_id, None)
        if future is not None and (future.cancelled() or not future.done()) and self.alive:
            self._out.put((request_id,))

    async def _read(self) -> None:
        try:
            async for answer in self._answers:
                request_id, *fields = _load(answer)
                future = self._waiting.get(request_id)
                if future is not None and not future.done():
                    future.set_result(Answer(*fields))
        except (OSError, ValueError, EOFError) as failure:
            log.error("delivery.sender_unreadable", error=str(failure))
        finally:
            await self._ended()

    async def _ended(self) -> None:
        self.alive = False
        code = await self._process.wait()
        if not self._stopping:
            log.error("delivery.sender_exited", pid=self._process.pid, code=code,
                      requests=len(self._waiting))  # fmt: skip
            self._on_exit(code)
        why = f"the sender process exited (code {code}) before answering"
        for future in self._waiting.values():
            if not future.done():
                future.set_result(Answer(None, None, why))
        self._waiting.clear()
        self._writer.close()

    async def stop(self) -> None:
        self._stopping = True
        if self.alive:
            self._writer.close()  # the child finishes what it holds and exits
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(GRACE_S):
                    await self._process.wait()
            if self._process.returncode is None:
                self._process.kill()
                await self._process.wait()
        await asyncio.gather(self._reading, return_exceptions=True)


class _Outbox:
    """Frames to one end of the socket pair, written together once per turn of the loop."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._frames: list[bytes] = []

    def put(self, message: Any) -> None:
        if not self._frames:
            asyncio.get_running_loop().call_soon(self.flush)
        self._frames.append(_frame(marshal.dumps(message)))

    def flush(self) -> None:
        if self._frames and not self._writer.is_closing():
            self._writer.write(b"".join(self._frames))
        self._frames.clear()


def _frame(payload: bytes) -> bytes:
    return _LENGTH.pack(len(payload)) + payload


def _load(frame: bytes) -> Any:
    # Frames only come from the other end of a private socket pair: the bridge or the child it
    # started, the same interpreter.
    return marshal.loads(frame)  # noqa: S302


async def _receive(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """Each whole frame from `reader`, until the other end closes."""
    with contextlib.suppress(asyncio.IncompleteReadError):
        while True:
            (size,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
            yield await reader.readexactly(size)


async def _read_capped(response: httpx.Response, cap: int) -> tuple[bytes, bool]:
    """At most `cap` bytes of the body, and whether that is not the whole of it: more was
    read, or the body broke off before its end. A receiver's status stands whatever becomes of
    its body (a 2xx retried would be a duplicate); only a timeout ends the exchange."""
    read = bytearray()
    try:
        async for chunk in response.aiter_raw():
            read += chunk
            if len(read) >= cap:
                break
    except Exception as failure:
        if isinstance(failure, TimeoutError) or isinstance(failure.__cause__, TimeoutError):
            raise
        return bytes(read[:cap]), True
    return bytes(read[:cap]), len(read) > cap


# getaddrinfo's answers for a name that does not exist, or has no address.
_NO_SUCH_HOST = frozenset(
    code for code in (getattr(socket, name, None) for name in ("EAI_NONAME", "EAI_NODATA"))
    if code is not None
)  # fmt: skip


def describe(failure: BaseException, timeout_s: float) -> str:
    """A request that got no answer, in a sentence for people: "connection refused", "timed out
    after 15 s", "TLS handshake failed: ...", "DNS: no such host ...", the callback policy's
    refusal, else the error's type and text. Judged by the exceptions underneath: the aiohttp
    transport raises most connection errors as `httpx.ConnectTimeout`, caused by aiohttp's
    own, caused by the OS's or the `ssl` module's. Never raises: the attempt must be recorded."""
    try:
        return _words(failure, timeout_s)[:300]
    except Exception:  # an exception of a shape not foreseen: as it is
        return f"{type(failure).__name__}: {failure}"[:300]


def _words(failure: BaseException, timeout_s: float) -> str:
    blocked = ssrf.blocked_cause(failure)
    if blocked is not None:
        return f"refused by the callback policy: {blocked.reason}"
    chain = ssrf.causes(failure)
    where = next((e for e in chain if isinstance(e, aiohttp.ClientConnectorError)), None)
    host = "" if where is None else str(where.host)
    for error in chain:
        if isinstance(error, TimeoutError | httpx.TimeoutException | aiohttp.ServerTimeoutError):
            if error is failure and isinstance(error, httpx.ConnectTimeout) and error.__cause__:
                continue  # the transport's name for any connection error: see what caused it
            return f"timed out after {timeout_s:g} s"
        # aiohttp's own certificate error is one too (`ssl.CertificateError`), without the
        # verification's message: the one beneath has it.
        verified = getattr(error, "verify_message", None)
        if isinstance(error, ssl.SSLCertVerificationError) and verified:
            whose = f" of {host}" if host else ""
            return f"TLS handshake failed: the certificate{whose} is not valid ({verified})"
        # aiohttp's own SSL errors are `ssl.SSLError`s without a reason: the one beneath has it.
        reason = getattr(error, "reason", None)
        if isinstance(error, ssl.SSLError) and reason:
            why = str(reason).lower().replace("_", " ")
            return f"TLS handshake failed: {why}"
        if isinstance(error, socket.gaierror):
            if error.errno in _NO_SUCH_HOST:
                return f"DNS: no such host {host}".rstrip()
            of = f" of {host}" if host else ""
            return f"DNS: lookup{of} failed ({error.strerror})"
        if isinstance(error, ConnectionRefusedError):
            return "connection refused"
        if isinstance(error, ConnectionResetError):
            return "connection reset by the receiver"
        if isinstance(error, aiohttp.ServerDisconnectedError):
            return "the receiver closed the connection without answering"
        if isinstance(error, OSError) and error.errno in _UNREACHABLE:
            return f"{error.strerror or 'unreachable'} {host}".lower().rstrip()
    root = chain[-1]
    text = str(root) or str(failure) or "connection failed"
    return f"{type(root).__name__}: {text}"


_UNREACHABLE = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN})


# The child.


async def _serve(fd: int) -> None:
    from service import gc_tuning, http_clients, logs

    reader, writer = await asyncio.open_connection(sock=socket.socket(fileno=fd))
    frames = _receive(reader)
    try:
        config = _load(await anext(frames))  # the first frame is the configuration
    except StopAsyncIteration:
        return
    logs.configure(LogSettings.model_validate_json(config["log"]))
    delivery = DeliverySettings.model_validate_json(config["delivery"])
    security = SecuritySettings.model_validate_json(config["security"])
    sender = InlineSender(
        http_clients.delivery_transport(delivery, security),
        delivery.timeout_s,
        delivery.max_response_bytes,
    )
    gc_tuning.tune()  # as the server does: the child allocates per request as much as it
    writer.write(_frame(marshal.dumps("ready")))
    relay = _Relay(sender, writer, delivery)
    async for frame in frames:
        relay.take(_load(frame))
    # The bridge closed its end: finish what is held, then go.
    await relay.finish()
    await sender.aclose()


class _Relay:
    """The child's side: requests in, answers out, within the limits (see the module doc). One
    task per running slot, which carries on with a waiting request its slots pass to."""

    def __init__(
        self, sender: InlineSender, writer: asyncio.StreamWriter, delivery: DeliverySettings
    ) -> None:
        self._sender = sender
        self._writer = writer
        self._concurrency = asyncio.Semaphore(delivery.max_concurrency)
        # No bound on the lines: the bridge bounds what it hands over.
        self._limits: Slots[tuple[Any, ...]] = Slots(
            _keys, delivery.max_per_host, delivery.per_tenant, None
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._out = _Outbox(writer)
        # The requests waiting in line, by id: False once the bridge has given up on them.
        self._lined: dict[int, bool] = {}

    def take(self, message: tuple[Any, ...]) -> None:
        """A request, or (its id,) when the bridge gave up on it: never started if in line."""
        if len(message) == 1:
            if message[0] in self._lined:
                self._lined[message[0]] = False
            return
        if self._limits.admit(message) == "run":
            self._start(message)
        else:
            self._lined[message[0]] = True

    def _start(self, request: tuple[Any, ...]) -> None:
        task = asyncio.create_task(self._run(request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, request: tuple[Any, ...]) -> None:
        while True:
            request_id, method, url, headers, body, _ = request
            if self._lined.pop(request_id, True):  # its slots pass on at once otherwise
                async with self._concurrency:
                    answer = await self._sender.send(method, url, dict(headers), body)
                self._out.put((request_id, *answer))  # a plain tuple: marshal takes no subclass
            passed = self._limits.pass_on(request, self._start)
            if passed is None:
                return
            request = passed

    async def finish(self) -> None:
        while self._tasks:
            await asyncio.wait(set(self._tasks))
        with contextlib.suppress(ConnectionError):
            self._out.flush()
            await self._writer.drain()


def _keys(request: tuple[Any, ...]) -> tuple[str, str]:
    """A request's host (of its URL) and tenant."""
    return callback_host(request[2]), request[5]


def main() -> None:
    import uvloop

    # Ctrl-C and SIGTERM are the bridge's to handle: it drains, then closes its end of the
    # socket, and that is when this process ends (also when the bridge is killed).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    uvloop.run(_serve(int(sys.argv[1])))


if __name__ == "__main__":
    main()
