"""Several `webhook-bridge serve` replicas on one PostgreSQL database.

Each test gets a database of its own on the test server (the `database` fixture, see
tests/e2e/postgres.py), created before its replicas start and dropped WITH (FORCE) afterwards.
The test reads the database directly only to see who holds what at a given moment; every
outcome is checked through the API, the receiver and the simulator's poll counts.

(A second `serve` on a SQLite file in use is refused: see test_durability.py.)
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.store import migrations
from tests.e2e import harness
from tests.e2e.harness import Bridge, Hook, Receiver, Upstream, unique, wait_until
from tests.e2e.postgres import sql

INTERVAL_S = 0.5
# Short leases and fast polls, so a crash is taken over within seconds.
REPLICA_ENV = {
    "BRIDGE_STORE__LEASE_S": "3",
    "BRIDGE_POLL__INTERVAL_S": str(INTERVAL_S),
    "BRIDGE_POLL__MIN_INTERVAL_S": "0.2",
    # The poll counts below are those of one fixed-interval poller; adaptive pacing (which may
    # poll down to the minimum interval near a job's end) is measured in bench/pacing.py.
    "BRIDGE_POLL__STRATEGY": "fixed",
    "BRIDGE_DELIVERY__RETRY_SCHEDULE_S": "[0.5, 0.5, 0.5]",
    # Hundreds of registrations within seconds.
    "BRIDGE_AUTH__REGISTRATIONS_PER_S": "100000",
    "BRIDGE_AUTH__REGISTRATION_BURST": "100000",
}
pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


# The replicas.

StartReplicas = Callable[..., list[Bridge]]


@pytest.fixture
def replicas(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    database: str,
    upstream: Upstream,
    receiver: Receiver,
) -> Iterator[StartReplicas]:
    """`replicas(count, BRIDGE_X__Y="...")`: that many `serve` processes on the test's database,
    started at the same moment, once all are ready."""
    started: list[Bridge] = []

    def start(count: int, **overrides: str) -> list[Bridge]:
        names = [f"{request.node.name}.replica{len(started) + n + 1}" for n in range(count)]
        env = {**REPLICA_ENV, "BRIDGE_STORE__URL": database, **overrides}
        # The SQLite path is not used: BRIDGE_STORE__URL names the PostgreSQL database.
        unused = tmp_path / "unused.db"
        with ThreadPoolExecutor(count) as pool:
            futures = [
                pool.submit(harness.launch_bridge, name, tmp_path, upstream.url, unused, **env)
                for name in names
            ]
            launched = [future.result() for future in futures]
        started.extend(launched)
        return launched

    try:
        yield start
    finally:
        for bridge in started:
            harness.close_bridge(bridge)


def owner(bridge: Bridge) -> str:
    """The lease owner name a replica logged at start."""
    for line in bridge.process.stdout().splitlines():
        if '"bridge.started"' in line:
            name: str = json.loads(line)["owner"]
            return name
    raise AssertionError(f"{bridge.process.name} logged no bridge.started")


def all_statuses(bridge: Bridge) -> dict[str, str]:
    """The status of every watch, read page by page through `bridge`."""
    found: dict[str, str] = {}
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 200}
        if cursor:
            params["cursor"] = cursor
        response = bridge.client.get("/v1/watches", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        found.update((watch["id"], watch["status"]) for watch in page["data"])
        cursor = page["next_cursor"]
        if not cursor:
            return found


def wait_all_delivered(bridge: Bridge, watch_ids: list[str], timeout: float) -> None:
    """Until no watch of `watch_ids` is active or delivering; then every one must be delivered."""
    behind: list[tuple[str, str]] = []

    def ended() -> bool:
        found = all_statuses(bridge)
        behind[:] = [(w, found.get(w, "?")) for w in watch_ids if found.get(w) != "delivered"]
        return not any(status in ("active", "delivering", "?") for _, status in behind)

    try:
        wait_until(ended, timeout, interval=0.5, what="every watch ended")
    finally:
        counts = Counter(status for _, status in behind)
        assert not behind, f"not delivered: {dict(counts)}, such as {behind[:5]}"


def hooks_by_name(receiver: Receiver) -> dict[str, list[Hook]]:
    """Every recorded request, by the callback name of its path (/hooks/NAME)."""
    found: dict[str, list[Hook]] = defaultdict(list)
    for hook in receiver.hooks():
        found[hook.path.removeprefix("/hooks/")].append(hook)
    return found


def check_final_webhook(
    hooks: list[Hook], watch: dict[str, Any], job: str, refused_first: int = 0
) -> int:
    """Check that `hooks` carry one webhook, the watch's job.succeeded, signed with its secret;
    the number of extra copies the receiver accepted (`refused_first` were answered 500)."""
    assert hooks, f"no webhook for {watch['id']} (job {job})"
    assert len({hook.webhook_id for hook in hooks}) == 1, (watch["id"], hooks)
    assert len({hook.body for hook in hooks}) == 1, (watch["id"], hooks)
    body = hooks[-1].verify(watch["secret"])
    assert (body["type"], body["job_id"], body["watch_id"]) == ("job.succeeded", job, watch["id"])
    assert body["data"]["status"] == "succeeded"
    return max(0, len(hooks) - refused_first - 1)


Registered = tuple[dict[str, Any], str, str, int]
"""A watch as registered (with its secret), its job, its callback name, how many 500s first."""


def register_jobs(
    bridge: Bridge, upstream: Upstream, receiver: Receiver, parity: int
) -> list[Registered]:
    """Half of 500 jobs (even or odd indices), 0.5 to 4.75 s long, each created just before its
    watch is registered on `bridge`; every fifth receiver answers 500 first. Clients of its own:
    each replica is fed by a thread of its own."""
    found = []
    with (
        httpx.Client(base_url=bridge.url, timeout=10) as to_bridge,
        httpx.Client(base_url=upstream.url, timeout=10) as to_upstream,
    ):
        bridge = replace(bridge, client=to_bridge)
        upstream = replace(upstream, client=to_upstream)
        for index in range(parity, 500, 2):
            job = upstream.create_job(
                queue_positions=index % 3,
                seconds_per_position=1.0,
                processing_s=0.5 + index % 4 * 0.75,
            )
            name = unique("replicas")
            refused = 1 if index % 5 == 0 else 0
            query = {"respond": "500,200"} if refused else {}
            watch = bridge.register(job_id=job, callback_url=receiver.callback(name, **query))
            found.append((watch, job, name, refused))
    return found


# The tests.


def test_two_replicas_deliver_every_job_after_one_is_sigkilled(
    replicas: StartReplicas, database: str, upstream: Upstream, receiver: Receiver
) -> None:
    """500 watches over two replicas, one SIGKILLed midway (holding running jobs and pending
    deliveries): every job delivered, none lost."""
    first, second = replicas(
        2, BRIDGE_DELIVERY__RETRY_SCHEDULE_S="[2, 0.5, 0.5, 0.5]", BRIDGE_DELIVERY__TIMEOUT_S="10"
    )
    with ThreadPoolExecutor(2) as pool:
        halves = pool.map(register_jobs, [first, second], [upstream] * 2, [receiver] * 2, [0, 1])
        registered = [entry for half in halves for entry in half]

    # Just before the kill, on the replica to be killed: ten finished jobs whose receiver
    # answers 500 first (their retry, 2 s later, is pending at the kill), and three whose receiver
    # takes 3 s to answer (their attempt is in flight at the kill: the other replica sends it
    # again once the delivery's lease has expired).
    pending: list[Registered] = []
    for refused, query in [(1, {"respond": "500,200"})] * 10 + [(0, {"delay_s": 3})] * 3:
        job = upstream.create_job(queue_positions=0, processing_s=0)
        name = unique("replicas_late")
        watch = first.register(job_id=job, callback_url=receiver.callback(name, **query))
        pending.append((watch, job, name, refused))
    for _, _, name, _ in pending[10:]:
        receiver.wait_for(name, 1)
    refused_ids = [watch["id"] for watch, _, _, _ in pending[:10]]
    wait_until(
        lambda: sql(
            database,
            "SELECT count(*) = 10 FROM deliveries WHERE watch_id = ANY($1) AND attempts >= 1",
            refused_ids,
        )[0][0],
        what="the ten 500s recorded",
    )
    # And three jobs still running at the kill, whatever the machine's pace so far: the other
    # replica polls them once their leases have expired.
    running: list[Registered] = []
    for _ in range(3):
        job = upstream.create_job(queue_positions=0, processing_s=15)
        name = unique("replicas_running")
        watch = first.register(job_id=job, callback_url=receiver.callback(name))
        running.append((watch, job, name, 0))
    [held] = sql(
        database,
        "SELECT (SELECT count(*) FROM watches WHERE status = 'active' AND lease_owner = $1)"
        " AS watches, (SELECT count(*) FROM deliveries WHERE status = 'pending')"
        " AS pending, (SELECT count(*) FROM deliveries WHERE status = 'pending'"
        " AND lease_owner = $1) AS in_flight",
        owner(first),
    )
    assert first.process.kill() == -signal.SIGKILL
    killed_at = time.time()
    print(f"\nat the SIGKILL the killed replica held {dict(held)}")
    assert held["watches"] >= 3, dict(held)
    assert held["in_flight"] >= 3, dict(held)
    assert held["pending"] >= 13, dict(held)

    everything = registered + pending + running
    wait_all_delivered(second, [watch["id"] for watch, _, _, _ in everything], timeout=60)
    delivered_s = time.time() - killed_at

    hooks = hooks_by_name(receiver)
    duplicates = {
        watch["id"]: extra
        for watch, job, name, refused in everything
        if (extra := check_final_webhook(hooks[name], watch, job, refused))
    }
    polls, expected, over = [], 0.0, []
    for watch, job, _, _ in everything:
        described = upstream.job(job)
        running_s = max(0.0, described["terminal_at"] - harness.epoch(watch["created_at"]))
        # One poller polls at registration, then every interval (±10%) until the job has ended;
        # a takeover adds a poll at most. Two pollers at once would double the count.
        expected += running_s / INTERVAL_S + 2
        polls.append(described["polls"])
        if described["polls"] > running_s / INTERVAL_S * 1.5 + 4:
            over.append((job, described["polls"], round(running_s, 2)))
    report = (
        f"{len(everything)} jobs, {sum(len(hooks[name]) for _, _, name, _ in everything)}"
        f" webhooks received, {sum(duplicates.values())} duplicate(s) (same webhook-id accepted"
        f" again) on {len(duplicates)} watch(es), all delivered {delivered_s:.1f} s after the"
        f" kill; upstream polls per job: mean {sum(polls) / len(polls):.2f}, max {max(polls)},"
        f" total {sum(polls)} ({sum(polls) / expected:.2f} of what one poller would make);"
        f" {len(over)} job(s) over 1.5 times one poller's count: {over[:5]}"
    )
    print(report)
    assert not over, report
    assert sum(polls) <= 1.25 * expected, report
    for _, _, name, _ in pending:  # answered 500, or not before the kill: sent again
        assert len(hooks[name]) >= 2, (name, report)


def test_a_second_replica_does_not_double_the_polling(
    replicas: StartReplicas, database: str, upstream: Upstream, receiver: Receiver
) -> None:
    """40 watches registered on one of two replicas: each job is polled once per interval."""
    first, second = replicas(2)
    jobs = [upstream.create_job(queue_positions=60, seconds_per_position=1.0) for _ in range(40)]
    for job in jobs:
        first.register(job_id=job, callback_url=receiver.callback(unique("shared")))

    def polls() -> tuple[float, list[int]]:
        """The time (mid-read) and every job's poll count."""
        began = time.monotonic()
        counts = [upstream.polls(job) for job in jobs]
        return (began + time.monotonic()) / 2, counts

    # Past the first polls, count each job's polls until every one has had eight more.
    wait_until(lambda: min(polls()[1]) >= 2, what="every job polled twice")
    began, before = polls()

    def eight_more() -> tuple[float, list[int]] | None:
        now, counts = polls()
        gained = min(a - b for a, b in zip(counts, before, strict=True))
        return (now, counts) if gained >= 8 else None

    ended, after = wait_until(eight_more, 30, interval=0.25, what="eight more polls of every job")
    elapsed = ended - began
    # Polls per job per interval: 1 for one poller (a little above: the window ends when the
    # slowest job has its eighth poll); 2 if both replicas polled the jobs.
    rate = sum(after) - sum(before)
    per_interval = rate / len(jobs) / (elapsed / INTERVAL_S)
    holders = sql(
        database, "SELECT lease_owner, count(*) FROM watches GROUP BY lease_owner ORDER BY 1"
    )
    report = (
        f"{rate} polls of {len(jobs)} jobs in {elapsed:.2f} s: {per_interval:.2f} per job per"
        f" {INTERVAL_S:g} s interval; leases: {[tuple(row) for row in holders]}"
        f" (replicas {owner(first)}, {owner(second)})"
    )
    print(f"\n{report}")
    assert 0.7 <= per_interval <= 1.35, report


