"""Sending webhooks: sign, POST, read a little of the answer, judge it, record the attempt.

`judge` is pure. `Deliverer` runs attempts concurrently, up to a limit, and records each one
under the delivery's lease; an attempt whose outcome was not recorded (a crash) is sent again
later with the same `webhook-id`.
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx
import structlog

from service import __version__, schedule
from service.clock import Clock
from service.config import DeliverySettings
from service.errors import LeaseLost, StoreError
from service.signing import sign
from service.store.base import Attempt, AttemptOutcome, Delivery, Store
from service.vault import Vault, VaultError

log = structlog.get_logger("service.delivery")
USER_AGENT = f"webhook-bridge/{__version__}"


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: AttemptOutcome
    next_attempt_at: float | None


def judge(
    status_code: int | None,
    retry_after: str | None,
    attempts_made: int,
    settings: DeliverySettings,
    now: float,
    rand: float,
) -> Verdict:
    """What an attempt's answer (None: no answer) means for its delivery.

    2xx succeeds; 410 is `gone`; anything else, 3xx included, is retried on the schedule (not
    before a `Retry-After`, capped) until it runs out."""
    if status_code is not None and 200 <= status_code < 300:
        return Verdict("succeeded", None)
    if status_code == 410:
        return Verdict("gone", None)
    delay = schedule.next_delivery_delay(
        attempts_made, settings.retry_schedule_s, settings.jitter, rand
    )
    if delay is None:
        return Verdict("failed", None)
    asked = schedule.retry_after(retry_after, now, settings.max_retry_after_s)
    return Verdict("retry", now + max(delay, asked or 0.0))


class Deliverer:
    def __init__(
        self,
        store: Store,
        client: httpx.AsyncClient,
        settings: DeliverySettings,
        clock: Clock,
        owner: str,
        rand: Callable[[], float] = random.random,
        vault: Vault | None = None,
    ) -> None:
        self._store = store
        self._vault = vault or Vault([])
        self._client = client
        self._settings = settings
        self._clock = clock
        self._owner = owner
        self._rand = rand
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        # In-flight deliveries and the lease tokens they were claimed with, for renewals.
        self._sending: dict[str, int] = {}
        # Told of each recorded attempt: metrics.
        self.on_outcome: Callable[[Delivery, Attempt, AttemptOutcome, float], None] | None = None

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def held(self) -> list[tuple[str, int]]:
        """(id, lease token) of every delivery being attempted (their leases need renewing)."""
        return list(self._sending.items())

    @property
    def free_slots(self) -> int:
        return max(0, self._settings.max_concurrency - len(self._tasks))

    def submit(self, delivery: Delivery) -> None:
        """Attempt `delivery` (claimed by this process) in the background."""
        if delivery.id in self._sending:
            return
        self._sending[delivery.id] = delivery.lease_token
        task = asyncio.create_task(self._attempt(delivery), name=f"deliver {delivery.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, grace_s: float) -> list[tuple[str, int]]:
        """Wait up to `grace_s` for attempts in flight, then cancel the rest; return the
        (id, lease token) of those abandoned, whose leases the caller should release."""
        if not self._tasks:
            return []
        _, pending = await asyncio.wait(set(self._tasks), timeout=max(grace_s, 0.0))
        abandoned = self.held()
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return abandoned

    async def _attempt(self, delivery: Delivery) -> None:
        # Each attempt runs in its own task, so these bind to its log lines only.
        structlog.contextvars.bind_contextvars(watch_id=delivery.watch_id, webhook_id=delivery.id)
        try:
            async with self._slots:
                await self._send_and_record(delivery)
        finally:
            self._sending.pop(delivery.id, None)

    async def _send_and_record(self, delivery: Delivery) -> None:
        started = self._clock.now()
        began = time.perf_counter()
        status_code, retry_after, error = await self._send(delivery, started)
        duration = time.perf_counter() - began
        now = self._clock.now()
        attempts_made = delivery.attempts + 1
        verdict = judge(status_code, retry_after, attempts_made, self._settings, now, self._rand())
        attempt = Attempt(
            delivery_id=delivery.id,
            event_type=delivery.event_type,
            number=attempts_made,
            started_at=started,
            duration_s=duration,
            status_code=status_code,
            error=error,
            next_attempt_at=verdict.next_attempt_at,
        )
        try:
            await self._store.record_attempt(self._owner, delivery, attempt, verdict.outcome, now)
        except LeaseLost:
            log.info("delivery.lease_lost")
            return
        except StoreError as failure:
            # Not recorded: the lease expires and the attempt is made again, same webhook-id.
            log.error("delivery.record_failed", error=str(failure))
            return
        log.info(
            "delivery.attempted",
            event_type=delivery.event_type,
            attempt=attempts_made,
            status_code=status_code,
            error=error,
            outcome=verdict.outcome,
            duration_s=round(duration, 4),
        )
        if self.on_outcome is not None:
            self.on_outcome(delivery, attempt, verdict.outcome, now)

    async def _send(
        self, delivery: Delivery, now: float
    ) -> tuple[int | None, str | None, str | None]:
        """(status code, Retry-After, error) of one request; the body is read up to a cap."""
        url, authorization = split_credentials(delivery.callback_url)
        try:
            secrets = (
                [self._vault.open(delivery.secret)]
                if delivery.secret
                else self._settings.signing_secrets_at(now)
            )
            if not secrets:
                return None, None, "no delivery.signing_secrets is configured to sign this watch"
            headers = {
                **{k: self._vault.open(v) for k, v in delivery.callback_headers.items()},
                **({"authorization": authorization} if authorization else {}),
                "content-type": "application/json",
                "user-agent": USER_AGENT,
                **sign(delivery.id, delivery.body, now, secrets),
            }
        except VaultError as unreadable:
            return None, None, unreadable.message
        try:
            async with asyncio.timeout(self._settings.timeout_s):
                request = self._client.build_request(
                    delivery.callback_method, url, content=delivery.body, headers=headers
                )
                response = await self._client.send(request, stream=True, follow_redirects=False)
                try:
                    await _read_capped(response, self._settings.max_response_bytes)
                finally:
                    await response.aclose()
        except TimeoutError:
            return None, None, f"no answer within {self._settings.timeout_s:g} s"
        except (httpx.HTTPError, OSError) as failure:
            return None, None, _describe(failure)
        except Exception as failure:  # anything else must still be recorded as an attempt
            log.warning("delivery.unexpected_error", exc_info=True)
            return None, None, _describe(failure)
        error = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
        if 300 <= response.status_code < 400:
            error = f"HTTP {response.status_code} (redirects are not followed)"
        return response.status_code, response.headers.get("retry-after"), error


def split_credentials(url: str) -> tuple[str, str | None]:
    """The URL without userinfo, and the Basic `Authorization` value the userinfo stood for."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    netloc = parts.netloc.rsplit("@", 1)[1]
    user, password = unquote(parts.username), unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return urlunsplit(parts._replace(netloc=netloc)), f"Basic {token}"


async def _read_capped(response: httpx.Response, cap: int) -> bytes:
    read = bytearray()
    async for chunk in response.aiter_raw():
        read += chunk
        if len(read) >= cap:
            break
    return bytes(read[:cap])


def _describe(failure: BaseException) -> str:
    # The aiohttp transport maps most connection errors to httpx.ConnectTimeout; the original
    # error underneath says what actually happened.
    root = failure.__cause__ or failure
    text = str(root) or str(failure) or "connection failed"
    return f"{type(root).__name__}: {text}"[:300]
