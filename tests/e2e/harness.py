"""Helpers of the end-to-end suite: processes, waiting, and clients of the three servers.

Each server runs as a real subprocess (`python -m service ...`) on a loopback port, with its
stdout and stderr in files under a temporary directory (`Process`). `wait_until` is the only way
a test waits: it polls a predicate until a deadline, so a test is as fast as the machine allows
and still holds on a loaded one.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
from standardwebhooks.webhooks import Webhook

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "bw_test_key"
# A fixed Fernet key, so per-watch upstream keys may be registered (they are stored encrypted).
ENCRYPTION_KEY = "pVQm2cl3y3ZTOQ0xq0Ht8xKSodUSlsXaZBRiSPVzFjw="
START_DEADLINE_S = 30.0
STOP_DEADLINE_S = 20.0
BANNER = re.compile(r"listening on (http://\S+)")
TAIL_LINES = 60

T = TypeVar("T")

# The settings every test bridge starts with: fast polls and retries, loopback callbacks.
BRIDGE_ENV: dict[str, str] = {
    "BRIDGE_SERVER__HOST": "127.0.0.1",
    "BRIDGE_UPSTREAM__API_KEY": API_KEY,
    "BRIDGE_UPSTREAM__REQUEST_TIMEOUT_S": "1",
    "BRIDGE_SECURITY__ALLOW_PRIVATE_CALLBACKS": "true",
    "BRIDGE_POLL__INTERVAL_S": "0.3",
    "BRIDGE_POLL__MIN_INTERVAL_S": "0.2",
    "BRIDGE_POLL__TIMEOUT_S": "60",
    "BRIDGE_POLL__NOT_FOUND_GRACE_S": "1",
    "BRIDGE_POLL__MAX_BACKOFF_S": "3",
    "BRIDGE_DELIVERY__RETRY_SCHEDULE_S": "[0.5, 0.5, 0.5]",
    "BRIDGE_DELIVERY__TIMEOUT_S": "3",
    "BRIDGE_LOG__FORMAT": "json",
    "BRIDGE_SECURITY__ENCRYPTION_KEY": ENCRYPTION_KEY,
}


# Waiting.


def wait_until(
    predicate: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> T:
    """Call `predicate` until it returns something truthy and return that; fail at the deadline.

    An AssertionError or HTTP error raised by the predicate counts as "not yet". The failure
    names `what` and the last value (or error) seen."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
        except (AssertionError, httpx.HTTPError) as error:
            value, last = None, error
        else:
            last = value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout:g} s: {what or predicate!r}; last: {last!r}")
        time.sleep(interval)


def unique(prefix: str) -> str:
    """`prefix` and a random suffix: job ids and callback paths of one test."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def epoch(iso: str) -> float:
    """Seconds since the epoch of an ISO 8601 time such as `2026-01-01T00:00:00.000Z`."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# Processes.

PROCESSES: list[Process] = []
"""Every process started in this session, so a failed test can show their output."""


@dataclass
class Process:
    """One subprocess with its output in files; `stop` or `kill` it, read its output."""

    name: str
    argv: list[str]
    env: dict[str, str]
    directory: Path
    popen: subprocess.Popen[bytes] = field(init=False)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.stdout_path = self.directory / f"{self.name}.stdout"
        self.stderr_path = self.directory / f"{self.name}.stderr"
        with self.stdout_path.open("ab") as out, self.stderr_path.open("ab") as err:
            self.popen = subprocess.Popen(
                self.argv, stdout=out, stderr=err, env=self.env, cwd=self.directory
            )
        PROCESSES.append(self)

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def stop(self) -> int:
        """SIGTERM, then SIGKILL past the deadline; the exit code."""
        if self.running:
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                pass
        return self.kill()

    def kill(self) -> int:
        """SIGKILL at once; the exit code."""
        if self.running:
            self.popen.kill()
        return self.popen.wait(STOP_DEADLINE_S)

    def tail(self) -> str:
        parts = []
        for label, path in (("stdout", self.stdout_path), ("stderr", self.stderr_path)):
            lines = path.read_text(errors="replace").splitlines()[-TAIL_LINES:]
            parts.append(f"--- {self.name} {label} ({path}) ---\n" + "\n".join(lines))
        state = "running" if self.running else f"exited {self.popen.returncode}"
        return f"[{state}] {' '.join(self.argv)}\n" + "\n".join(parts)