def test_sigterm_hands_the_watches_to_the_other_replica_at_once(
    replicas: StartReplicas, upstream: Upstream, receiver: Receiver
) -> None:
    """SIGTERM: exit 0 within the grace; the other replica polls its jobs at once, not after
    the 30 s lease, and delivers every one."""
    grace_s = 3.0
    first, second = replicas(
        2, BRIDGE_STORE__LEASE_S="30", BRIDGE_SERVER__SHUTDOWN_GRACE_S=str(grace_s)
    )
    registered = []
    for _ in range(20):
        job = upstream.create_job(queue_positions=4, seconds_per_position=1.0, processing_s=1.0)
        name = unique("handover")
        watch = first.register(job_id=job, callback_url=receiver.callback(name))
        registered.append((watch, job, name))
    jobs = [job for _, job, _ in registered]
    wait_until(lambda: all(upstream.polls(job) >= 1 for job in jobs), what="a first poll each")

    first.process.popen.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    assert first.process.wait(grace_s + 5) == 0
    stopped = time.monotonic()
    assert '"event": "worker.stopped"' in first.process.stdout()
    polls = {job: upstream.polls(job) for job in jobs}
    wait_until(
        lambda: all(upstream.polls(job) > polls[job] for job in jobs),
        timeout=10,
        interval=0.1,
        what="the other replica polling every job",
    )
    resumed = time.monotonic()
    print(
        f"\nSIGTERM to exit: {stopped - signalled:.2f} s; exit to every job polled again:"
        f" {resumed - stopped:.2f} s (lease 30 s)"
    )
    assert stopped - signalled <= grace_s
    assert resumed - stopped <= 3.0  # a tick or two, far from the 30 s lease

    wait_all_delivered(second, [watch["id"] for watch, _, _ in registered], timeout=30)
    hooks = hooks_by_name(receiver)
    for watch, job, name in registered:
        assert check_final_webhook(hooks[name], watch, job) == 0


