"""How the bridge treats a receiver's answers: retries, 410, redirects, exhaustion, redelivery."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import (
    Bridge,
    Receiver,
    StartBridge,
    Upstream,
    banner_url,
    epoch,
    start_process,
    unique,
    wait_until,
)


def _register(
    bridge: Bridge, upstream: Upstream, receiver: Receiver, **query: object
) -> tuple[dict[str, Any], str]:
    """A watch of a job that succeeds at once, with its own callback path; (watch, path)."""
    job = upstream.create_job(queue_positions=0, processing_s=0)
    path = unique("delivery")
    return bridge.register(job_id=job, callback_url=receiver.callback(path, **query)), path


@pytest.mark.e2e
def test_receiver_answers_decide_retries_and_the_end_state(
    bridge: Bridge, upstream: Upstream, receiver: Receiver
) -> None:
    """500 then 200 is retried with one webhook-id; 410 is gone; 3xx fails and is not followed."""
    retried, retried_path = _register(bridge, upstream, receiver, respond="500,200")
    gone, gone_path = _register(bridge, upstream, receiver, respond="410")
    moved, moved_path = _register(bridge, upstream, receiver, respond="302,200")
    paced, paced_path = _register(bridge, upstream, receiver, respond="429,200", retry_after=2)
    # The receiver takes 5 s to answer; the attempt timeout is 3 s.
    slow, _ = _register(bridge, upstream, receiver, respond="200", delay_s=5)

    assert bridge.wait_for_status(retried["id"], "delivered")["attempts"] == 2
    attempts = bridge.deliveries(retried["id"])
    assert [a["status_code"] for a in attempts] == [500, 200]
    assert [a["attempt"] for a in attempts] == [1, 2]
    assert attempts[0]["error"] == "HTTP 500"
    assert attempts[0]["next_attempt_at"] is not None
    hooks = receiver.hooks(retried_path)
    assert len(hooks) == 2
    assert {hook.webhook_id for hook in hooks} == {attempts[0]["webhook_id"]}
    assert hooks[0].body == hooks[1].body
    for hook in hooks:
        assert hook.verify(retried["secret"])["type"] == "job.succeeded"

    watch = bridge.wait_for_status(gone["id"], "gone")
    assert watch["attempts"] == 1
    assert [a["status_code"] for a in bridge.deliveries(gone["id"])] == [410]
    assert len(receiver.hooks(gone_path)) == 1

    bridge.wait_for_status(moved["id"], "delivered")
    attempts = bridge.deliveries(moved["id"])
    assert [a["status_code"] for a in attempts] == [302, 200]
    assert "redirect" in attempts[0]["error"]
    assert len(receiver.hooks(moved_path)) == 2
    # The listener's 302 points at /elsewhere: the bridge never went there.
    assert not [hook for hook in receiver.hooks() if hook.path == "/elsewhere"]

    [timed_out, *_] = wait_until(lambda: bridge.deliveries(slow["id"]), 15, what="an attempt")
    assert timed_out["status_code"] is None
    assert timed_out["error"] == "timed out after 3 s"
    assert timed_out["next_attempt_at"] is not None
    assert bridge.watch(slow["id"])["status"] == "delivering"
    assert bridge.client.delete(f"/v1/watches/{slow['id']}").status_code == 200

    # The receiver's Retry-After (2 s) wins over the schedule's 0.5 s.
    bridge.wait_for_status(paced["id"], "delivered")
    first, second = receiver.hooks(paced_path)
    assert second.received_at - first.received_at >= 1.9
    assert first.webhook_id == second.webhook_id


@pytest.mark.e2e
def test_exhausted_watch_fails_and_redelivery_reuses_the_webhook_id(
    bridge: Bridge, upstream: Upstream, receiver: Receiver
) -> None:
    """After 1 + 3 failed attempts the watch is failed; redeliver starts a new series, same id."""
    watch, path = _register(bridge, upstream, receiver, respond="500,500,500,500,200")
    delivered, delivered_path = _register(bridge, upstream, receiver)
    active_job = upstream.create_job(queue_positions=1000)
    active = bridge.register(job_id=active_job, callback_url=receiver.callback(unique("active")))

    failed = bridge.wait_for_status(watch["id"], "failed")
    assert failed["attempts"] == 4
    assert failed["last_error"] == "HTTP 500"
    attempts = bridge.deliveries(watch["id"])
    assert [a["status_code"] for a in attempts] == [500] * 4
    assert attempts[-1]["next_attempt_at"] is None
    [webhook_id] = {a["webhook_id"] for a in attempts}
    assert len(receiver.hooks(path)) == 4

    response = bridge.client.post(f"/v1/watches/{watch['id']}/redeliver")
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "delivering"
    again = bridge.wait_for_status(watch["id"], "delivered")
    assert again["attempts"] == 5  # every attempt listed, the new series' too
    attempts = bridge.deliveries(watch["id"])
    assert [a["status_code"] for a in attempts] == [500, 500, 500, 500, 200]
    assert [a["attempt"] for a in attempts] == [1, 2, 3, 4, 1]
    hooks = receiver.hooks(path)
    assert len(hooks) == 5
    assert {hook.webhook_id for hook in hooks} == {webhook_id}
    assert epoch(attempts[-1]["attempted_at"]) >= epoch(failed["completed_at"])
    hooks[-1].verify(watch["secret"])

    # A delivered watch may be redelivered too; an active one may not.
    bridge.wait_for_status(delivered["id"], "delivered")
    [first] = receiver.hooks(delivered_path)
    assert bridge.client.post(f"/v1/watches/{delivered['id']}/redeliver").status_code == 202
    bridge.wait_for_status(delivered["id"], "delivered")
    first_again, second = receiver.wait_for(delivered_path, 2)
    assert first_again == first
    assert second.webhook_id == first.webhook_id
    assert second.body == first.body

    response = bridge.client.post(f"/v1/watches/{active['id']}/redeliver")
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    response = bridge.client.post("/v1/watches/wch_nosuchwatch/redeliver")
    assert response.status_code == 404


@pytest.mark.e2e
def test_callback_url_credentials_are_hidden_and_do_not_wedge_delivery(
    bridge: Bridge, upstream: Upstream, receiver: Receiver
) -> None:
    """URL credentials are never shown and are sent as Basic auth (or refused), never wedging."""
    job = upstream.create_job(queue_positions=0, processing_s=0)
    name = unique("userinfo")
    url = receiver.callback(name).replace("http://", "http://alice:s3cret@")
    response = bridge.client.post("/v1/watches", json={"job_id": job, "callback_url": url})
    if response.status_code == 422:
        assert [e["field"] for e in response.json()["errors"]] == ["callback_url"]
        return
    assert response.status_code == 201, response.text
    watch = response.json()
    assert "s3cret" not in response.text.replace(watch["secret"], "")
    assert "s3cret" not in bridge.client.get(f"/v1/watches/{watch['id']}").text
    assert "s3cret" not in bridge.client.get("/v1/watches", params={"job_id": job}).text

    def attempted() -> list[dict[str, Any]]:
        return bridge.deliveries(watch["id"])

    try:
        wait_until(attempted, 10, what="a recorded delivery attempt")
        bridge.wait_for_status(watch["id"], "delivered", timeout=10)
    finally:
        bridge.client.delete(f"/v1/watches/{watch['id']}")  # a wedged one must not linger
    [hook] = receiver.hooks(name)
    expected = "Basic " + base64.b64encode(b"alice:s3cret").decode()
    assert hook.headers.get("authorization") == expected


@pytest.mark.e2e
def test_non_ascii_callback_header_is_refused_or_delivered(
    bridge: Bridge, upstream: Upstream, receiver: Receiver
) -> None:
    """A non-ASCII callback header value is refused (422) or sent, never wedging the delivery."""
    job = upstream.create_job(queue_positions=0, processing_s=0)
    name = unique("non_ascii_header")
    body = {
        "job_id": job,
        "callback_url": receiver.callback(name),
        "callback_headers": {"X-Customer": "Zoë Café"},
    }
    response = bridge.client.post("/v1/watches", json=body)
    if response.status_code == 422:
        assert [e["field"] for e in response.json()["errors"]] == ["callback_headers"]
        return
    assert response.status_code == 201, response.text
    watch = response.json()
    try:
        wait_until(lambda: bridge.deliveries(watch["id"]), 10, what="a recorded delivery attempt")
        bridge.wait_for_status(watch["id"], "delivered", timeout=10)
    finally:
        bridge.client.delete(f"/v1/watches/{watch['id']}")  # a wedged one must not linger
    [hook] = receiver.hooks(name)
    assert "x-customer" in hook.headers


@pytest.mark.e2e
def test_gone_on_a_progress_event_ends_the_watch_before_its_final_event(
    bridge: Bridge, upstream: Upstream, receiver: Receiver
) -> None:
    """A 410 to job.queued ends the watch as gone, with no final event and an honest 409."""
    job = upstream.create_job(queue_positions=2, seconds_per_position=0.8, processing_s=0.8)
    path = unique("gone_progress")
    watch = bridge.register(
        job_id=job,
        callback_url=receiver.callback(path, respond="410"),
        events=["job.queued", "job.succeeded", "job.failed"],
    )
    # A witness of the same job: its final webhook proves the bridge saw the job end.
    witness_path = unique("gone_witness")
    witness = bridge.register(job_id=job, callback_url=receiver.callback(witness_path))
    assert bridge.wait_for_status(watch["id"], "gone")["job_status"] == "queued"
    bridge.wait_for_status(witness["id"], "delivered")
    receiver.wait_for(witness_path, 1)

    [hook] = receiver.hooks(path)
    assert hook.verify(watch["secret"])["type"] == "job.queued"
    assert [a["status_code"] for a in bridge.deliveries(watch["id"])] == [410]
    assert bridge.watch(watch["id"])["status"] == "gone"

    response = bridge.client.post(f"/v1/watches/{watch['id']}/redeliver")
    assert response.status_code == 409
    assert "purged" not in response.json()["detail"]


@pytest.mark.e2e
def test_a_slow_receiver_only_costs_its_own_slots(
    start_bridge: StartBridge, upstream: Upstream, receiver: Receiver, tmp_path: Path
) -> None:
    """A receiver that answers after 15 s, with three times the bridge's per-host limit waiting,
    holds only that many requests; another receiver's webhooks all arrive meanwhile."""
    record = tmp_path / "fast.jsonl"
    process = start_process(
        "fast_receiver", tmp_path, ["listen", "--port", "0", "--quiet", "--record", str(record)], {}
    )
    try:
        fast = Receiver(process, banner_url(process), record)
        # 8 requests in flight in all, 4 per host: without the per-host limit the slow
        # receiver's backlog would take all 8 for 15 s. One tenant, whose limit is the global
        # one: the per-host limit alone.
        bridge = start_bridge(
            BRIDGE_DELIVERY__MAX_CONCURRENCY="8",
            BRIDGE_DELIVERY__MAX_PER_HOST="4",
            BRIDGE_DELIVERY__MAX_PER_TENANT="8",
            BRIDGE_DELIVERY__TIMEOUT_S="20",
            BRIDGE_SERVER__SHUTDOWN_GRACE_S="1",
        )
        slow_paths = [unique("slow") for _ in range(12)]
        slow = [
            bridge.register(
                job_id=upstream.create_job(queue_positions=0, processing_s=0),
                callback_url=receiver.callback(path, delay_s=15),
            )
            for path in slow_paths
        ]

        def slow_in_flight() -> int:
            return sum(len(receiver.hooks(path)) for path in slow_paths)

        wait_until(lambda: slow_in_flight() >= 4, 10, what="the slow receiver's 4 requests")
        fast_paths = [unique("fast") for _ in range(10)]
        for path in fast_paths:
            job = upstream.create_job(queue_positions=0, processing_s=0)
            bridge.register(job_id=job, callback_url=fast.callback(path))

        def fast_arrived() -> bool:
            return all(fast.hooks(path) for path in fast_paths)

        wait_until(fast_arrived, 12, what="every webhook to the fast receiver")
        # Still within the slow receiver's first 15 s: none of its attempts has ended.
        assert slow_in_flight() == 4
        assert all(bridge.deliveries(w["id"]) == [] for w in slow)
        assert all(bridge.watch(w["id"])["status"] == "delivering" for w in slow)
    finally:
        process.stop()


