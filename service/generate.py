"""The service layer of `POST /v1/generate`: start an upstream job and watch it, in one call.

Every check a registration makes runs before the upstream is called, so a request the bridge
would refuse starts no job, nor does a call while the store is known to be unavailable. When
the upstream refuses or fails, nothing is registered; when it starts a job, the job is watched
exactly as `POST /v1/watches` would watch it. A job started with the shared upstream key is
recorded as the tenant's with its watch, so that no other tenant can watch it with that key
(and read its result).

With an `Idempotency-Key`, a retried call answers what the first one did without calling the
upstream again. Calls with the same key wait for each other in one process; across processes
the upstream gets the same key (derived per tenant) and the store keeps one registration.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from service.answers import JOB_ID, JOB_ID_RULE
from service.config import Settings
from service.errors import (
    BadGateway,
    InvalidRequest,
    StoreError,
    StoreUnavailable,
    UpstreamRefused,
)
from service.store.health import StoreHealth
from service.upstream import UpstreamClient
from service.watches import Registered, WatchOptions, WatchService, canonical

log = structlog.get_logger("service.generate")


@dataclass(slots=True)
class _Turn:
    """The lock of one (tenant, key) and how many calls hold or await it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


def recorded_request(job_input: dict[str, Any], options: WatchOptions) -> bytes:
    """The request as its `Idempotency-Key` records it; namespaced, so that a key reused on
    `POST /v1/watches` is a conflict, never a replay of the other endpoint's answer."""
    return canonical(options, b"POST /v1/generate\n", input=job_input)


def upstream_key(tenant: str, key: str) -> str:
    """The `Idempotency-Key` sent upstream: stable for one tenant's key, and distinct between
    tenants, who may share the configured upstream API key and choose the same keys."""
    return hashlib.sha256(f"{tenant}\x00{key}".encode()).hexdigest()


@dataclass(frozen=True)
class GenerateService:
    watches: WatchService
    upstreams: Mapping[str, UpstreamClient]
    settings: Settings
    store_health: StoreHealth
    _turns: dict[tuple[str, str], _Turn] = field(default_factory=dict, init=False)

    async def generate(
        self,
        tenant: str,
        job_input: dict[str, Any],
        options: WatchOptions,
        idempotency_key: str | None = None,
        traceparent: str | None = None,
    ) -> Registered:
        """Start the job with `job_input` (the upstream's request body) and register its
        watch; or replay a retried call's answer."""
        if idempotency_key is None:
            return await self._generate(tenant, job_input, options, None, b"", traceparent)
        recorded = recorded_request(job_input, options)
        async with self._one_at_a_time(tenant, idempotency_key):
            replay = await self.watches.replay(tenant, idempotency_key, recorded)
            if replay is not None:
                log.info("generate.replayed")
                return replay
            return await self._generate(
                tenant, job_input, options, idempotency_key, recorded, traceparent
            )

    async def _generate(
        self,
        tenant: str,
        job_input: dict[str, Any],
        options: WatchOptions,
        idempotency_key: str | None,
        recorded: bytes,
        traceparent: str | None,
    ) -> Registered:
        checked = await self.watches.check(options)
        client = self.upstreams[options.upstream]  # `check` knows the name
        if not client.creates:
            raise InvalidRequest.field(
                "upstream",
                f"upstream {options.upstream!r} cannot start jobs here: its profile declares no "
                "create request; start the job yourself and register it with POST /v1/watches",
            )
        unavailable = self.store_health.reason
        if unavailable is not None:
            # The job could not be watched: none is started (the outage is logged already).
            raise StoreUnavailable(unavailable)
        limits = self.settings.upstream_named(options.upstream)[0]
        api_key = options.upstream_api_key or limits.bridge_key
        creation = await client.create(
            orjson.dumps(job_input),
            api_key,
            None if idempotency_key is None else upstream_key(tenant, idempotency_key),
        )
        if creation.kind == "refused":
            assert creation.http_status is not None
            log.info("generate.refused", http_status=creation.http_status, error=creation.error)
            raise UpstreamRefused(
                creation.http_status,
                f"the upstream refused the generation: {creation.error}",
                retry_after=creation.retry_after or None,
            )
        job_id, document = creation.job_id, creation.document
        if creation.kind != "created" or job_id is None or document is None:
            log.warning("generate.failed", http_status=creation.http_status, error=creation.error)
            raise BadGateway(f"{creation.error}; nothing was registered")
        if not JOB_ID.fullmatch(job_id):
            # Started, but its id cannot be polled as a path segment the bridge trusts.
            shown = client.secrets(api_key).redact(job_id)
            log.error("generate.unwatchable", job_id=shown[:200])
            raise BadGateway(
                f"the upstream started job {shown[:80]!r}, whose id the bridge cannot watch "
                f"(a job id is {JOB_ID_RULE}); nothing was registered"
            )
        try:
            registered = await self.watches.commit(
                tenant, job_id, checked, idempotency_key, recorded, traceparent, document
            )
        except StoreError as error:
            # The job runs unwatched: say which, so that it can be registered by hand.
            log.error("generate.unregistered", job_id=job_id, error=str(error))
            raise
        except Exception:
            log.exception("generate.unregistered", job_id=job_id)
            raise
        log.info("generate.started", job_id=job_id, replayed=registered.registration is None)
        return registered

    @asynccontextmanager
    async def _one_at_a_time(self, tenant: str, key: str) -> AsyncIterator[None]:
        """Hold the lock of (tenant, key); it is dropped once no call holds or awaits it."""
        turn = self._turns.setdefault((tenant, key), _Turn())
        turn.users += 1
        try:
            async with turn.lock:
                yield
        finally:
            turn.users -= 1
            if turn.users == 0:
                del self._turns[(tenant, key)]

    @property
    def pending_keys(self) -> int:
        """How many keys have a call in progress (their locks are held in memory)."""
        return len(self._turns)
