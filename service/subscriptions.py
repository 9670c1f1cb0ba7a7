"""The service layer of subscriptions: tenant-wide endpoints that get every matching event.

HTTP handlers and the dashboard call only this; it owns every store call made for
subscriptions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import structlog

from service import ssrf
from service.clock import Clock
from service.config import Settings
from service.errors import Conflict, InvalidRequest, NotFound
from service.ids import new_id
from service.signing import endpoint_secret
from service.store.base import Store, Subscription
from service.vault import Vault

log = structlog.get_logger("service.subscriptions")
# Every event of the tenant is delivered to each of them: the cap bounds that fan-out.
MAX_ACTIVE = 100


@dataclass(frozen=True, slots=True)
class Created:
    """A new subscription as committed, with its signing secret in clear (shown this once;
    None when the configured signing secrets sign for it)."""

    subscription: Subscription
    secret: str | None


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

    async def create(
        self,
        tenant: str,
        url: str,
        events: Sequence[str],
        *,
        secret: str | None = None,
        headers: Mapping[str, str] | None = None,
        final_statuses: Sequence[int] = (),
    ) -> Created:
        """Check where the URL points, and commit. Each argument is valid on its own already
        (the HTTP layer's request model checks each)."""
        try:
            await ssrf.check_url(url, self._policy, self._resolve)
        except ssrf.CallbackBlocked as blocked:
            raise InvalidRequest.field("url", blocked.reason) from None
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
        secret = endpoint_secret(secret, bool(self._settings.delivery.signing_secrets))
        subscription = await self._store.insert_subscription(
            Subscription(
                id=new_id("sub", now),
                tenant=tenant,
                url=url,
                events=tuple(events),
                secret=seal(secret) if secret else "",
                headers={name: seal(value) for name, value in (headers or {}).items()},
                final_statuses=tuple(final_statuses),
                status="active",
                created_at=now,
                updated_at=now,
            )
        )
        log.info("subscription.created", subscription_id=subscription.id, events=list(events))
        return Created(subscription, secret or None)

    async def list(self, tenant: str) -> list[Subscription]:
        """The tenant's active subscriptions, oldest first."""
        return await self._store.list_subscriptions(tenant)

    async def get(self, tenant: str, subscription_id: str) -> Subscription:
        """The subscription whatever its status (`NotFound` when there is no such one)."""
        found = await self._store.get_subscription(tenant, subscription_id)
        if found is None:
            raise NotFound(f"no subscription {subscription_id}")
        return found

    async def delete(self, tenant: str, subscription_id: str) -> None:
        """End an active subscription: nothing more is sent to it, pending deliveries
        included."""
        deleted = await self._store.delete_subscription(tenant, subscription_id, self._clock.now())
        if deleted is None:
            raise NotFound(f"no active subscription {subscription_id}")
        log.info("subscription.deleted", subscription_id=subscription_id)