@pytest.mark.e2e
def test_a_tenants_slow_receivers_leave_other_tenants_slots(
    start_bridge: StartBridge, upstream: Upstream, receiver: Receiver, tmp_path: Path
) -> None:
    """One tenant's webhooks to two receivers that answer after 15 s, more of them than the
    bridge's global limit, hold only that tenant's share of the slots; another tenant's webhook
    arrives meanwhile."""
    names = ("second_slow_receiver", "other_tenants_receiver")
    listen = ["listen", "--port", "0", "--quiet", "--record"]
    receivers = [
        start_process(name, tmp_path, [*listen, str(tmp_path / f"{name}.jsonl")], {})
        for name in names
    ]
    try:
        second, others = (
            Receiver(process, banner_url(process), tmp_path / f"{process.name}.jsonl")
            for process in receivers
        )
        tokens = [{"name": name, "token": f"{name}-token"} for name in ("slow", "other")]
        # 4 requests in flight in all, 2 per host, 2 per tenant: without the per-tenant limit
        # the slow tenant's backlog, on two hosts, would take all 4 for 15 s.
        bridge = start_bridge(
            BRIDGE_AUTH__TOKENS=json.dumps(tokens),
            BRIDGE_DELIVERY__MAX_CONCURRENCY="4",
            BRIDGE_DELIVERY__MAX_PER_HOST="2",
            BRIDGE_DELIVERY__MAX_PER_TENANT="2",
            BRIDGE_DELIVERY__TIMEOUT_S="20",
            BRIDGE_SERVER__SHUTDOWN_GRACE_S="1",
        )

        def register(tenant: str, callback_url: str) -> None:
            job = upstream.create_job(queue_positions=0, processing_s=0)
            response = bridge.client.post(
                "/v1/watches",
                json={"job_id": job, "callback_url": callback_url},
                headers={"Authorization": f"Bearer {tenant}-token"},
            )
            assert response.status_code == 201, response.text

        slow_paths = [(host, unique("slow")) for host in (receiver, second) for _ in range(3)]
        for host, path in slow_paths:
            register("slow", host.callback(path, delay_s=15))

        def slow_in_flight() -> int:
            return sum(len(host.hooks(path)) for host, path in slow_paths)

        wait_until(lambda: slow_in_flight() >= 2, 10, what="the slow tenant's 2 requests")
        other_path = unique("other")
        register("other", others.callback(other_path))

        others.wait_for(other_path, timeout=10)
        # Still within the slow receivers' first 15 s: none of their attempts has ended.
        assert slow_in_flight() == 2
    finally:
        for process in receivers:
            process.stop()