def test_sigterm_hands_an_unfinished_delivery_to_the_other_replica_at_once(
    replicas: StartReplicas, database: str, upstream: Upstream, receiver: Receiver
) -> None:
    """SIGTERM with an attempt still in flight past the grace: exit 0 within about the grace,
    and the other replica sends it again at once, not after the 30 s lease."""
    grace_s = 1.0
    first, second = replicas(
        2,
        BRIDGE_STORE__LEASE_S="30",
        BRIDGE_SERVER__SHUTDOWN_GRACE_S=str(grace_s),
        BRIDGE_DELIVERY__TIMEOUT_S="20",
    )
    job = upstream.create_job(queue_positions=0, processing_s=0)
    name = unique("handover_delivery")
    # The receiver takes 4 s to answer each request: the first is still in flight at the stop.
    watch = first.register(job_id=job, callback_url=receiver.callback(name, delay_s=4))
    receiver.wait_for(name, 1)

    first.process.popen.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    assert first.process.wait(grace_s + 10) == 0
    stopped = time.monotonic()
    [lease] = sql(
        database,
        "SELECT d.lease_owner, d.lease_expires_at - extract(epoch FROM now()) AS left_s"
        " FROM deliveries d WHERE d.watch_id = $1",
        watch["id"],
    )
    print(f"\nSIGTERM to exit: {stopped - signalled:.2f} s; the delivery's lease: {dict(lease)}")
    assert stopped - signalled <= 2 * grace_s + 1.0
    # Released by the replica that stopped, so the other one sends it again within a tick or two.
    receiver.wait_for(name, 2, timeout=5)
    second.wait_for_status(watch["id"], "delivered", timeout=15)
    hooks = receiver.hooks(name)
    assert len({hook.webhook_id for hook in hooks}) == 1
    assert hooks[-1].verify(watch["secret"])["job_id"] == job