def environment(extra: dict[str, str]) -> dict[str, str]:
    """This environment without any BRIDGE_ variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def start_process(name: str, directory: Path, args: list[str], env: dict[str, str]) -> Process:
    """`python -m service ARGS` in `directory` (so no config/bridge.toml is found there)."""
    return Process(name, [sys.executable, "-m", "service", *args], environment(env), directory)


def banner_url(process: Process) -> str:
    """The URL a devtools process prints once it accepts connections."""

    def started() -> str | None:
        if not process.running:
            raise RuntimeError(f"{process.name} exited early:\n{process.tail()}")
        match = BANNER.search(process.stdout())
        return match.group(1) if match else None

    return wait_until(started, START_DEADLINE_S, what=f"{process.name} to print its address")


# The upstream simulator.


@dataclass
class Upstream:
    """The simulator process and a client of its control endpoints."""

    process: Process
    url: str
    client: httpx.Client

    def create_job(self, job_id: str | None = None, **spec: Any) -> str:
        """A job with the given timeline and faults (see `service.devtools.upstream_jobs`)."""
        body = {"id": job_id or unique("job"), **spec}
        response = self.client.post("/_sim/jobs", json=body)
        assert response.status_code == 200, response.text
        created: str = response.json()["id"]
        return created

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.client.get(f"/_sim/jobs/{job_id}")
        assert response.status_code == 200, response.text
        described: dict[str, Any] = response.json()
        return described

    def polls(self, job_id: str) -> int:
        return int(self.job(job_id)["polls"])

    def answer(self, job_id: str, key: str = API_KEY) -> httpx.Response:
        """What the upstream answers a poll of `job_id` now (this counts as a poll)."""
        return self.client.get(
            f"/api/v1/generate/{job_id}", headers={"Authorization": f"Bearer {key}"}
        )


# The receiver.


@dataclass(frozen=True)
class Hook:
    """One request the receiver recorded."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: str
    received_at: float

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def json(self) -> Any:
        return json.loads(self.body)

    def verify(self, secret: str) -> Any:
        """The body, parsed, once its Standard Webhooks signature checks out with `secret`."""
        return Webhook(secret).verify(self.body, self.headers)


@dataclass
class Receiver:
    """The listener process (no --secret: it answers 200 unless the query scripts otherwise)."""

    process: Process
    url: str
    record: Path

    def callback(self, name: str, **query: object) -> str:
        """A callback URL on a path of its own: `callback(name, respond="500,200")`."""
        suffix = f"?{urlencode(query)}" if query else ""
        return f"{self.url}/hooks/{name}{suffix}"

    def hooks(self, name: str | None = None) -> list[Hook]:
        """Every request recorded so far, in arrival order; only those to /hooks/`name` if given."""
        try:
            text = self.record.read_text()
        except FileNotFoundError:
            return []
        found = []
        for line in text.splitlines():
            if not line.endswith("}"):
                continue  # being written right now
            raw = json.loads(line)
            hook = Hook(
                raw["method"], raw["path"], raw["query"], raw["headers"], raw["body"],
                raw["received_at"],
            )  # fmt: skip
            if name is None or hook.path == f"/hooks/{name}":
                found.append(hook)
        return found

    def wait_for(self, name: str, count: int = 1, timeout: float = 30.0) -> list[Hook]:
        """The requests to /hooks/`name` once there are at least `count`."""

        def enough() -> list[Hook] | None:
            hooks = self.hooks(name)
            return hooks if len(hooks) >= count else None

        return wait_until(enough, timeout, what=f"{count} request(s) at /hooks/{name}")


# The bridge.


