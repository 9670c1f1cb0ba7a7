"""The store's rules, decided once: where an event goes, how a job ended and what became of its
delivery, what an attempt's outcome ends, what a redelivery or a retry starts again, which due
deliveries a claim with shares takes (see `base.Store`).

Pure functions over the few values each needs. Every backend reads those values, calls the
rule and persists what it answers under its own locks and fences, so SQLite, PostgreSQL and the
memory store cannot disagree on them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from service import events
from service.ids import new_id
from service.store.base import (
    CALLBACK,
    JOB_OUTCOMES,
    REDELIVERABLE,
    WATCH_STATUSES,
    AttemptRecord,
    DeliveryState,
    DeliveryStatus,
    JobOutcome,
    NewDelivery,
    NewEvent,
    WatchFilter,
    WatchStatus,
    callback_host,
)

_V = TypeVar("_V")

# A watch still at work (polling, or delivering its final event): cancelling ends it, and a
# 410 from its callback makes it `gone`. The other statuses have ended.
LIVE: tuple[WatchStatus, ...] = ("active", "delivering")
# The end of a watch when its final callback delivery ends.
ENDS_WATCH: Mapping[str, WatchStatus] = {
    "succeeded": "delivered", "failed": "failed", "gone": "gone",
}  # fmt: skip


# Fan-out: an event addressed to its endpoints.


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An `active` subscription as fan-out reads it."""

    id: str
    events: frozenset[str]
    host: str  # `callback_host` of its URL

    @classmethod
    def of(cls, subscription_id: str, events: Sequence[str], url: str) -> Endpoint:
        return cls(subscription_id, frozenset(events), callback_host(url))


@dataclass(frozen=True, slots=True)
class Addressed:
    """A delivery to record: the event sent to one endpoint."""

    delivery: NewDelivery
    subscription_id: str | None  # None: the watch's own callback
    host: str  # the per-host limit's key, kept with the delivery


def fan_out(
    event: NewEvent,
    callback_url: str | None,
    subscriptions: Sequence[Endpoint],
    now: float,
    make_id: Callable[[str, float], str] = new_id,
) -> list[Addressed]:
    """The deliveries of `event` of a watch calling back `callback_url`: its callback delivery
    (when the event has one), then one per subscription of the watch's tenant (`subscriptions`,
    oldest first) whose events include the type, with the envelope as body and a new `msg_` id.
    An id is the `webhook-id` of every attempt and redelivery: one per event and endpoint."""
    found = []
    if event.callback is not None:
        found.append(Addressed(event.callback, None, callback_host(callback_url or "")))
    for endpoint in subscriptions:
        if event.type in endpoint.events:
            new = NewDelivery(make_id("msg", now), event.type, event.body, event.final)
            found.append(Addressed(new, endpoint.id, endpoint.host))
    return found


def completed_status(event: NewEvent) -> WatchStatus:
    """A watch's status once its final event is recorded: `delivering` until its callback
    delivery ends, or `completed` (ended) when it has none."""
    return "delivering" if event.callback is not None else "completed"


def ending(event: NewEvent, now: float) -> tuple[WatchStatus, float | None, JobOutcome]:
    """What recording a watch's final `event` at `now` makes of it: its status
    (`completed_status`), when it ended (None while delivering) and its job's outcome."""
    status = completed_status(event)
    outcome = job_outcome(status, event.type, event.error_code)
    return status, None if status == "delivering" else now, outcome


# How the job ended, and what became of its delivery.

# A `job.failed`'s error_code, as the job's outcome (any other code: `failed`).
_FAILED_AS: Mapping[str | None, JobOutcome] = {
    events.GENERATION_FAILED: "failed", events.TIMEOUT: "timed_out", "not_found": "not_found",
    "unauthorized": "unauthorized", "bad_request": "bad_request",
}  # fmt: skip


def job_outcome(status: WatchStatus, event_type: str | None, error_code: str | None) -> JobOutcome:
    """The outcome of the job of a watch in `status` whose final event (None: none yet) has
    `event_type` and `error_code`: what that event says; without one, `cancelled` for a watch
    cancelled before its job ended, else `in_progress`."""
    if event_type is None:
        return "cancelled" if status == "cancelled" else "in_progress"
    if event_type == events.SUCCEEDED:
        return "succeeded"
    if event_type == events.FAILED:
        return _FAILED_AS.get(error_code, "failed")
    return "unknown"


