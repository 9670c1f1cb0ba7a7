"""The service layer of subscriptions: tenant-wide endpoints that get every matching event.

HTTP handlers and the dashboard call only this; it owns every store call made for
subscriptions, and each tenant's rate of subscription changes (`auth.subscription_changes_per_min`):
creations, deletions, enabling and disabling, rotations and test events, from either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import structlog

from service import events, ssrf
from service.auth import RateLimiter
from service.clock import Clock
from service.config import Settings
from service.endpoints import Endpoints, endpoint_of
from service.errors import Conflict, NotFound
from service.ids import new_id
from service.sender import Sender
from service.signing import endpoint_secret, new_secret
from service.store.base import Delivery, Store, Subscription, SubscriptionHealth
from service.vault import Vault

log = structlog.get_logger("service.subscriptions")
# Every event of the tenant is delivered to each of them: the cap bounds that fan-out
# (disabled ones count: they may be enabled again).
MAX_ACTIVE = 100
# A subscription's health counts the attempts of this last while.
HEALTH_WINDOW_S = 24 * 3600
# After a rotation the secret before signs alongside the new one this long, so a receiver can
# switch to the new secret at its own pace (as the configured signing secrets' expires_at do).
ROTATION_OVERLAP_S = 24 * 3600


@dataclass(frozen=True, slots=True)
class Created:
    """A new subscription as committed, with its signing secret in clear (shown this once;
    None when the configured signing secrets sign for it)."""

    subscription: Subscription
    secret: str | None


@dataclass(frozen=True, slots=True)
class Rotated:
    """A subscription after a rotation, with its new secret in clear (shown this once)."""

    subscription: Subscription
    secret: str


@dataclass(frozen=True, slots=True)
class TestSent:
    """How a test event went: its `webhook-id`, and the receiver's status code or the error."""

    message_id: str
    status_code: int | None
    error: str | None
    duration_s: float

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class SubscriptionService:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        clock: Clock,
        sender: Sender,
        vault: Vault | None = None,
        resolve: ssrf.Resolve | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._sender = sender
        self._vault = vault or Vault([])
        self._endpoints = Endpoints(settings.delivery, self._vault)
        self._resolve = resolve
        self._policy = settings.security.callback_policy()
        auth = settings.auth
        self._changes = RateLimiter(
            auth.subscription_changes_per_min / 60, auth.subscription_change_burst, clock
        )

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
        self._change(tenant)
        await ssrf.check_field("url", url, self._policy, self._resolve)
        # Counted before the insert: two creations racing at 99 may make 101. The cap is there
        # to bound fan-out, which one or two more do not change.
        if len(await self._store.list_subscriptions(tenant)) >= MAX_ACTIVE:
            raise Conflict(
                f"this tenant already has {MAX_ACTIVE} subscriptions (active or disabled); "
                "delete one first"
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

    def _change(self, tenant: str) -> None:
        """Spend one of the tenant's subscription changes (`TooManyRequests` past its rate)."""
        self._changes.spend(tenant, "subscription changes")

    async def list(self, tenant: str) -> list[Subscription]:
        """The tenant's active and disabled subscriptions, oldest first."""
        return await self._store.list_subscriptions(tenant)

    async def health(self, tenant: str) -> dict[str, SubscriptionHealth]:
        """Per subscription id, how its attempts of the last `HEALTH_WINDOW_S` went (absent:
        none)."""
        return await self._store.subscription_health(tenant, self._clock.now() - HEALTH_WINDOW_S)

    async def set_enabled(self, tenant: str, subscription_id: str, enabled: bool) -> Subscription:
        """Enable or disable a subscription. A disabled one gets no new deliveries and its
        pending ones are cancelled (redeliver them once enabled again)."""
        self._change(tenant)
        status: Literal["active", "disabled"] = "active" if enabled else "disabled"
        changed = await self._store.set_subscription_status(
            tenant, subscription_id, status, self._clock.now()
        )
        if changed is None:
            raise NotFound(f"no subscription {subscription_id}")
        log.info("subscription.status_changed", subscription_id=subscription_id, status=status)
        return changed

    async def rotate(self, tenant: str, subscription_id: str) -> Rotated:
        """Give the subscription a new secret; the one before (its own, or the configured
        signing secrets) signs too for `ROTATION_OVERLAP_S`."""
        self._change(tenant)
        now, secret = self._clock.now(), new_secret()
        rotated = await self._store.rotate_subscription_secret(
            tenant, subscription_id, self._vault.seal(secret), now + ROTATION_OVERLAP_S, now
        )
        if rotated is None:
            raise NotFound(f"no subscription {subscription_id}")
        log.info("subscription.secret_rotated", subscription_id=subscription_id)
        return Rotated(rotated, secret)

    async def send_test(self, tenant: str, subscription_id: str) -> TestSent:
        """POST a signed `webhook.test` event to the subscription now, once (no retries, not
        recorded as a delivery), and say how the receiver answered."""
        self._change(tenant)
        subscription = await self.get(tenant, subscription_id)
        if subscription.status not in ("active", "disabled"):
            raise NotFound(f"no subscription {subscription_id}")
        now = self._clock.now()
        message_id = new_id("msg", now)
        body = events.test_envelope(new_id("evt", now), now, subscription.id)
        delivery = Delivery(
            message_id, "", events.TEST, body, False, 0, 0, subscription.url, "POST",
            subscription.headers, subscription.secret, now, subscription.id, None,
            subscription.final_statuses, tenant, subscription.previous_secret,
            subscription.previous_secret_until,
        )  # fmt: skip
        endpoint = endpoint_of(subscription.url)
        headers = self._endpoints.headers(delivery, endpoint, now)
        if isinstance(headers, str):
            return TestSent(message_id, None, headers, 0.0)
        answer = await self._sender.send("POST", endpoint.url, headers, body, tenant)
        sent = TestSent(message_id, answer.status_code, answer.error, self._clock.now() - now)
        log.info("subscription.tested", subscription_id=subscription_id, status=sent.status_code)
        return sent

    async def get(self, tenant: str, subscription_id: str) -> Subscription:
        """The subscription whatever its status (`NotFound` when there is no such one)."""
        found = await self._store.get_subscription(tenant, subscription_id)
        if found is None:
            raise NotFound(f"no subscription {subscription_id}")
        return found

    async def delete(self, tenant: str, subscription_id: str) -> None:
        """End an active or disabled subscription: nothing more is sent to it, pending
        deliveries included."""
        self._change(tenant)
        deleted = await self._store.delete_subscription(tenant, subscription_id, self._clock.now())
        if deleted is None:
            raise NotFound(f"no active subscription {subscription_id}")
        log.info("subscription.deleted", subscription_id=subscription_id)
