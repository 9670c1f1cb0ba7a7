"""The service layer of redelivery: a watch's final event sent again to the endpoints an
operator picks, and the failed webhooks of many watches at once ("recover", bounded by
`api.max_redeliveries`).

Each redelivery starts a new series of attempts of each delivery it sends again (same
`webhook-id`, `series` one more, attempts numbered from 1). HTTP handlers and the dashboard
call only this for it; it answers records and refuses with the errors of `service.errors`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import structlog

from service.clock import Clock
from service.config import Settings
from service.delivery import Deliverer
from service.errors import Conflict, InvalidRequest, NotFound
from service.store import rules
from service.store.base import (
    CALLBACK,
    REDELIVERABLE,
    DeliveryRecord,
    Redelivery,
    Store,
    Subscription,
    Watch,
    WatchFilter,
)
from service.watches import WatchService

log = structlog.get_logger("service.redelivery")

# Why an endpoint cannot get the final event again, in words (the dashboard's too).
UNSENDABLE_WORDS: dict[rules.Unsendable, str] = {
    "pending": "still in its series of attempts",
    "purged": "no body left to send (purged after delivery.payload_retention_days)",
    "inactive": "a subscription no longer active (disabled, deleted or gone)",
}


@dataclass(frozen=True, slots=True)
class Choice:
    """An endpoint of a watch's final event as a redelivery offers it: its delivery (where its
    latest series stands), its subscription (None for the callback, or one deleted or gone),
    and why it cannot be sent again (None: it can)."""

    delivery: DeliveryRecord
    subscription: Subscription | None
    unsendable: rules.Unsendable | None

    @property
    def endpoint(self) -> str:
        return self.delivery.endpoint

    @property
    def accepted(self) -> bool:
        """Its latest series ended with a 2xx: sending again is a duplicate for its receiver."""
        return self.delivery.status == "succeeded"

    @property
    def suggested(self) -> bool:
        """Chosen unless the operator says otherwise: it can be sent and did not accept."""
        return self.unsendable is None and not self.accepted


@dataclass(frozen=True, slots=True)
class Redelivered:
    """A watch redelivered: the watch as it stands, and the deliveries started again (each in
    its new series; or, in a plan, the ones that would be)."""

    watch: Watch
    deliveries: list[DeliveryRecord]


@dataclass(frozen=True, slots=True)
class Recovery:
    """A redelivery of the failed webhooks among a tenant's watches: how many failed watches
    the filters match, those taken (newest first, at most `limit`) with what was (or would be)
    sent again to the endpoints that did not accept it, and those taken that had nothing left
    to send."""

    matched: int
    limit: int
    redelivered: list[Redelivered]
    unsendable: list[Watch]

    @property
    def left(self) -> int:
        """Failed watches the filters match past the ones taken: for the next recovery."""
        return max(0, self.matched - len(self.redelivered) - len(self.unsendable))

    def endpoints(self) -> dict[str, int]:
        """How many of the watches each endpoint gets the event of (`CALLBACK` first)."""
        counted = {CALLBACK: 0}
        for item in self.redelivered:
            for delivery in item.deliveries:
                counted[delivery.endpoint] = counted.get(delivery.endpoint, 0) + 1
        return {key: n for key, n in counted.items() if n}


@dataclass(frozen=True)
class RedeliveryService:
    store: Store
    watches: WatchService
    deliverer: Deliverer
    settings: Settings
    clock: Clock

    async def choices(self, tenant: str, watch_id: str) -> list[Choice]:
        """The endpoints of the watch's final event, the callback's first (`NotFound` when
        there is no such watch)."""
        await self.watches.get(tenant, watch_id)
        return await self._choices(tenant, watch_id, await self.store.list_subscriptions(tenant))

    async def _choices(
        self, tenant: str, watch_id: str, subscriptions: Sequence[Subscription]
    ) -> list[Choice]:
        by_id = {subscription.id: subscription for subscription in subscriptions}
        found = []
        for delivery in await self.watches.final_deliveries(tenant, watch_id):
            subscription = by_id.get(delivery.subscription_id or "")
            active = delivery.subscription_id is None or (
                subscription is not None and subscription.status == "active"
            )
            final = rules.Final(
                delivery.id, delivery.subscription_id, delivery.status,
                delivery.body is not None, active,
            )  # fmt: skip
            found.append(Choice(delivery, subscription, rules.unsendable(final)))
        return found

    async def redeliver(
        self, tenant: str, watch_id: str, endpoints: Collection[str] | None = None
    ) -> Redelivered:
        """Send the watch's final event again to `endpoints` (`CALLBACK` and subscription ids;
        None: every endpoint that can get it, those that accepted it too), each in a new
        series. `InvalidRequest` for an endpoint the event was not addressed to, `Conflict`
        when the watch has not ended or nothing chosen can be sent again."""
        watch = await self.watches.get(tenant, watch_id)
        if watch.status not in REDELIVERABLE:
            raise Conflict(
                f"watch {watch_id} is {watch.status}; only delivered, failed, gone and "
                "completed watches can be redelivered"
            )
        choices = await self._choices(tenant, watch_id, await self.store.list_subscriptions(tenant))
        if endpoints is not None:
            _check_chosen(watch_id, choices, endpoints)
        done = await self.store.redeliver(tenant, watch_id, self.clock.now(), endpoints)
        if done is None:
            raise NotFound(f"no watch {watch_id}")
        if not done.restarted:
            raise Conflict(_nothing_sent(watch, choices, endpoints))
        await self.deliverer.claim()  # at once, not at the next periodic claim
        log.info("watch.redelivered", watch_id=watch_id, webhook_ids=list(done.restarted))
        return await self._redelivered(tenant, done)

    async def _redelivered(self, tenant: str, done: Redelivery) -> Redelivered:
        found = await self.watches.final_deliveries(tenant, done.watch.id)
        return Redelivered(done.watch, [d for d in found if d.id in done.restarted])

    async def plan(self, tenant: str, filters: WatchFilter) -> Recovery:
        """What `recover` would do now, sending nothing."""
        return await self._recovery(tenant, filters, send=False)

    async def recover(self, tenant: str, filters: WatchFilter) -> Recovery:
        """Send the final event again to every endpoint that did not accept it, of the newest
        `api.max_redeliveries` watches that `filters` let through whose delivery failed (the
        filters' own delivery state is not read); the others are left for the next call."""
        recovery = await self._recovery(tenant, filters, send=True)
        if recovery.redelivered:
            await self.deliverer.claim()
        log.info(
            "watches.recovered", matched=recovery.matched,
            redelivered=len(recovery.redelivered), unsendable=len(recovery.unsendable),
        )  # fmt: skip
        return recovery

    async def _recovery(self, tenant: str, filters: WatchFilter, *, send: bool) -> Recovery:
        failed = dataclasses.replace(filters, delivery="failed")
        matched = await self.watches.matching(tenant, failed)
        limit = self.settings.api.max_redeliveries
        page = await self.watches.list_page(tenant, failed, limit, None)
        subscriptions = await self.store.list_subscriptions(tenant)
        redelivered, unsendable = [], []
        for watch in page.watches:
            choices = await self._choices(tenant, watch.id, subscriptions)
            item = Redelivered(watch, [c.delivery for c in choices if c.suggested])
            if send and item.deliveries:
                item = await self._send(tenant, watch, [d.endpoint for d in item.deliveries])
            if item.deliveries:
                redelivered.append(item)
            else:
                unsendable.append(watch)
        return Recovery(matched, limit, redelivered, unsendable)

    async def _send(self, tenant: str, watch: Watch, endpoints: Sequence[str]) -> Redelivered:
        """One watch of a recovery sent again to `endpoints`: what was started."""
        done = await self.store.redeliver(tenant, watch.id, self.clock.now(), endpoints)
        if done is None or not done.restarted:  # gone, or changed since it was read
            return Redelivered(watch, [])
        return await self._redelivered(tenant, done)


def _check_chosen(watch_id: str, choices: Sequence[Choice], endpoints: Collection[str]) -> None:
    """Refuse a choice of no endpoint, or of one the final event was not addressed to."""
    known = [choice.endpoint for choice in choices]
    if not endpoints:
        raise InvalidRequest.field(
            "endpoints", f"choose at least one of {', '.join(known) or 'its endpoints'}"
        )
    unknown = [endpoint for endpoint in endpoints if endpoint not in known]
    if unknown:
        among = f"choose among {', '.join(known)}" if known else "it has none"
        raise InvalidRequest.field(
            "endpoints",
            f"{unknown[0]} did not get the final event of watch {watch_id}; {among}",
        )


def _nothing_sent(
    watch: Watch, choices: Sequence[Choice], endpoints: Collection[str] | None
) -> str:
    """Why a redelivery of `watch` to `endpoints` started nothing, in a sentence."""
    if not choices:
        return (
            f"watch {watch.id} has no final event to send again: it ended ({watch.status}) "
            "before its job did, or no endpoint asked for it"
        )
    why = [
        f"{choice.endpoint}: {UNSENDABLE_WORDS[choice.unsendable]}"
        for choice in choices
        if choice.unsendable is not None and (endpoints is None or choice.endpoint in endpoints)
    ]
    if not why:  # sendable when read, no longer when redelivered: another redelivery's doing
        return "nothing was sent again: the endpoints changed meanwhile; look again and choose"
    return f"nothing was sent again: {'; '.join(why)}"