def recorded_outcome(
    status: WatchStatus, job_status: str | None, event_type: str | None, error_code: str | None
) -> JobOutcome:
    """The outcome of a watch recorded before outcomes were kept (migration 0006): from its
    final event while it is kept, else from the upstream's last status (`succeeded` or a
    generation `failed`), else `cancelled` or, for one that ended, `unknown`."""
    if event_type is None and job_status in ("succeeded", "failed"):
        event_type, error_code = f"job.{job_status}", events.GENERATION_FAILED
    found = job_outcome(status, event_type, error_code)
    return "unknown" if found == "in_progress" and status != "active" else found


_DELIVERY_OF: Mapping[WatchStatus, DeliveryState] = {
    "active": "none", "delivering": "pending", "delivered": "delivered", "failed": "failed",
    "gone": "failed", "completed": "none",
}  # fmt: skip


def delivery_state(status: WatchStatus, outcome: JobOutcome) -> DeliveryState:
    """What became of the final event's delivery to the callback of a watch in `status` whose
    job's outcome is `outcome`: `none` while polling and without a callback; `failed` when its
    attempts ran out, a final status ended them, or the receiver answered 410 (`gone`);
    `cancelled` when the watch was cancelled while delivering, `none` when before its job
    ended."""
    if status == "cancelled":
        return "none" if outcome in ("cancelled", "in_progress") else "cancelled"
    return _DELIVERY_OF[status]


def metadata_values(value: str) -> list[str | int | float]:
    """The metadata values a search for `value` matches: the string itself, and the number it
    writes when it is one (an order number kept as 1234 is found by "1234")."""
    found: list[str | int | float] = [value]
    if re.fullmatch(r"-?(0|[1-9][0-9]{0,17})", value):
        found.append(int(value))
    elif re.fullmatch(r"-?(0|[1-9][0-9]{0,17})\.[0-9]{1,17}", value):
        found.append(float(value))
    return found


def prefix_end(prefix: str) -> str:
    """The smallest string above every string starting with `prefix` (byte order): the upper
    bound of a prefix search as a range, which an index on the column answers."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def compared(filters: WatchFilter) -> list[tuple[str, object]]:
    """The parts of `filters` a SQL backend writes as a column compared with a value, those
    given: (the column and its operator, the value). The others each backend writes its way."""
    parts = (
        ("status =", filters.status), ("job_id =", filters.job_id),
        ("outcome =", filters.outcome), ("upstream =", filters.upstream),
        ("created_at >=", filters.created_from), ("created_at <", filters.created_to),
    )  # fmt: skip
    return [(column, value) for column, value in parts if value is not None]


def delivery_pairs(state: DeliveryState) -> list[tuple[WatchStatus, JobOutcome]]:
    """Every (status, outcome) whose delivery state is `state`: what a store filters by."""
    return [
        (status, outcome)
        for status in WATCH_STATUSES
        for outcome in JOB_OUTCOMES
        if delivery_state(status, outcome) == state
    ]


# An attempt's outcome.


@dataclass(frozen=True, slots=True)
class Effect:
    """What one attempt's outcome changes besides its delivery's attempt count and log."""

    status: DeliveryStatus  # the delivery's: `pending` again (a retry), or how it ended
    ended_at: float | None
    # The watch's final callback delivery: the attempt counts in the watch (while it is
    # `delivering`), and its error, if any, becomes the watch's last error.
    counted: bool
    watch_status: WatchStatus | None  # when counted: the watch's end, None while it retries
    # A 410 from the watch's callback: the watch, if still LIVE, becomes `gone` and its other
    # pending callback deliveries are cancelled (the subscriptions' are not).
    watch_gone: bool
    # A 410 from a subscription: it becomes `gone` and its pending deliveries, of every
    # watch, are cancelled; the watch is left as it is.
    subscription_gone: str | None

    @property
    def cascades(self) -> bool:
        """Whether it reaches beyond the delivery and its own watch's counters."""
        return self.watch_gone or self.subscription_gone is not None


def effect(record: AttemptRecord) -> Effect:
    """What `record` does (see `Store.record_attempt`)."""
    delivery, outcome, ended = record.delivery, record.outcome, record.outcome != "retry"
    status: DeliveryStatus = "pending" if outcome == "retry" else outcome
    ended_at = record.now if ended else None
    if delivery.subscription_id is not None:
        gone = delivery.subscription_id if outcome == "gone" else None
        return Effect(status, ended_at, False, None, False, gone)
    counted = delivery.final
    watch_status = ENDS_WATCH.get(outcome) if counted else None
    return Effect(status, ended_at, counted, watch_status, outcome == "gone", None)


