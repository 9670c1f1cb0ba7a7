"""Crashes, restarts and start-up refusals of `webhook-bridge serve`."""

from __future__ import annotations

import json
import signal
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import harness
from tests.e2e.harness import Bridge, Receiver, StartBridge, Upstream, unique, wait_until


@pytest.mark.e2e
def test_sigkill_mid_run_then_restart_delivers_every_job(
    start_bridge: StartBridge, upstream: Upstream, receiver: Receiver, tmp_path: Path
) -> None:
    """32 watches across states survive a SIGKILL: after a restart every job is delivered."""
    db = tmp_path / "crash.db"
    settings = {"BRIDGE_DELIVERY__RETRY_SCHEDULE_S": "[2, 1, 1, 1, 1]"}
    first = start_bridge(db=db, **settings)
    # Ten jobs still queued at the kill; ten ending about then; ten done at once whose receiver
    # answers 500 first, so their retry is pending at the kill. Every third receiver of the
    # others answers 500 first too.
    timelines: list[tuple[str, dict[str, Any]]] = (
        [("queued", {"queue_positions": 4, "seconds_per_position": 1.0, "processing_s": 1.0})] * 10
        + [("ending", {"queue_positions": 0, "processing_s": 1.0})] * 10
        + [("done", {"queue_positions": 0, "processing_s": 0})] * 10
    )
    watches = []
    for index, (group, timeline) in enumerate(timelines):
        job = upstream.create_job(**timeline)
        name = unique(f"crash_{group}")
        query = {"respond": "500,200"} if group == "done" or index % 3 == 0 else {}
        watch = first.register(job_id=job, callback_url=receiver.callback(name, **query))
        watches.append((watch, job, name))

    # Two more whose receiver takes 2 s to answer: their attempt is in flight at the kill, so
    # its outcome is never recorded and it must be sent again.
    in_flight = []
    for _ in range(2):
        job = upstream.create_job(queue_positions=0, processing_s=0)
        name = unique("crash_in_flight")
        watch = first.register(job_id=job, callback_url=receiver.callback(name, delay_s=2))
        in_flight.append((watch, job, name))

    for _, _, name in watches[20:] + in_flight:
        receiver.wait_for(name, 1)
    ids = {watch["id"] for watch, _, _ in watches + in_flight}
    statuses = Counter(w["status"] for w in first.watches() if w["id"] in ids)
    assert first.process.kill() == -signal.SIGKILL
    assert sum(statuses.values()) == 32
    assert statuses["active"] >= 5, statuses  # the queued ones at least
    assert statuses["delivering"] >= 1, statuses  # a retry pending

    second = start_bridge(db=db, **settings)
    second.wait_all([watch["id"] for watch, _, _ in watches + in_flight], "delivered", timeout=60)
    for watch, job, name in watches + in_flight:
        hooks = receiver.hooks(name)
        assert hooks, name
        # Sent again after the crash or not, it is one webhook: one id, one body.
        assert len({hook.webhook_id for hook in hooks}) == 1, name
        assert len({hook.body for hook in hooks}) == 1, name
        body = hooks[-1].verify(watch["secret"])
        assert (body["type"], body["job_id"], body["watch_id"]) == (
            "job.succeeded",
            job,
            watch["id"],
        )
        assert body["data"] == upstream.answer(job).json()
    for _, _, name in watches[20:] + in_flight:  # answered 500, or not before the kill
        assert len(receiver.hooks(name)) >= 2


@pytest.mark.e2e
def test_a_bridge_on_the_memory_store_delivers_and_forgets_at_a_restart(
    start_bridge: StartBridge, upstream: Upstream, receiver: Receiver, tmp_path: Path
) -> None:
    """`store.url = memory://` serves a whole watch, webhook included, and writes no file; a
    restarted bridge knows nothing of it."""
    memory = {"BRIDGE_STORE__URL": "memory://"}
    first = start_bridge(**memory)
    job = upstream.create_job(queue_positions=0, processing_s=0.3)
    name = unique("memory")
    watch = first.register(job_id=job, callback_url=receiver.callback(name))

    first.wait_for_status(watch["id"], "delivered")
    [hook] = receiver.wait_for(name, 1)
    assert hook.verify(watch["secret"])["job_id"] == job
    assert first.process.stop() == 0
    assert list(tmp_path.glob("*.db*")) == []

    second = start_bridge(**memory)
    assert second.client.get(f"/v1/watches/{watch['id']}").status_code == 404


@pytest.mark.e2e
def test_second_serve_on_the_same_sqlite_file_refuses_to_start(
    bridge: Bridge, upstream: Upstream, tmp_path: Path
) -> None:
    """A second `serve` on a SQLite file in use exits non-zero with one clear line."""
    env = harness.bridge_env(upstream.url, bridge.db, harness.free_port())
    second = harness.start_process(
        "test_second_serve_on_the_same_sqlite_file_refuses_to_start.second",
        tmp_path,
        ["serve"],
        env,
    )
    try:
        code = second.wait(harness.START_DEADLINE_S)
    finally:
        second.kill()
    assert code != 0
    [line] = (second.stdout() + second.stderr()).strip().splitlines()
    refusal = json.loads(line)
    assert refusal["event"] == "bridge.cannot_start"
    assert "in use by another webhook-bridge process" in refusal["detail"]
    assert str(bridge.db) in refusal["detail"]
    # The first one is unharmed.
    assert bridge.client.get("/readyz").status_code == 200


