"""What a receiver gets: signed webhooks with the documented headers, envelope and raw bodies."""

from __future__ import annotations

import base64
import json
import os
import time
from collections import Counter

import pytest
from standardwebhooks.webhooks import WebhookVerificationError

from service import __version__
from tests.e2e.harness import Bridge, Receiver, Upstream, epoch, unique

ENVELOPE_KEYS = {
    "id", "type", "timestamp", "watch_id", "job_id", "upstream", "status", "image_urls", "error",
    "error_code", "metadata", "data",
}  # fmt: skip


def assert_webhook_headers(headers: dict[str, str]) -> None:
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == f"webhook-bridge/{__version__}"
    assert headers["accept-encoding"] == "identity"  # its answer is kept as sent
    assert headers["webhook-id"].startswith("msg_")
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 120
    assert headers["webhook-signature"].startswith("v1,")


@pytest.mark.e2e
def test_succeeded_and_failed_jobs_each_get_one_signed_envelope(
    bridge: Bridge, upstream: Upstream, receiver: Receiver
) -> None:
    """A succeeded and a failed job each produce exactly one verifiable webhook, full envelope."""
    ok_job = upstream.create_job(
        unique("job.e2e:ok-"), queue_positions=1, seconds_per_position=0.3, processing_s=0.3,
        images=2,
    )  # fmt: skip
    bad_job = upstream.create_job(
        queue_positions=0, processing_s=0.3, outcome="failed", error="the GPU caught fire"
    )
    ok_path, bad_path = unique("succeeded"), unique("failed")
    metadata = {"order": 42, "tags": ["a", "b"], "nested": {"x": None}}
    ok = bridge.register(
        job_id=ok_job,
        callback_url=receiver.callback(ok_path),
        metadata=metadata,
        callback_headers={"X-Api-Token": "tok-123"},
    )
    bad = bridge.register(job_id=bad_job, callback_url=receiver.callback(bad_path))
    assert ok["status"] == "active"
    assert ok["secret"].startswith("whsec_")
    assert ok["secret"] != bad["secret"]
    assert ok["callback_headers"] == {"X-Api-Token": "********"}

    ok_watch = bridge.wait_for_status(ok["id"], "delivered")
    bad_watch = bridge.wait_for_status(bad["id"], "delivered")

    [ok_hook] = receiver.hooks(ok_path)
    [bad_hook] = receiver.hooks(bad_path)
    ok_final = upstream.answer(ok_job).json()
    bad_final = upstream.answer(bad_job).json()

    assert_webhook_headers(ok_hook.headers)
    assert_webhook_headers(bad_hook.headers)
    assert ok_hook.method == "POST"
    assert ok_hook.headers["x-api-token"] == "tok-123"
    assert "x-api-token" not in bad_hook.headers
    assert ok_hook.webhook_id != bad_hook.webhook_id
    with pytest.raises(WebhookVerificationError):
        ok_hook.verify(bad["secret"])  # the signature is the watch's own

    body = ok_hook.verify(ok["secret"])
    assert set(body) == ENVELOPE_KEYS
    assert abs(epoch(body["timestamp"]) - ok_hook.received_at) < 60
    assert body["id"].startswith("evt_")
    assert body == {
        "id": body["id"],
        "type": "job.succeeded",
        "timestamp": body["timestamp"],
        "watch_id": ok["id"],
        "job_id": ok_job,
        "upstream": "default",
        "status": "succeeded",
        "image_urls": [image["url"] for image in ok_final["output"]["images"]],
        "error": None,
        "error_code": None,
        "metadata": metadata,
        "data": ok_final,
    }
    assert len(body["image_urls"]) == 2

    body = bad_hook.verify(bad["secret"])
    assert set(body) == ENVELOPE_KEYS
    assert body == {
        "id": body["id"],
        "type": "job.failed",
        "timestamp": body["timestamp"],
        "watch_id": bad["id"],
        "job_id": bad_job,
        "upstream": "default",
        "status": "failed",
        "image_urls": None,
        "error": "the GPU caught fire",
        "error_code": "generation_failed",
        "metadata": None,
        "data": bad_final,
    }

    for watch, hook, job_status in (
        (ok_watch, ok_hook, "succeeded"),
        (bad_watch, bad_hook, "failed"),
    ):
        assert watch["job_status"] == job_status
        assert watch["attempts"] == 1
        assert watch["completed_at"] is not None
        assert "secret" not in watch
        [attempt] = bridge.deliveries(watch["id"])
        assert attempt["webhook_id"] == hook.webhook_id
        assert attempt["status_code"] == 200
        assert attempt["event"] == hook.json()["type"]
        assert attempt["next_attempt_at"] is None