def _sender_process(bridge: Bridge) -> int | None:
    """The pid of the bridge's sender process, if it has one."""
    pid = bridge.process.popen.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for child in children:
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        if b"service.sender" in cmdline:
            return int(child)
    return None


def _sender_exits(bridge: Bridge) -> float | None:
    found = re.search(
        r"^bridge_delivery_sender_exits_total (\S+)$", bridge.client.get("/metrics").text, re.M
    )
    return float(found.group(1)) if found else None


@pytest.mark.e2e
def test_a_sender_process_delivers_and_a_killed_one_is_replaced(
    start_bridge: StartBridge, upstream: Upstream, receiver: Receiver
) -> None:
    """With delivery.sender = "process" the webhooks leave from a child of the bridge, signed
    as always; when that child is killed, the next webhooks still arrive (from a new one); when
    the bridge stops, so does its child."""
    bridge = start_bridge(BRIDGE_DELIVERY__SENDER="process")
    first, first_path = _register(bridge, upstream, receiver)
    assert bridge.wait_for_status(first["id"], "delivered")["attempts"] == 1
    [hook] = receiver.hooks(first_path)
    assert hook.verify(first["secret"])["type"] == "job.succeeded"
    sender = wait_until(lambda: _sender_process(bridge), what="the sender process")
    assert _sender_exits(bridge) == 0.0

    os.kill(sender, signal.SIGKILL)
    second, second_path = _register(bridge, upstream, receiver)

    # Sent by the new child (or, had it been sent before the death was noticed, retried).
    bridge.wait_for_status(second["id"], "delivered")
    hook, *_ = receiver.hooks(second_path)
    assert hook.verify(second["secret"])["type"] == "job.succeeded"
    replaced = wait_until(lambda: _sender_process(bridge), what="a new sender process")
    assert replaced != sender
    wait_until(lambda: _sender_exits(bridge) == 1.0, what="the exit counted in the metrics")

    bridge.process.stop()  # SIGTERM: the bridge drains, then its sender process ends too
    wait_until(lambda: not Path(f"/proc/{replaced}").exists(), what="the sender process gone")
