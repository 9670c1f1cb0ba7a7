"""The store's rules (`service/store/rules.py`), as tables: what every backend persists."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from service.store import rules
from service.store.base import (
    DELIVERY_STATES,
    JOB_OUTCOMES,
    WATCH_STATUSES,
    Attempt,
    AttemptOutcome,
    AttemptRecord,
    Delivery,
    DeliveryStatus,
    JobOutcome,
    NewDelivery,
    NewEvent,
    Shares,
    WatchStatus,
)

NOW = 1_767_225_600.0
CALLBACK = "https://user:pw@CB.example:8443/hooks?x=1"


def event(event_type: str, *, callback: bool = True) -> NewEvent:
    final = event_type in ("job.succeeded", "job.failed")
    own = NewDelivery("msg_callback", event_type, b"raw", final) if callback else None
    return NewEvent("evt_1", event_type, final, b"envelope", own)


def endpoints() -> list[rules.Endpoint]:
    return [
        rules.Endpoint.of("sub_1", ["job.succeeded", "job.failed"], "https://one.example/in"),
        rules.Endpoint.of("sub_2", ["job.queued", "job.succeeded"], "https://Two.example:99/a"),
        rules.Endpoint.of("sub_3", ["job.processing"], "https://three.example/in"),
    ]


def numbered() -> Callable[[str, float], str]:
    serial = itertools.count(1)
    return lambda prefix, now: f"{prefix}_{next(serial)}"


@pytest.mark.parametrize(
    ("event_type", "callback", "expected"),
    [
        # the callback's first (its own id and body), then each subscription listing the type,
        # oldest first, each with a new id and the envelope
        ("job.succeeded", True, [
            ("msg_callback", None, "https://cb.example:8443", b"raw"),
            ("msg_1", "sub_1", "https://one.example", b"envelope"),
            ("msg_2", "sub_2", "https://two.example:99", b"envelope"),
        ]),
        # a watch that did not ask for the type: the subscriptions alone
        ("job.queued", False, [("msg_1", "sub_2", "https://two.example:99", b"envelope")]),
        # a type only the callback asked for
        ("job.failed", True, [
            ("msg_callback", None, "https://cb.example:8443", b"raw"),
            ("msg_1", "sub_1", "https://one.example", b"envelope"),
        ]),
        # nobody asked: nothing to deliver (the event is kept all the same)
        ("job.cancelled", False, []),
    ],
)  # fmt: skip
def test_fan_out(
    event_type: str, callback: bool, expected: list[tuple[str, str | None, str, bytes]]
) -> None:
    """An event goes to its watch's callback when it has one, then to every subscription
    listing its type, each delivery with its endpoint's host key."""
    addressed = rules.fan_out(
        event(event_type, callback=callback), CALLBACK, endpoints(), NOW, numbered()
    )

    assert [(a.delivery.id, a.subscription_id, a.host, a.delivery.body) for a in addressed] == (
        expected
    )
    assert {(a.delivery.event_type, a.delivery.final) for a in addressed} <= {
        (event_type, event_type in ("job.succeeded", "job.failed"))
    }


def test_fan_out_makes_a_new_webhook_id_per_subscription() -> None:
    """Without an id maker, each subscription's delivery gets a fresh time-ordered `msg_` id."""
    addressed = rules.fan_out(event("job.succeeded", callback=False), None, endpoints(), NOW)

    ids = [a.delivery.id for a in addressed]
    assert len(set(ids)) == 2
    assert all(i.startswith("msg_") and len(i) == 30 for i in ids)


@pytest.mark.parametrize(
    ("callback", "status"),
    [
        (True, "delivering"),  # its callback delivery is pending
        (False, "completed"),  # nothing of its own to deliver: ended at once
    ],
)
def test_completed_status(callback: bool, status: WatchStatus) -> None:
    """A watch's final event leaves it delivering, or completed without a callback."""
    assert rules.completed_status(event("job.succeeded", callback=callback)) == status


def record(outcome: AttemptOutcome, *, final: bool, subscription: str | None) -> AttemptRecord:
    delivery = Delivery(
        "msg_1", "wch_1", "job.succeeded", b"{}", final, 0, 1, "https://r.example", "POST", {}, "",
        subscription_id=subscription,
    )  # fmt: skip
    attempt = Attempt("msg_1", "job.succeeded", 1, NOW - 1, 0.5, 200, None)
    return AttemptRecord(delivery, attempt, outcome, NOW)


