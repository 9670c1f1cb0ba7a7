"""How the bridge reads the upstream: refusals and timeouts end a watch, transient faults do not."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.harness import Bridge, Receiver, Upstream, epoch, unique, wait_until


@pytest.mark.e2e
def test_bridge_decided_failures_carry_their_error_code(
    bridge: Bridge, upstream: Upstream, receiver: Receiver
) -> None:
    """Timeout, upstream 401, 404 past the grace and 400 each end in job.failed with its code."""
    never_ends = upstream.create_job(queue_positions=1000)
    exists = upstream.create_job(queue_positions=0, processing_s=0.2)
    refused = upstream.create_job(queue_positions=0, processing_s=0.2, faults=[{"kind": "400"}])
    unknown = unique("job_unknown")  # never created upstream
    cases: dict[str, dict[str, Any]] = {
        "timeout": {"job_id": never_ends, "timeout_s": 1.5},
        "unauthorized": {"job_id": exists, "upstream_api_key": "bw_not_a_valid_key"},
        "not_found": {"job_id": unknown},
        "bad_request": {"job_id": refused},
    }
    watches, paths = {}, {}
    for code, fields in cases.items():
        paths[code] = unique(code)
        watches[code] = bridge.register(callback_url=receiver.callback(paths[code]), **fields)
    raw_path = unique("raw_not_found")
    raw = bridge.register(
        job_id=unknown, callback_url=receiver.callback(raw_path), payload_format="raw"
    )

    bodies = {}
    for code, watch in watches.items():
        bridge.wait_for_status(watch["id"], "delivered")
        [hook] = receiver.hooks(paths[code])
        bodies[code] = hook.verify(watch["secret"])
    for code, body in bodies.items():
        assert body["type"] == "job.failed", code
        assert body["status"] == "failed", code
        assert body["error_code"] == code
        assert isinstance(body["error"], str), code
        assert body["error"], code
        assert body["job_id"] == cases[code]["job_id"]
        assert body["image_urls"] is None

    assert "1.5" in bodies["timeout"]["error"]
    assert bodies["timeout"]["data"] is None
    assert bodies["unauthorized"]["data"] == {"error": "Invalid or missing API key"}
    assert bodies["not_found"]["data"] == {"error": "Generation not found"}
    assert bodies["bad_request"]["data"] == {"error": "Generation ID is required"}

    # The timeout is counted from registration; a 404 is only final after the grace (1 s).
    for code, least in (("timeout", 1.5), ("not_found", 1.0)):
        [hook] = receiver.hooks(paths[code])
        assert hook.received_at - epoch(watches[code]["created_at"]) >= least - 0.05, code
    assert upstream.polls(never_ends) >= 2

    # Neither the API key nor the secret is ever shown, nor logged.
    shown = bridge.client.get(f"/v1/watches/{watches['unauthorized']['id']}").text
    listed = bridge.client.get("/v1/watches", params={"job_id": exists}).text
    logged = bridge.process.stdout() + bridge.process.stderr()
    for text in (shown, listed, logged):
        assert "bw_not_a_valid_key" not in text
        assert watches["unauthorized"]["secret"] not in text

    # In raw format a bridge-decided failure is shaped like the upstream's own failed answer.
    bridge.wait_for_status(raw["id"], "delivered")
    [hook] = receiver.hooks(raw_path)
    body = hook.verify(raw["secret"])
    assert body["id"] == unknown
    assert body["status"] == "failed"
    assert isinstance(body["error"], str)
    assert body["error"]
    assert body.get("error_code") == "not_found"


def _watch_while_active(bridge: Bridge, watch_ids: list[str]) -> dict[str, set[str]]:
    """Every `last_error` each watch showed while `active`, until all are delivered."""
    seen: dict[str, set[str]] = {watch_id: set() for watch_id in watch_ids}

    def all_delivered() -> bool:
        statuses = []
        for watch_id in watch_ids:
            watch = bridge.watch(watch_id)
            if watch["status"] == "active" and watch["last_error"]:
                seen[watch_id].add(watch["last_error"])
            statuses.append(watch["status"])
        assert not set(statuses) - {"active", "delivering", "delivered"}, statuses
        return all(status == "delivered" for status in statuses)

    wait_until(all_delivered, 45, interval=0.03, what="every faulted job delivered")
    return seen


@pytest.mark.e2e
def test_transient_upstream_faults_are_retried_until_the_webhook(
    bridge: Bridge, upstream: Upstream, receiver: Receiver
) -> None:
    """5xx, 429 (Retry-After), malformed JSON and slow answers are retried, shown in last_error."""
    faults: dict[str, dict[str, Any]] = {
        "5xx": {"kind": "5xx", "count": 3},
        "429": {"kind": "429", "count": 1, "retry_after": 2},
        "malformed": {"kind": "malformed", "count": 3},
        "slow": {"kind": "slow", "count": 2, "delay_s": 1.6},  # request timeout: 1 s
    }
    jobs = {
        name: upstream.create_job(queue_positions=0, processing_s=1.0, faults=[fault])
        for name, fault in faults.items()
    }
    paths = {name: unique(f"fault_{name}") for name in faults}
    watches = {
        name: bridge.register(job_id=jobs[name], callback_url=receiver.callback(paths[name]))
        for name in faults
    }
    seen = _watch_while_active(bridge, [watch["id"] for watch in watches.values()])

    for name, watch in watches.items():
        [hook] = receiver.hooks(paths[name])
        body = hook.verify(watch["secret"])
        assert (body["type"], body["data"]["status"]) == ("job.succeeded", "succeeded"), name
        assert upstream.polls(jobs[name]) >= faults[name]["count"] + 1, name
        assert upstream.job(jobs[name])["faults_left"] == [], name
        final = bridge.watch(watch["id"])
        assert final["last_error"] is None, name

    expected = {
        "5xx": "503",
        "429": "rate limited",
        "malformed": "JSON",
        "slow": "in time",
    }
    for name, fragment in expected.items():
        shown = seen[watches[name]["id"]]
        assert any(fragment in error for error in shown), (name, shown)

    # Retry-After: 2 was honoured: nothing was asked again for two seconds.
    [hook] = receiver.hooks(paths["429"])
    assert hook.received_at - epoch(watches["429"]["created_at"]) >= 1.9


@pytest.mark.e2e
def test_dropped_upstream_connection_is_retried_and_not_reported_as_a_timeout(
    bridge: Bridge, upstream: Upstream, receiver: Receiver
) -> None:
    """A connection closed without an answer is retried; last_error says so, not "in time"."""
    job = upstream.create_job(
        queue_positions=0, processing_s=1.0, faults=[{"kind": "drop", "count": 4}]
    )
    path = unique("fault_drop")
    watch = bridge.register(job_id=job, callback_url=receiver.callback(path))
    seen = _watch_while_active(bridge, [watch["id"]])[watch["id"]]

    [hook] = receiver.hooks(path)
    assert hook.verify(watch["secret"])["type"] == "job.succeeded"
    assert upstream.job(job)["faults_left"] == []
    assert seen, "no last_error was shown while the upstream dropped connections"
    # The upstream answered nothing at once: that is not "did not answer in time".
    assert not any("in time" in error for error in seen), seen


@pytest.mark.e2e
def test_watches_of_one_job_share_polls_and_unchanged_polls_write_nothing(
    bridge: Bridge, upstream: Upstream, receiver: Receiver
) -> None:
    """Watches of one job share each upstream request; a poll seeing nothing new writes nothing."""
    still = upstream.create_job(queue_positions=1, seconds_per_position=1000)
    quiet = bridge.register(job_id=still, callback_url=receiver.callback(unique("still")))
    queued = wait_until(
        lambda: (w := bridge.watch(quiet["id"]))["job_status"] == "queued" and w,
        what="the first poll to be recorded",
    )
    polls = upstream.polls(still)
    wait_until(lambda: upstream.polls(still) >= polls + 5, what="five more polls")
    assert bridge.watch(quiet["id"])["updated_at"] == queued["updated_at"]
    assert bridge.client.delete(f"/v1/watches/{quiet['id']}").status_code == 200

    shared = upstream.create_job(queue_positions=0, processing_s=2.0)
    paths = [unique("shared") for _ in range(10)]
    watches = [bridge.register(job_id=shared, callback_url=receiver.callback(p)) for p in paths]
    stranger_path = unique("shared_other_key")
    stranger = bridge.register(
        job_id=shared, callback_url=receiver.callback(stranger_path), upstream_api_key="bw_other"
    )
    bridge.wait_all([w["id"] for w in [*watches, stranger]], "delivered", timeout=30)
    for watch, path in zip(watches, paths, strict=True):
        [hook] = receiver.hooks(path)
        assert hook.verify(watch["secret"])["type"] == "job.succeeded"
    # Polled separately, ten watches would have made ten requests per interval (60 or more).
    assert upstream.polls(shared) <= 35
    # Another key is another request: its 401 is that watch's alone.
    [hook] = receiver.hooks(stranger_path)
    assert hook.verify(stranger["secret"])["error_code"] == "unauthorized"