BAD_SETTINGS: dict[str, tuple[dict[str, str], list[str]]] = {
    "not-a-number": (
        {"BRIDGE_POLL__INTERVAL_S": "abc"},
        ["poll.interval_s", "BRIDGE_POLL__INTERVAL_S"],
    ),
    "unknown-key": ({"BRIDGE_POLL__INTREVAL_S": "3"}, ["BRIDGE_POLL__INTREVAL_S", "unknown"]),
    "out-of-range": ({"BRIDGE_POLL__TIMEOUT_S": "-1"}, ["poll.timeout_s"]),
    "unreachable-dir": (
        {"BRIDGE_STORE__URL": "sqlite:////nonexistent/dir/bridge.db"},
        ["store.url", "/nonexistent/dir"],
    ),
    "list-not-json": ({"BRIDGE_DELIVERY__RETRY_SCHEDULE_S": "[5, 'x']"}, ["retry_schedule_s"]),
    # Both values come from the environment: the line must not blame a config file.
    "min-above-interval": (
        {"BRIDGE_POLL__INTERVAL_S": "0.3", "BRIDGE_POLL__MIN_INTERVAL_S": "0.5"},
        ["min_interval_s", "BRIDGE_POLL__"],
    ),
}


@dataclass(frozen=True)
class Refusal:
    code: int
    stdout: str
    stderr: str
    db: Path


@pytest.fixture(scope="module")
def refusals(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> dict[str, Refusal]:
    """`serve` started with each bad setting at once (start-up is slow on a loaded machine)."""
    started = {}
    for name, (variables, _) in BAD_SETTINGS.items():
        directory = tmp_path_factory.mktemp(f"refusal-{name}")
        db = directory / "b.db"
        env = {**harness.bridge_env(upstream.url, db, harness.free_port()), **variables}
        started[name] = (harness.start_process(f"refusal-{name}", directory, ["serve"], env), db)
    found = {}
    try:
        for name, (process, db) in started.items():
            code = process.wait(harness.START_DEADLINE_S)
            found[name] = Refusal(code, process.stdout(), process.stderr(), db)
    finally:
        for process, _ in started.values():
            process.kill()
    return found


@pytest.mark.e2e
@pytest.mark.parametrize("case", list(BAD_SETTINGS))
def test_bad_configuration_stops_start_up_with_one_line(
    refusals: dict[str, Refusal], case: str
) -> None:
    """A bad setting stops `serve` before it listens, with one stderr line naming the key."""
    refusal = refusals[case]
    assert refusal.code != 0
    lines = refusal.stderr.strip().splitlines()
    assert len(lines) == 1, refusal.stderr
    for fragment in BAD_SETTINGS[case][1]:
        assert fragment.lower() in lines[0].lower(), lines[0]
    assert refusal.stdout == ""
    assert not refusal.db.exists()


@pytest.mark.e2e
def test_restart_after_a_graceful_stop_resumes_polling(
    start_bridge: StartBridge, upstream: Upstream, receiver: Receiver, tmp_path: Path
) -> None:
    """SIGTERM exits 0 and releases the watches; the next process on the file delivers them."""
    db = tmp_path / "graceful.db"
    first = start_bridge(db=db)
    job = upstream.create_job(queue_positions=2, seconds_per_position=1.0, processing_s=0.5)
    name = unique("graceful")
    watch = first.register(job_id=job, callback_url=receiver.callback(name))
    wait_until(lambda: upstream.polls(job) >= 1, what="a first poll")
    assert first.process.stop() == 0  # a graceful stop is not a crash
    assert '"event": "worker.stopped"' in first.process.stdout()
    polls = upstream.polls(job)
    second = start_bridge(db=db)
    assert second.wait_for_status(watch["id"], "delivered")["job_status"] == "succeeded"
    [hook] = receiver.hooks(name)
    assert hook.verify(watch["secret"])["job_id"] == job
    assert upstream.polls(job) > polls


@pytest.mark.e2e
def test_check_config_prints_the_settings_with_every_secret_masked(
    upstream: Upstream, tmp_path: Path
) -> None:
    """check-config shows the effective settings; the API key and the store password never."""
    env = {
        **harness.bridge_env(upstream.url, tmp_path / "b.db", 8123),
        "BRIDGE_UPSTREAM__API_KEY": "bw_supersecret",
        "BRIDGE_STORE__URL": "postgresql://bridge:hunter2@db.internal:5432/bridge",
    }
    process = harness.start_process(
        "test_check_config_prints_the_settings_with_every_secret_masked.check",
        tmp_path,
        ["check-config"],
        env,
    )
    try:
        assert process.wait(harness.START_DEADLINE_S) == 0, process.stderr()
    finally:
        process.kill()
    shown = json.loads(process.stdout())
    assert shown["server"]["port"] == 8123
    assert shown["poll"]["interval_s"] == 0.3
    assert shown["store"]["url"].startswith("postgresql://")
    assert "db.internal" in shown["store"]["url"]
    assert "bw_supersecret" not in process.stdout()
    assert "hunter2" not in process.stdout()
