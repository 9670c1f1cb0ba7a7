"""Subscriptions end to end: fan-out with the guarantees of callbacks, 410, final_statuses, and
the recent-events list polling tools read.

The bridge of this module has one token per test, so each test is a tenant of its own: a
subscription receives the events of its tenant only, and never another test's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import WebhookVerificationError

from tests.e2e import harness
from tests.e2e.harness import Bridge, Hook, Receiver, Upstream, unique, wait_until

pytestmark = pytest.mark.e2e
TENANTS = ("fanout", "gone", "completed", "final", "events", "other", "rotated")
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
QUICK: dict[str, Any] = {"queue_positions": 1, "seconds_per_position": 0.3, "processing_s": 0.3}


@pytest.fixture(scope="module")
def tenanted(
    tmp_path_factory: pytest.TempPathFactory, upstream: Upstream, receiver: Receiver
) -> Iterator[Bridge]:
    directory = tmp_path_factory.mktemp("subscriptions")
    tokens = json.dumps([{"name": name, "token": f"{name}-token"} for name in TENANTS])
    started = harness.launch_bridge(
        "subscriptions.bridge", directory, upstream.url, directory / "bridge.db",
        BRIDGE_AUTH__TOKENS=tokens,
    )  # fmt: skip
    try:
        yield started
    finally:
        harness.close_bridge(started)


@pytest.fixture
def clients(tenanted: Bridge) -> Iterator[Callable[[str], httpx.Client]]:
    """`clients(tenant)`: a client of the bridge with that tenant's token."""
    opened: list[httpx.Client] = []

    def client(tenant: str) -> httpx.Client:
        headers = {"Authorization": f"Bearer {tenant}-token"}
        opened.append(httpx.Client(base_url=tenanted.url, headers=headers, timeout=10))
        return opened[-1]

    yield client
    for client_ in opened:
        client_.close()