@pytest.mark.parametrize(
    ("outcome", "final", "subscription", "expected"),
    [
        # the final callback delivery counts in its watch and ends it with the delivery
        ("retry", True, None, ("pending", False, True, None, False, None)),
        ("succeeded", True, None, ("succeeded", True, True, "delivered", False, None)),
        ("failed", True, None, ("failed", True, True, "failed", False, None)),
        ("gone", True, None, ("gone", True, True, "gone", True, None)),
        # a progress callback delivery leaves its watch alone, unless the receiver is gone
        ("retry", False, None, ("pending", False, False, None, False, None)),
        ("succeeded", False, None, ("succeeded", True, False, None, False, None)),
        ("failed", False, None, ("failed", True, False, None, False, None)),
        ("gone", False, None, ("gone", True, False, None, True, None)),
        # a subscription's delivery never changes the watch; a 410 ends the subscription
        ("succeeded", True, "sub_1", ("succeeded", True, False, None, False, None)),
        ("failed", True, "sub_1", ("failed", True, False, None, False, None)),
        ("retry", False, "sub_1", ("pending", False, False, None, False, None)),
        ("gone", True, "sub_1", ("gone", True, False, None, False, "sub_1")),
        ("gone", False, "sub_1", ("gone", True, False, None, False, "sub_1")),
    ],
)
def test_effect(
    outcome: AttemptOutcome,
    final: bool,
    subscription: str | None,
    expected: tuple[DeliveryStatus, bool, bool, WatchStatus | None, bool, str | None],
) -> None:
    """An attempt's outcome: its delivery's status and end, whether the watch counts it and
    ends, and whether a 410 makes the watch or the subscription gone."""
    effect = rules.effect(record(outcome, final=final, subscription=subscription))

    status, ended, counted, watch_status, watch_gone, subscription_gone = expected
    assert (effect.status, effect.ended_at) == (status, NOW if ended else None)
    assert (effect.counted, effect.watch_status) == (counted, watch_status)
    assert (effect.watch_gone, effect.subscription_gone) == (watch_gone, subscription_gone)
    assert effect.cascades == (outcome == "gone")


FINALS = [
    rules.Final("msg_cb", None, "failed", True, True),
    rules.Final("msg_done", "sub_1", "succeeded", True, True),
    rules.Final("msg_left", "sub_2", "gone", True, False),  # its subscription is gone
    rules.Final("msg_busy", "sub_3", "pending", True, True),  # still in its retries
    rules.Final("msg_purged", "sub_4", "succeeded", False, True),  # nothing left to send
]


@pytest.mark.parametrize(
    ("status", "finals", "expected"),
    [
        # the callback's and the ended deliveries of active subscriptions with a body
        ("failed", FINALS, (["msg_cb", "msg_done"], True)),
        ("delivered", FINALS, (["msg_cb", "msg_done"], True)),
        ("gone", FINALS, (["msg_cb", "msg_done"], True)),
        # without a callback delivery to restart, the watch keeps its status
        ("completed", FINALS[1:], (["msg_done"], False)),
        ("delivered", FINALS[2:], ([], False)),  # nothing to send again
        # a watch still at work, or cancelled, is not redelivered
        ("active", FINALS, ([], False)),
        ("delivering", FINALS, ([], False)),
        ("cancelled", FINALS, ([], False)),
    ],
)
def test_redelivery(
    status: WatchStatus, finals: list[rules.Final], expected: tuple[list[str], bool]
) -> None:
    """A redelivery restarts the ended final deliveries it can send again, and makes the
    watch delivering when its callback's is one of them."""
    assert rules.redelivery(status, finals) == expected


@pytest.mark.parametrize(
    ("endpoints", "expected"),
    [
        (["sub_1"], (["msg_done"], False)),  # one that accepted it, chosen: sent again
        (["callback", "sub_1"], (["msg_cb", "msg_done"], True)),
        (["sub_2", "sub_3", "sub_4"], ([], False)),  # none of those can be sent again
        (["sub_9"], ([], False)),  # the event was not addressed to it
        ([], ([], False)),  # nothing chosen, nothing sent
    ],
)
def test_redelivery_to_chosen_endpoints(
    endpoints: list[str], expected: tuple[list[str], bool]
) -> None:
    """Only the chosen endpoints that can be sent again start a new series."""
    assert rules.redelivery("failed", FINALS, endpoints) == expected


