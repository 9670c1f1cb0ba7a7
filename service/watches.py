"""The service layer: registering, reading, cancelling and redelivering watches.

HTTP handlers call only this; it owns every store call made on a client's behalf.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from service import events, ssrf
from service.api.models import WatchOptions, WatchRequest, attempt_view, watch_view
from service.clock import Clock
from service.config import Settings
from service.dispatcher import Dispatcher
from service.errors import Conflict, InvalidRequest, NotFound
from service.ids import new_id
from service.signing import endpoint_secret
from service.store.base import (
    REDELIVERABLE,
    DuplicateIdempotencyKey,
    Idempotency,
    JobOfAnotherTenant,
    Store,
    Watch,
)
from service.vault import Vault

log = structlog.get_logger("service.watches")


@dataclass(frozen=True, slots=True)
class Registered:
    status: int  # 201 for a new watch, 200 for an idempotent replay
    body: bytes


def canonical(request: WatchOptions, namespace: bytes = b"") -> bytes:
    """The request as the bytes its Idempotency-Key records: keys sorted, so that the same
    request in another order is the same; `namespace` tells endpoints apart."""
    return namespace + orjson.dumps(request.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)


def field_error(field: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {message}", errors=[{"field": field, "message": message}])


class WatchService:
    def __init__(
        self,
        store: Store,
        dispatcher: Dispatcher,
        settings: Settings,
        clock: Clock,
        vault: Vault | None = None,
        resolve: ssrf.Resolve | None = None,
    ) -> None:
        self._store = store
        self._vault = vault or Vault([])
        self._dispatcher = dispatcher
        self._settings = settings
        self._clock = clock
        self._resolve = resolve
        self._policy = settings.security.callback_policy()

    async def register(
        self,
        tenant: str,
        request: WatchRequest,
        idempotency_key: str | None,
        traceparent: str | None = None,
        *,
        request_body: bytes = b"",
        answer: Callable[[bytes], bytes] | None = None,
        checked: tuple[float, float] | None = None,
        started: bool = False,
    ) -> Registered:
        """Validate, commit, and start polling at once. 201, or 200 replaying a retried call.

        `POST /v1/generate` records its own request (`request_body`), and its own `answer`
        (made from this one), under the key; it has run `check` already and passes what it
        gave (`checked`), so the callback's address is not resolved twice. It says it `started`
        the job: with the shared upstream key, the tenant is then recorded as the job's owner,
        and another tenant's watch of it with that key is a 404 (`Store.insert_watch`)."""
        # Only a call with an Idempotency-Key needs its request recorded (to tell a retry from
        # a new body under the same key).
        if idempotency_key is not None:
            request_body = request_body or canonical(request)
            replay = await self.replay(tenant, idempotency_key, request_body)
            if replay is not None:
                return replay
        interval, timeout = checked or await self.check(request)

        now = self._clock.now()
        seal = self._vault.seal
        headers = dict(request.callback_headers)
        callback = request.callback_url
        if callback and traceparent and "traceparent" not in {name.lower() for name in headers}:
            headers["traceparent"] = traceparent  # the caller's trace goes on in the webhook
        # Without its own secret a watch is signed with the configured signing secrets, if any
        # (stored as ""), else with one generated for it. A watch without a callback signs
        # nothing (subscriptions have their own secrets).
        shared = bool(self._settings.delivery.signing_secrets)
        secret = "" if callback is None else endpoint_secret(request.secret, shared)
        watch = Watch(
            id=new_id("wch", now),
            tenant=tenant,
            job_id=request.job_id,
            callback_url=request.callback_url,
            callback_method=request.callback_method,
            callback_headers={k: seal(v) for k, v in headers.items()},
            metadata=request.metadata,
            events=tuple(request.events),
            payload_format=request.payload_format,
            secret=seal(secret) if secret else "",
            poll_interval_s=interval,
            timeout_s=timeout,
            upstream_api_key=None
            if request.upstream_api_key is None
            else seal(request.upstream_api_key),
            created_at=now,
            updated_at=now,
            next_poll_at=now,
            final_statuses=tuple(request.final_statuses),
        )
        body = orjson.dumps({**watch_view(watch), "secret": secret or None})
        if answer is not None:
            body = answer(body)
        # The stored answer holds the secret, so it is sealed like the secret itself.
        idempotency = (
            Idempotency(
                idempotency_key,
                self._vault.fingerprint(request_body),
                seal(body.decode()).encode(),
            )
            if idempotency_key
            else None
        )
        lease_until = now + self._settings.store.lease_s
        shared = self._shared_key(request.upstream_api_key)
        try:
            stored = await self._store.insert_watch(
                watch, idempotency, lease_owner=self._dispatcher.owner, lease_until=lease_until,
                shared_key=shared, started=started and shared,
            )  # fmt: skip
        except JobOfAnotherTenant:
            # A 404, as for another tenant's watch: nothing says whose the job is.
            log.info("watch.refused_job_of_another_tenant", job_id=watch.job_id)
            raise NotFound(
                f"no job {watch.job_id} for this token: a job started through POST /v1/generate "
                "with the bridge's upstream key can be watched only with the API token that "
                "started it; check the job id"
            ) from None
        except DuplicateIdempotencyKey:
            assert idempotency_key is not None  # raised only with a key
            replay = await self.replay(tenant, idempotency_key, request_body)
            assert replay is not None  # the key's row exists: it made this insert fail
            return replay
        self._dispatcher.adopt(stored)
        log.info("watch.registered", watch_id=watch.id, job_id=watch.job_id)
        return Registered(201, body)

    def _shared_key(self, key: str | None) -> bool:
        """Whether a watch with this `upstream_api_key` polls with the configured key, which
        every tenant shares (the upstream cannot tell them apart)."""
        if key is None:
            return True
        configured = self._settings.upstream.api_key
        return configured is not None and hmac.compare_digest(
            key.encode(), configured.get_secret_value().encode()
        )

    async def check(self, request: WatchOptions) -> tuple[float, float]:
        """Refuse (422) what the request model alone cannot judge: the intervals against the
        settings, a per-watch key without an encryption key, where the callback points. The
        poll interval and timeout to use."""
        poll = self._settings.poll
        interval = poll.interval_s if request.poll_interval_s is None else request.poll_interval_s
        timeout = poll.timeout_s if request.timeout_s is None else request.timeout_s
        if not poll.min_interval_s <= interval <= 3600:
            raise field_error(
                "poll_interval_s", f"must be between {poll.min_interval_s:g} and 3600 seconds"
            )
        if not 0 < timeout <= poll.max_timeout_s:
            raise field_error("timeout_s", f"must be above 0 and at most {poll.max_timeout_s:g}")
        if request.upstream_api_key is not None and not self._vault.enabled:
            raise field_error(
                "upstream_api_key",
                "per-watch API keys are stored encrypted and security.encryption_key is not "
                "set; set it, or leave this field out to use the configured upstream.api_key",
            )
        if request.callback_url is not None:
            try:
                await ssrf.check_url(request.callback_url, self._policy, self._resolve)
            except ssrf.CallbackBlocked as blocked:
                raise field_error("callback_url", blocked.reason) from None
        return interval, timeout

    async def replay(self, tenant: str, key: str, request_body: bytes) -> Registered | None:
        """The answer recorded under `key` for this same request, None when there is none;
        `Conflict` when the key was used with another request."""
        earlier = await self._store.find_idempotency(tenant, key)
        if earlier is None:
            return None
        if not self._vault.matches(earlier.request_hash, request_body):
            raise Conflict(
                "this Idempotency-Key was already used with a different body; "
                "use a new key for a new registration"
            )
        return Registered(200, self._vault.open(earlier.response.decode()).encode())

    async def get(self, tenant: str, watch_id: str) -> dict[str, Any]:
        return watch_view(await self._existing(tenant, watch_id))

    async def _existing(self, tenant: str, watch_id: str) -> Watch:
        watch = await self._store.get_watch(tenant, watch_id)
        if watch is None:
            raise NotFound(f"no watch {watch_id}")
        return watch

    async def list_page(
        self, tenant: str, status: str | None, job_id: str | None, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        found = await self._store.list_watches(
            tenant, status=status, job_id=job_id, before_id=cursor, limit=limit + 1
        )
        page = found[:limit]
        next_cursor = page[-1].id if len(found) > limit else None
        return {"data": [watch_view(w) for w in page], "next_cursor": next_cursor}

    async def cancel(self, tenant: str, watch_id: str) -> dict[str, Any]:
        watch = await self._store.cancel_watch(tenant, watch_id, self._clock.now())
        if watch is None:
            raise NotFound(f"no watch {watch_id}")
        self._dispatcher.forget(watch_id)
        log.info("watch.cancelled", watch_id=watch_id, status=watch.status)
        return watch_view(watch)

    async def attempts(self, tenant: str, watch_id: str) -> dict[str, Any]:
        await self._existing(tenant, watch_id)
        found = await self._store.list_attempts(tenant, watch_id)
        return {"data": [attempt_view(a) for a in found]}

    async def redeliver(self, tenant: str, watch_id: str) -> dict[str, Any]:
        before = await self._existing(tenant, watch_id)
        if before.status not in REDELIVERABLE:
            raise Conflict(
                f"watch {watch_id} is {before.status}; only delivered, failed, gone and "
                "completed watches can be redelivered"
            )
        after = await self._store.redeliver(tenant, watch_id, self._clock.now())
        # A completed watch (no callback) stays completed: what was sent again shows in its
        # final event still being kept (events go with the bodies, after the retention).
        resent = after is not None and (
            after.status == "delivering"
            or (
                after.status == "completed"
                and any(e.final for e in await self._store.watch_events(tenant, watch_id))
            )
        )
        if after is None or not resent:
            attempts = await self._store.list_attempts(tenant, watch_id)
            if not any(a.event_type in events.FINAL_EVENTS for a in attempts):
                raise Conflict(
                    f"watch {watch_id} ended ({before.status}) before its job did: there is no "
                    "final event to send again"
                )
            raise Conflict(
                f"the final event of watch {watch_id} can no longer be sent again: its body "
                "was purged after delivery.payload_retention_days"
            )
        await self._dispatcher.claim_deliveries()
        log.info("watch.redelivered", watch_id=watch_id)
        return watch_view(after)