def subscribe(api: httpx.Client, url: str, **body: Any) -> dict[str, Any]:
    response = api.post("/v1/subscriptions", json={"url": url, **body})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def register(api: httpx.Client, **body: Any) -> dict[str, Any]:
    response = api.post("/v1/watches", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def status_of(api: httpx.Client, watch_id: str, *statuses: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        watch: dict[str, Any] = api.get(f"/v1/watches/{watch_id}").json()
        return watch if watch["status"] in statuses else None

    return wait_until(reached, what=f"{watch_id} to become {'|'.join(statuses)}")


def types(hooks: list[Hook]) -> list[str]:
    return [hook.json()["type"] for hook in hooks]


def test_every_event_reaches_every_subscription_and_the_callback(
    clients: Callable[[str], httpx.Client], upstream: Upstream, receiver: Receiver
) -> None:
    """Two subscriptions and a per-watch callback each get the final event, each signed with
    its own secret, each with its own webhook-id, all with the same event id in the body."""
    api = clients("fanout")
    everything, finals, callback = unique("all"), unique("finals"), unique("callback")
    every_event = ["job.queued", "job.processing", "job.succeeded", "job.failed"]
    first = subscribe(api, receiver.callback(everything), events=every_event, secret=SECRET)
    second = subscribe(api, receiver.callback(finals))
    assert first["secret"] == SECRET
    assert second["secret"].startswith("whsec_")
    # A queue and a processing phase each several polls long, so progress events are seen.
    job = upstream.create_job(queue_positions=1, seconds_per_position=1.0, processing_s=1.0)
    watch = register(api, job_id=job, callback_url=receiver.callback(callback))

    status_of(api, watch["id"], "delivered")
    [own] = receiver.wait_for(callback)
    [final] = receiver.wait_for(finals)

    def final_at_every() -> list[Hook] | None:
        hooks = receiver.hooks(everything)
        return hooks if "job.succeeded" in types(hooks) else None

    every = wait_until(final_at_every, what="the final event at the subscription to all")
    # Every event the bridge recorded for the watch (this tenant has no other) reaches the
    # subscription that asked for them all, in order, the final last.
    recorded = [event["type"] for event in reversed(api.get("/v1/events").json())]
    assert types(every) == recorded
    assert recorded[-1] == "job.succeeded"
    assert len(recorded) > 1  # at least one progress event
    assert recorded == [t for t in every_event if t in recorded]

    bodies = [own.verify(watch["secret"]), final.verify(second["secret"])]
    bodies.append(every[-1].verify(SECRET))
    with pytest.raises(WebhookVerificationError):
        final.verify(SECRET)  # each endpoint's own secret
    assert len({hook.webhook_id for hook in (own, final, every[-1])}) == 3
    assert len({body["id"] for body in bodies}) == 1
    assert bodies[0]["id"].startswith("evt_")
    assert bodies[1] == bodies[2]  # the same envelope for every subscription

    attempts = api.get(f"/v1/watches/{watch['id']}/deliveries").json()["data"]
    finals_by_endpoint = {a["subscription_id"] for a in attempts if a["event"] == "job.succeeded"}
    assert finals_by_endpoint == {None, first["id"], second["id"]}


def test_a_subscription_answering_410_is_gone_and_gets_nothing_more(
    clients: Callable[[str], httpx.Client], upstream: Upstream, receiver: Receiver
) -> None:
    """410 ends the subscription: it leaves the list and the next watch's event is not
    addressed to it (a healthy subscription, created after, gets that one)."""
    api = clients("gone")
    leaving, staying = unique("leaving"), unique("staying")
    gone = subscribe(api, receiver.callback(leaving, respond="410"))
    first = register(api, job_id=upstream.create_job(**QUICK))
    receiver.wait_for(leaving)
    wait_until(
        lambda: api.get("/v1/subscriptions").json()["data"] == [],
        what="the subscription to leave the list",
    )
    assert api.delete(f"/v1/subscriptions/{gone['id']}").status_code == 404
    attempts = api.get(f"/v1/watches/{first['id']}/deliveries").json()["data"]
    assert [(a["subscription_id"], a["status_code"]) for a in attempts] == [(gone["id"], 410)]

    healthy = subscribe(api, receiver.callback(staying))
    second = register(api, job_id=upstream.create_job(**QUICK))
    receiver.wait_for(staying)
    attempts = api.get(f"/v1/watches/{second['id']}/deliveries").json()["data"]
    assert {a["subscription_id"] for a in attempts} == {healthy["id"]}
    assert len(receiver.hooks(leaving)) == 1


def test_a_watch_without_a_callback_completes_and_its_events_reach_subscriptions(
    clients: Callable[[str], httpx.Client], upstream: Upstream, receiver: Receiver
) -> None:
    """No callback_url: no secret, the watch ends `completed`, the subscription gets the
    events, signed with its own secret."""
    api = clients("completed")
    path = unique("no-callback")
    subscription = subscribe(api, receiver.callback(path), events=["job.processing", "job.failed"])
    job = upstream.create_job(queue_positions=0, processing_s=0.5, outcome="failed", error="boom")
    watch = register(api, job_id=job, metadata={"order": 7})
    assert (watch["callback_url"], watch["secret"]) == (None, None)

    ended = status_of(api, watch["id"], "completed")
    assert ended["job_status"] == "failed"
    hooks = receiver.wait_for(path, 2)
    assert types(hooks) == ["job.processing", "job.failed"]
    body = hooks[-1].verify(subscription["secret"])
    assert (body["watch_id"], body["error"], body["metadata"]) == (
        watch["id"],
        "boom",
        {"order": 7},
    )

    # Redelivery sends the final event to the subscription again, same webhook-id; the watch
    # stays completed.
    redelivered = api.post(f"/v1/watches/{watch['id']}/redeliver")
    assert redelivered.status_code == 202, redelivered.text
    assert redelivered.json()["status"] == "completed"
    again = receiver.wait_for(path, 3)[-1]
    assert again.webhook_id == hooks[-1].webhook_id
    assert again.verify(subscription["secret"]) == body


def test_final_statuses_end_retries_at_once(
    clients: Callable[[str], httpx.Client], upstream: Upstream, receiver: Receiver
) -> None:
    """A status listed in final_statuses ends the delivery as failed after one attempt, for a
    watch's callback as for a subscription (else 404 and 409 would be retried)."""
    api = clients("final")
    sub_path, callback_path = unique("sub-404"), unique("callback-409")
    subscription = subscribe(api, receiver.callback(sub_path, respond="404"), final_statuses=[404])
    watch = register(
        api,
        job_id=upstream.create_job(**QUICK),
        callback_url=receiver.callback(callback_path, respond="409"),
        final_statuses=[409],
    )
    assert watch["final_statuses"] == [409]
    ended = status_of(api, watch["id"], "failed", "delivered")
    assert ended["status"] == "failed"

    def both_ended() -> list[dict[str, Any]] | None:
        attempts: list[dict[str, Any]] = api.get(f"/v1/watches/{watch['id']}/deliveries").json()[
            "data"
        ]
        return attempts if len(attempts) == 2 else None

    attempts = wait_until(both_ended, what="one attempt per endpoint")
    by_endpoint = {a["subscription_id"]: a for a in attempts}
    assert by_endpoint[None]["status_code"] == 409
    assert by_endpoint[subscription["id"]]["status_code"] == 404
    assert all(a["next_attempt_at"] is None for a in attempts)  # no retry scheduled
    assert len(receiver.hooks(sub_path)) == len(receiver.hooks(callback_path)) == 1


def test_recent_events_newest_first_filtered_and_per_tenant(
    clients: Callable[[str], httpx.Client], tenanted: Bridge, upstream: Upstream
) -> None:
    """/v1/events lists the tenant's envelopes newest first, each with a unique id; `type`
    filters; another tenant sees none of them."""
    api = clients("events")
    succeeded = register(api, job_id=upstream.create_job(queue_positions=0, processing_s=0.2))
    status_of(api, succeeded["id"], "completed")
    failed = register(
        api, job_id=upstream.create_job(queue_positions=0, processing_s=0.2, outcome="failed")
    )
    status_of(api, failed["id"], "completed")

    listed = api.get("/v1/events").json()
    assert len({event["id"] for event in listed}) == len(listed)
    finals = [
        (e["type"], e["watch_id"]) for e in listed if e["type"] in ("job.succeeded", "job.failed")
    ]
    assert finals == [("job.failed", failed["id"]), ("job.succeeded", succeeded["id"])]
    stamps = [event["timestamp"] for event in listed]
    assert stamps == sorted(stamps, reverse=True)

    only_failed = api.get("/v1/events", params={"type": "job.failed"}).json()
    assert [(e["type"], e["watch_id"]) for e in only_failed] == [("job.failed", failed["id"])]
    both = api.get("/v1/events", params={"type": "job.failed,job.succeeded", "limit": 1}).json()
    assert [e["watch_id"] for e in both] == [failed["id"]]
    assert only_failed[0] == listed[0]  # the same envelope whichever way it is read

    other = {"Authorization": "Bearer other-token"}
    assert httpx.get(f"{tenanted.url}/v1/events", headers=other).json() == []


def test_a_rotated_subscription_signs_with_both_secrets_and_a_disabled_one_gets_nothing(
    clients: Callable[[str], httpx.Client], upstream: Upstream, receiver: Receiver
) -> None:
    """After a rotation, the webhooks carry two signatures and verify with the old secret and
    with the new one; a disabled subscription of the same tenant gets none of them."""
    api = clients("rotated")
    rotated_path, disabled_path = unique("rotated"), unique("disabled")
    rotated = subscribe(api, receiver.callback(rotated_path))
    disabled = subscribe(api, receiver.callback(disabled_path))
    rotation = api.post(f"/v1/subscriptions/{rotated['id']}/secret/rotate")
    assert rotation.status_code == 200, rotation.text
    off = api.post(f"/v1/subscriptions/{disabled['id']}/disable")
    assert off.json()["status"] == "disabled"

    watch = register(api, job_id=upstream.create_job(**QUICK))

    [hook] = receiver.wait_for(rotated_path)
    assert len(hook.headers["webhook-signature"].split(" ")) == 2
    for secret in (rotated["secret"], rotation.json()["secret"]):
        assert hook.verify(secret)["watch_id"] == watch["id"]
    status_of(api, watch["id"], "completed")
    attempts = api.get(f"/v1/watches/{watch['id']}/deliveries").json()["data"]
    assert {a["subscription_id"] for a in attempts} == {rotated["id"]}
    assert receiver.hooks(disabled_path) == []