@pytest.mark.parametrize(
    ("final", "expected"),
    [
        (FINALS[0], None),
        (FINALS[1], None),  # accepted, yet it can be sent again
        (FINALS[2], "inactive"),
        (FINALS[3], "pending"),
        (FINALS[4], "purged"),
        # a pending one whose body is purged: pending says more (it is still being sent)
        (rules.Final("msg_x", None, "pending", False, True), "pending"),
    ],
)
def test_unsendable(final: rules.Final, expected: rules.Unsendable | None) -> None:
    """Why a final delivery cannot start a new series."""
    assert rules.unsendable(final) == expected


@pytest.mark.parametrize(
    ("limits", "default", "key", "expected"),
    [
        ({"a": 0}, 3, "a", 0),  # a listed key has its own share, even none
        ({"a": 0}, 3, "b", 3),  # others the default
        (None, None, "b", 10),  # without either, the claim's limit
        ({}, None, "a", 10),
    ],
)
def test_share(limits: dict[str, int] | None, default: int | None, key: str, expected: int) -> None:
    """A host's or a tenant's share of a claim of 10."""
    host_shares = Shares.of(10, default, limits, 5, None)
    tenant_shares = Shares.of(10, 5, None, default, limits)
    assert host_shares is not None
    assert tenant_shares is not None
    assert (host_shares.host(key), tenant_shares.tenant(key)) == (expected, expected)


@pytest.mark.parametrize(
    ("items", "limit", "expected"),
    [
        # host h1's share of 2 is used up by its two oldest; h2 is not crowded out
        ([("h1", "t1", 1), ("h1", "t1", 2), ("h1", "t1", 3), ("h2", "t1", 4)], 10, [1, 2, 4]),
        # tenant t2's share of 1 holds across its hosts
        ([("h1", "t2", 1), ("h2", "t2", 2), ("h2", "t1", 3)], 10, [1, 3]),
        # a host with a share of 0 is left alone
        ([("h0", "t1", 1), ("h2", "t1", 2)], 10, [2]),
        # at most `limit`
        ([("h1", "t1", 1), ("h2", "t1", 2), ("h2", "t1", 3)], 2, [1, 2]),
    ],
)
def test_within_shares(items: list[tuple[str, str, int]], limit: int, expected: list[int]) -> None:
    """An item is kept while its host and its tenant are under their shares of the items
    before it, kept or not."""
    hosts = {"h0": 0, "h1": 2, "h2": 5}
    tenants = {"t1": 5, "t2": 1}

    assert rules.within_shares(items, hosts, tenants, limit) == expected


def test_a_claim_with_shares_takes_groups_then_their_oldest() -> None:
    """Groups are cut within shares, each offers up to its smaller share, and the offers,
    oldest first, are cut again: the busy host's backlog takes its share, no more."""
    groups = [("busy", "t1", 2, 3), ("quiet", "t1", 2, 3), ("other", "t2", 2, 1)]
    backlog = {
        ("busy", "t1"): [(1.0, "b1"), (1.1, "b2"), (1.2, "b3")],
        ("quiet", "t1"): [(2.0, "q1"), (2.1, "q2")],
        ("other", "t2"): [(3.0, "o1"), (3.1, "o2")],
    }

    taken = rules.groups_taken(groups, 10)
    offered = [(at, id_, h, t) for h, t, most in taken for at, id_ in backlog[h, t][:most]]

    assert taken == [("busy", "t1", 2), ("quiet", "t1", 2), ("other", "t2", 1)]
    assert rules.offers_kept(groups, offered, 10) == ["b1", "b2", "q1", "o1"]
    assert rules.offers_kept(groups, offered, 3) == ["b1", "b2", "q1"]