def test_replicas_started_together_migrate_the_fresh_database_once(
    replicas: StartReplicas,
    database: str,
    upstream: Upstream,
    receiver: Receiver,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """Two replicas started at once on an empty database both serve; `migrate` then finds
    nothing left to apply."""
    started = replicas(2)
    versions = [row[0] for row in sql(database, "SELECT version FROM schema_migrations")]
    # Each migration applied once, whichever replica applied it.
    assert versions == [version for version, _ in migrations.load("postgres")]

    env = harness.bridge_env(
        upstream.url, tmp_path / "unused.db", harness.free_port(), BRIDGE_STORE__URL=database
    )
    migrate = harness.start_process(f"{request.node.name}.migrate", tmp_path, ["migrate"], env)
    try:
        assert migrate.wait(harness.START_DEADLINE_S) == 0, migrate.stderr()
    finally:
        migrate.kill()
    assert migrate.stdout().strip() == "migrations applied: none, it was up to date"

    # Both work: each delivers a watch registered through it.
    for bridge in started:
        job = upstream.create_job(queue_positions=0, processing_s=0.5)
        name = unique("raced")
        watch = bridge.register(job_id=job, callback_url=receiver.callback(name))
        assert bridge.wait_for_status(watch["id"], "delivered")["job_status"] == "succeeded"
        [hook] = receiver.hooks(name)
        assert hook.verify(watch["secret"])["job_id"] == job
    for bridge in started:
        logs = bridge.process.stdout() + bridge.process.stderr()
        assert '"level": "error"' not in logs


def test_a_sign_out_on_one_replica_ends_the_sign_in_on_every_replica(
    replicas: StartReplicas,
) -> None:
    """A dashboard sign-in made on one replica is good on the other (they share the cookie
    key); signed out there, a copy of its cookie is refused by the first."""
    first, second = replicas(2, BRIDGE_AUTH__TOKENS='[{"name": "acme", "token": "acme-token"}]')
    signed_in = first.client.post("/ui/login", data={"token": "acme-token"})
    assert signed_in.status_code == 303, signed_in.text
    cookie = SimpleCookie(signed_in.headers["set-cookie"])["bridge_ui"].value
    copied = {"Cookie": f"bridge_ui={cookie}"}
    page = second.client.get("/ui/", headers=copied)
    assert page.status_code == 200, page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None

    signed_out = second.client.post("/ui/logout", data={"csrf": csrf.group(1)}, headers=copied)

    assert (signed_out.status_code, signed_out.headers["location"]) == (303, "/ui/login")
    for bridge in (first, second):
        refused = bridge.client.get("/ui/", headers=copied)
        assert (refused.status_code, refused.headers["location"]) == (303, "/ui/login")
