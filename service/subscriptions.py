"""The service layer of subscriptions: tenant-wide endpoints that get every matching event.

HTTP handlers call only this; it owns every store call made for subscriptions.
"""

from __future__ import annotations

from typing import Any

import structlog

from service import ssrf
from service.api.models import SubscriptionRequest, subscription_view
from service.clock import Clock
from service.config import Settings
from service.errors import Conflict, NotFound
from service.ids import new_id
from service.signing import endpoint_secret
from service.store.base import Store, Subscription
from service.vault import Vault
from service.watches import field_error

log = structlog.get_logger("service.subscriptions")
# Every event of the tenant is delivered to each of them: the cap bounds that fan-out.
MAX_ACTIVE = 100


class SubscriptionService:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        clock: Clock,
        vault: Vault | None = None,
        resolve: ssrf.Resolve | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._vault = vault or Vault([])
        self._resolve = resolve
        self._policy = settings.security.callback_policy()

    async def create(self, tenant: str, request: SubscriptionRequest) -> dict[str, Any]:
        """Check where the URL points, commit, and answer the view with the secret (this once;
        null when the configured signing secrets sign for it)."""
        try:
            await ssrf.check_url(request.url, self._policy, self._resolve)
        except ssrf.CallbackBlocked as blocked:
            raise field_error("url", blocked.reason) from None
        # Counted before the insert: two creations racing at 99 may make 101. The cap is there
        # to bound fan-out, which one or two more do not change.
        if len(await self._store.list_subscriptions(tenant)) >= MAX_ACTIVE:
            raise Conflict(
                f"this tenant already has {MAX_ACTIVE} active subscriptions; delete one first"
            )
        now = self._clock.now()
        seal = self._vault.seal
        # As for watches: without its own secret, the configured signing secrets sign (stored
        # as ""), else one is generated.
        secret = endpoint_secret(request.secret, bool(self._settings.delivery.signing_secrets))
        subscription = await self._store.insert_subscription(
            Subscription(
                id=new_id("sub", now),
                tenant=tenant,
                url=request.url,
                events=tuple(request.events),
                secret=seal(secret) if secret else "",
                headers={name: seal(value) for name, value in request.headers.items()},
                final_statuses=tuple(request.final_statuses),
                status="active",
                created_at=now,
                updated_at=now,
            )
        )
        log.info("subscription.created", subscription_id=subscription.id, events=request.events)
        return {**subscription_view(subscription), "secret": secret or None}

    async def list(self, tenant: str) -> dict[str, Any]:
        found = await self._store.list_subscriptions(tenant)
        return {"data": [subscription_view(s) for s in found]}

    async def delete(self, tenant: str, subscription_id: str) -> None:
        """End an active subscription: nothing more is sent to it, pending deliveries
        included."""
        deleted = await self._store.delete_subscription(tenant, subscription_id, self._clock.now())
        if deleted is None:
            raise NotFound(f"no active subscription {subscription_id}")
        log.info("subscription.deleted", subscription_id=subscription_id)