@pytest.mark.e2e
def test_raw_format_sends_the_upstream_body_byte_for_byte(
    bridge: Bridge, upstream: Upstream, receiver: Receiver
) -> None:
    """`raw` delivers the upstream's final body exactly as sent, signed with the given secret."""
    ok_job = upstream.create_job(queue_positions=0, processing_s=0.2, images=3)
    bad_job = upstream.create_job(queue_positions=0, processing_s=0.2, outcome="failed")
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    paths = {ok_job: unique("raw_ok"), bad_job: unique("raw_failed")}
    watches = {
        job: bridge.register(
            job_id=job,
            callback_url=receiver.callback(path),
            payload_format="raw",
            callback_method="PUT",
            secret=secret,
        )
        for job, path in paths.items()
    }
    for job, watch in watches.items():
        assert watch["secret"] == secret
        assert watch["payload_format"] == "raw"
        bridge.wait_for_status(watch["id"], "delivered")
        [hook] = receiver.hooks(paths[job])
        assert hook.method == "PUT"
        assert_webhook_headers(hook.headers)
        hook.verify(secret)
        assert hook.body == upstream.answer(job).text


@pytest.mark.e2e
def test_progress_events_are_delivered_once_per_status_change(
    bridge: Bridge, upstream: Upstream, receiver: Receiver
) -> None:
    """Subscribed job.queued and job.processing arrive once each, however many polls see them."""
    job = upstream.create_job(queue_positions=2, seconds_per_position=0.8, processing_s=1.0)
    quiet_job = upstream.create_job(queue_positions=2, seconds_per_position=0.8, processing_s=1.0)
    path, quiet_path = unique("progress"), unique("no_progress")
    watch = bridge.register(
        job_id=job,
        callback_url=receiver.callback(path),
        events=["job.processing", "job.succeeded", "job.queued", "job.failed"],
    )
    quiet = bridge.register(job_id=quiet_job, callback_url=receiver.callback(quiet_path))
    bridge.wait_for_status(watch["id"], "delivered")
    bridge.wait_for_status(quiet["id"], "delivered")
    hooks = receiver.wait_for(path, 3)
    # Each of the ~10 polls saw queued (two positions) or processing; only changes are sent.
    assert upstream.polls(job) >= 5

    bodies = [hook.verify(watch["secret"]) for hook in hooks]
    assert Counter(body["type"] for body in bodies) == {
        "job.queued": 1, "job.processing": 1, "job.succeeded": 1,
    }  # fmt: skip
    assert len({hook.webhook_id for hook in hooks}) == 3
    assert len({body["id"] for body in bodies}) == 3  # one event id each
    by_type = {body["type"]: body for body in bodies}
    queued, processing = by_type["job.queued"], by_type["job.processing"]
    assert set(queued) == set(processing) == ENVELOPE_KEYS
    assert queued["status"] == "queued"
    assert queued["data"]["status"] == "queued"
    assert queued["data"]["queue_position"] in (1, 2)
    assert queued["image_urls"] is None
    assert queued["error_code"] is None
    assert processing["data"] == {"id": job, "status": "processing"}
    assert processing["status"] == "processing"

    attempts = bridge.deliveries(watch["id"])
    assert sorted(a["event"] for a in attempts) == ["job.processing", "job.queued", "job.succeeded"]
    assert all(a["status_code"] == 200 for a in attempts)
    # Without a subscription only the final event is sent.
    [quiet_hook] = receiver.hooks(quiet_path)
    assert json.loads(quiet_hook.body)["type"] == "job.succeeded"