def test_a_claim_with_shares_takes_no_more_groups_than_its_limit() -> None:
    """However many groups are due, at most `limit` are taken, each offering at most `limit`."""
    groups = [(f"h{n}", "t1", 50, 50) for n in range(5)]

    assert rules.groups_taken(groups, 2) == [("h0", "t1", 2), ("h1", "t1", 2)]


# How a job ended, and what became of its delivery.


@pytest.mark.parametrize(
    ("status", "event_type", "error_code", "expected"),
    [
        # no final event yet: still polling, or cancelled before the job ended
        ("active", None, None, "in_progress"),
        ("cancelled", None, None, "cancelled"),
        # what the upstream said
        ("delivering", "job.succeeded", None, "succeeded"),
        ("delivering", "job.failed", "generation_failed", "failed"),
        # why the bridge ended it
        ("delivering", "job.failed", "timeout", "timed_out"),
        ("completed", "job.failed", "not_found", "not_found"),
        ("delivering", "job.failed", "unauthorized", "unauthorized"),
        ("delivering", "job.failed", "bad_request", "bad_request"),
        # a failure code the bridge does not know yet is a failure
        ("delivering", "job.failed", "something_new", "failed"),
        # a final event of no known type says nothing of the job
        ("delivering", "job.completed", None, "unknown"),
    ],
)
def test_job_outcome(
    status: WatchStatus, event_type: str | None, error_code: str | None, expected: str
) -> None:
    assert rules.job_outcome(status, event_type, error_code) == expected


@pytest.mark.parametrize(
    ("status", "job_status", "event_type", "error_code", "expected"),
    [
        # the final event, while kept, decides
        ("failed", "queued", "job.failed", "timeout", "timed_out"),
        ("cancelled", "succeeded", "job.succeeded", None, "succeeded"),
        # purged: the upstream's last status, when it was final
        ("delivered", "succeeded", None, None, "succeeded"),
        ("failed", "failed", None, None, "failed"),
        # neither: cancelled before the end, still polling, or nothing left to tell
        ("cancelled", "queued", None, None, "cancelled"),
        ("active", "queued", None, None, "in_progress"),
        ("failed", "queued", None, None, "unknown"),
        ("completed", None, None, None, "unknown"),
    ],
)
def test_recorded_outcome(
    status: WatchStatus,
    job_status: str | None,
    event_type: str | None,
    error_code: str | None,
    expected: str,
) -> None:
    assert rules.recorded_outcome(status, job_status, event_type, error_code) == expected


@pytest.mark.parametrize(
    ("status", "outcome", "expected"),
    [
        ("active", "in_progress", "none"),  # nothing to send yet
        ("completed", "succeeded", "none"),  # no callback to send it to
        ("delivering", "timed_out", "pending"),  # a failed job's event is delivered too
        ("delivered", "failed", "delivered"),
        ("failed", "succeeded", "failed"),  # attempts ran out, or a final status
        ("gone", "succeeded", "failed"),  # the receiver answered 410
        ("cancelled", "unauthorized", "cancelled"),  # cancelled while delivering
        ("cancelled", "cancelled", "none"),  # cancelled before the job ended
    ],
)
def test_delivery_state(status: WatchStatus, outcome: JobOutcome, expected: str) -> None:
    assert rules.delivery_state(status, outcome) == expected


def test_every_delivery_state_is_some_status_and_outcome() -> None:
    """`delivery_pairs` finds each state's (status, outcome) pairs, and every state has some."""
    for state in DELIVERY_STATES:
        pairs = rules.delivery_pairs(state)
        assert pairs, state
        assert all(rules.delivery_state(s, o) == state for s, o in pairs)
    every = [pair for state in DELIVERY_STATES for pair in rules.delivery_pairs(state)]
    assert len(every) == len(set(every)) == len(WATCH_STATUSES) * len(JOB_OUTCOMES)


@pytest.mark.parametrize(
    ("status", "due", "expected"),
    [
        ("pending", NOW + 3600, NOW),  # waiting for its next attempt: due now
        ("pending", NOW - 5, NOW - 5),  # already due: stays first in line
        ("failed", None, None),  # ended: nothing to retry
        ("succeeded", None, None),
        ("cancelled", NOW + 60, None),
    ],
)
def test_retried_at(status: DeliveryStatus, due: float | None, expected: float | None) -> None:
    assert rules.retried_at(status, due, NOW) == expected