@dataclass
class Bridge:
    """A `webhook-bridge serve` process and a client of its API."""

    process: Process
    url: str
    db: Path
    client: httpx.Client

    def register(self, **body: Any) -> dict[str, Any]:
        """POST /v1/watches; the 201 answer (with the secret)."""
        response = self.client.post("/v1/watches", json=body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def watch(self, watch_id: str) -> dict[str, Any]:
        response = self.client.get(f"/v1/watches/{watch_id}")
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    def watches(self, **query: str | int) -> list[dict[str, Any]]:
        response = self.client.get("/v1/watches", params={"limit": 200, **query})
        assert response.status_code == 200, response.text
        page: list[dict[str, Any]] = response.json()["data"]
        return page

    def deliveries(self, watch_id: str) -> list[dict[str, Any]]:
        response = self.client.get(f"/v1/watches/{watch_id}/deliveries")
        assert response.status_code == 200, response.text
        attempts: list[dict[str, Any]] = response.json()["data"]
        return attempts

    def wait_for_status(
        self, watch_id: str, *statuses: str, timeout: float = 30.0
    ) -> dict[str, Any]:
        """The watch once its status is one of `statuses`."""

        def reached() -> dict[str, Any] | None:
            watch = self.watch(watch_id)
            return watch if watch["status"] in statuses else None

        return wait_until(reached, timeout, what=f"{watch_id} to become {'|'.join(statuses)}")

    def wait_all(self, watch_ids: list[str], *statuses: str, timeout: float = 60.0) -> None:
        """Until every watch of `watch_ids` has one of `statuses`."""

        def behind() -> list[tuple[str, str]]:
            found = {w["id"]: w["status"] for w in self.watches()}
            return [(w, found.get(w, "?")) for w in watch_ids if found.get(w) not in statuses]

        wait_until(
            lambda: not behind(), timeout, interval=0.2, what=f"every watch {'|'.join(statuses)}"
        )


def bridge_env(upstream_url: str, db: Path, port: int, **overrides: str) -> dict[str, str]:
    return {
        **BRIDGE_ENV,
        "BRIDGE_SERVER__PORT": str(port),
        "BRIDGE_UPSTREAM__BASE_URL": upstream_url,
        "BRIDGE_STORE__URL": f"sqlite:///{db}",
        **overrides,
    }


def launch_bridge(
    name: str, directory: Path, upstream_url: str, db: Path, **overrides: str
) -> Bridge:
    """Start `serve` on a free port and wait for `/readyz`; a port taken meanwhile is retried."""
    for attempt in range(3):
        port = free_port()
        process = start_process(
            f"{name}.{attempt}" if attempt else name,
            directory,
            ["serve"],
            bridge_env(upstream_url, db, port, **overrides),
        )
        url = f"http://127.0.0.1:{port}"
        client = httpx.Client(base_url=url, timeout=10)

        def ready(process: Process = process, client: httpx.Client = client) -> bool:
            if not process.running:
                return True
            try:
                return client.get("/readyz").status_code == 200
            except httpx.TransportError:
                return False

        try:
            wait_until(ready, START_DEADLINE_S, interval=0.1, what=f"{name} to be ready")
        except BaseException:
            client.close()
            process.kill()
            raise
        if process.running:
            return Bridge(process, url, db, client)
        client.close()
        if "address already in use" not in (process.stdout() + process.stderr()).lower():
            raise AssertionError(f"{name} did not start:\n{process.tail()}")
    raise AssertionError(f"{name}: no free port in 3 attempts")


StartBridge = Callable[..., Bridge]
"""The `start_bridge` fixture: `start_bridge(db=PATH, BRIDGE_X__Y="...")` -> a ready Bridge."""


def close_bridge(bridge: Bridge) -> None:
    bridge.client.close()
    bridge.process.stop()


# Running servers, for fixtures.


@contextmanager
def running_upstream(name: str, directory: Path, *options: str) -> Iterator[Upstream]:
    """A simulator accepting `API_KEY`, with extra command-line `options`, stopped on exit."""
    process = start_process(
        name, directory, ["fake-upstream", "--port", "0", "--api-key", API_KEY, *options], {}
    )
    try:
        url = banner_url(process)
        with httpx.Client(base_url=url, timeout=10) as client:
            yield Upstream(process, url, client)
    finally:
        process.stop()


@contextmanager
def running_receiver(name: str, directory: Path) -> Iterator[Receiver]:
    """A `listen` receiver recording every request to `directory/hooks.jsonl`."""
    record = directory / "hooks.jsonl"
    process = start_process(
        name, directory, ["listen", "--port", "0", "--quiet", "--record", str(record)], {}
    )
    try:
        yield Receiver(process, banner_url(process), record)
    finally:
        process.stop()