# Redelivery.


@dataclass(frozen=True, slots=True)
class Final:
    """A final-event delivery of a watch, as a redelivery reads it."""

    id: str
    subscription_id: str | None  # None: the watch's own callback
    status: DeliveryStatus
    has_body: bool  # False once purged
    subscription_active: bool  # its subscription is still `active` (True for a callback)

    @property
    def endpoint(self) -> str:
        return self.subscription_id or CALLBACK


# Why a final delivery cannot be sent again: it is still in its series, its body was purged,
# or its subscription is no longer `active`.
Unsendable = Literal["pending", "purged", "inactive"]


def unsendable(final: Final) -> Unsendable | None:
    """Why `final` cannot start a new series; None when it can."""
    if final.status == "pending":
        return "pending"
    if not final.has_body:
        return "purged"
    return None if final.subscription_active else "inactive"


def redelivery(
    watch_status: WatchStatus, finals: Sequence[Final], endpoints: Collection[str] | None = None
) -> tuple[list[str], bool]:
    """The final deliveries a redelivery to `endpoints` (None: every one) makes pending again
    (their ids), and whether the watch becomes `delivering` (one of them is its callback's).
    Only a watch whose status is REDELIVERABLE is redelivered; only the chosen deliveries that
    can be sent again (`unsendable`) start again."""
    if watch_status not in REDELIVERABLE:
        return [], False
    again = [
        final
        for final in finals
        if (endpoints is None or final.endpoint in endpoints) and unsendable(final) is None
    ]
    return [final.id for final in again], any(f.subscription_id is None for f in again)


def retried_at(status: DeliveryStatus, next_attempt_at: float | None, now: float) -> float | None:
    """When a delivery asked to be retried now is due: at once (`now`), or when it was due
    already if that is sooner; None when it is not pending (there is nothing to retry)."""
    if status != "pending":
        return None
    return now if next_attempt_at is None else min(next_attempt_at, now)


# Claims with shares.

# A group of deliveries taken by a claim with shares: host, tenant, how many it offers.
Group = tuple[str, str, int]


def within_shares(
    items: Sequence[tuple[str, str, _V]],
    host_share: Mapping[str, int],
    tenant_share: Mapping[str, int],
    limit: int,
) -> list[_V]:
    """Of `items` (host, tenant, value), oldest first, the values kept when cut within shares
    (see `Store.claim_deliveries`): an item is kept while fewer than its host's share of the
    items before it are of its host, and likewise for its tenant; the first `limit` kept."""
    seen_hosts: Counter[str] = Counter()
    seen_tenants: Counter[str] = Counter()
    kept: list[_V] = []
    for host, tenant, value in items:
        if len(kept) >= limit:
            break
        if seen_hosts[host] < host_share[host] and seen_tenants[tenant] < tenant_share[tenant]:
            kept.append(value)
        seen_hosts[host] += 1
        seen_tenants[tenant] += 1
    return kept


def groups_taken(groups: Sequence[tuple[str, str, int, int]], limit: int) -> list[Group]:
    """The first step of a claim with shares (see `Store.claim_deliveries`). `groups`: (host,
    tenant, host share, tenant share) of each group with both shares and a due delivery, by
    its oldest due one (then host, then tenant). Answers the groups taken, each with how many
    of its oldest due deliveries it offers: the smaller of its two shares."""
    host_share, tenant_share = _shares(groups)
    most = [(host, tenant, (host, tenant, min(h, t, limit))) for host, tenant, h, t in groups]
    return within_shares(most, host_share, tenant_share, limit)


def offers_kept(
    groups: Sequence[tuple[str, str, int, int]],
    offered: Sequence[tuple[float, str, str, str]],
    limit: int,
) -> list[str]:
    """The second step: of the deliveries the groups taken offered, as (due time, id, host,
    tenant), the ids claimed, oldest first."""
    rows = [(host, tenant, delivery_id) for _, delivery_id, host, tenant in sorted(offered)]
    return within_shares(rows, *_shares(groups), limit)


def _shares(groups: Sequence[tuple[str, str, int, int]]) -> tuple[dict[str, int], dict[str, int]]:
    return {g[0]: g[2] for g in groups}, {g[1]: g[3] for g in groups}
