"""A fresh clone's time to its first verified webhook, as a newcomer following the README gets it.

    python3 bench/first_run.py [--repo PATH_OR_URL] [--ref main] [--pip-cache DIR]

Clones the repository into a temporary directory, runs `make run` there until the bridge answers
(this creates `.venv`), stops it, then follows the README's walkthrough: the upstream simulator,
the verifying receiver and the bridge pointed at both, one job created upstream and handed to the
bridge, until the receiver prints the webhook with its signature verified. Prints the time of each
step and writes them to `bench/results/<UTC time>-first-run.json`.

Runs with the system's Python alone (there is no virtualenv yet). The walkthrough's ports are
taken free rather than 8080, 9090 and 9000, so that a bridge already running here does not matter.
`--pip-cache` gives pip a cache directory of its own: a new, empty one is a new machine's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # noqa: S105 (the README's example secret)
KEY = "bw_test_key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, deadline: float, process: subprocess.Popen[str]) -> None:
    """Until `url` answers at all (any status), or fail when `process` ends or time runs out."""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args} exited with {process.returncode} before {url}")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 (a loopback URL)
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer in time")


def cpu_s() -> float:
    """User and system CPU seconds of the finished child processes (and theirs) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def post(url: str, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 (a loopback URL)
        url, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        result: dict[str, Any] = json.load(answer)
        return result


@contextlib.contextmanager
def started(
    command: list[str], cwd: Path, env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[str]]:
    """A process in its own group (so make's children stop with it), its output in `log`."""
    with log.open("w") as out:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def wait_for_line(log: Path, needle: str, deadline: float) -> str:
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if needle in text:
            return text
        time.sleep(0.05)
    raise SystemExit(f"{needle!r} never appeared in {log}:\n{log.read_text(errors='replace')}")


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if args.pip_cache:
        env["PIP_CACHE_DIR"] = args.pip_cache
    clone, logs = work / "clone", work / "logs"
    logs.mkdir()
    times: dict[str, Any] = {}
    start = time.monotonic()

    subprocess.run(["git", "clone", "-q", args.repo, str(clone)], check=True)
    subprocess.run(["git", "checkout", "-q", args.ref], cwd=clone, check=True)
    times["clone_s"] = time.monotonic() - start

    # `make run`, until the bridge answers: the virtualenv's install is the bulk of it.
    port = free_port()
    run_env = {**env, "BRIDGE_SERVER__PORT": str(port)}
    began, cpu = time.monotonic(), cpu_s()
    with started(["make", "run"], clone, run_env, logs / "make-run.log") as make:
        wait_for(f"http://127.0.0.1:{port}/livez", began + args.timeout, make)
        times["make_run_s"] = time.monotonic() - began
    # CPU time depends far less than wall time on what else the machine runs.
    times["make_run_cpu_s"] = cpu_s() - cpu
    (clone / "bridge.db").unlink(missing_ok=True)
    venv = clone / ".venv"
    listed = subprocess.run(
        [str(venv / "bin/python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
    )
    times["venv_packages"] = len(json.loads(listed.stdout))
    times["venv_mib"] = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file()) / 2**20

    # The walkthrough: three processes, a job, a watch, until the receiver verified the webhook.
    began = time.monotonic()
    bridge_cli = str(venv / "bin/webhook-bridge")
    upstream_port, receiver_port, bridge_port = free_port(), free_port(), free_port()
    key = subprocess.run(
        [bridge_cli, "new-encryption-key"], capture_output=True, text=True, check=True
    ).stdout.strip()
    bridge_env = {
        **env,
        "BRIDGE_SERVER__PORT": str(bridge_port),
        "BRIDGE_UPSTREAM__BASE_URL": f"http://127.0.0.1:{upstream_port}",
        "BRIDGE_UPSTREAM__API_KEY": KEY,
        "BRIDGE_SECURITY__ALLOW_PRIVATE_CALLBACKS": "true",
        "BRIDGE_SECURITY__ENCRYPTION_KEY": key,
    }
    upstream_cmd = [bridge_cli, "fake-upstream", "--port", str(upstream_port)]
    receiver_cmd = [bridge_cli, "listen", "--port", str(receiver_port), "--secret", SECRET]
    with (
        started(upstream_cmd, clone, env, logs / "upstream.log") as upstream,
        started(receiver_cmd, clone, env, logs / "receiver.log") as receiver,
        started([bridge_cli, "serve"], clone, bridge_env, logs / "bridge.log") as bridge,
    ):
        deadline = began + 60
        wait_for(f"http://127.0.0.1:{upstream_port}/_sim/stats", deadline, upstream)
        wait_for(f"http://127.0.0.1:{receiver_port}/", deadline, receiver)
        wait_for(f"http://127.0.0.1:{bridge_port}/livez", deadline, bridge)
        times["walkthrough_processes_up_s"] = time.monotonic() - began
        job = post(
            f"http://127.0.0.1:{upstream_port}/api/v1/generate",
            {"prompt": "a lighthouse"},
            {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        )
        post(
            f"http://127.0.0.1:{bridge_port}/v1/watches",
            {
                "job_id": job["id"],
                "callback_url": f"http://127.0.0.1:{receiver_port}/hooks/generation",
                "secret": SECRET,
                "metadata": {"order_id": 42},
            },
            {"Content-Type": "application/json"},
        )
        printed = wait_for_line(logs / "receiver.log", "verified    ✓", time.monotonic() + 120)
        times["walkthrough_s"] = time.monotonic() - began
    times["total_s"] = time.monotonic() - start
    times["receiver_printed"] = printed.strip().splitlines()[-6:]
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=str(HERE.parent), help="what to clone (this checkout)")
    parser.add_argument("--ref", default="HEAD", help="the commit or branch to check out")
    parser.add_argument("--pip-cache", help="pip's cache directory (default: pip's own)")
    parser.add_argument("--timeout", type=float, default=1200, help="for `make run`, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the clone and the logs")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="first-run-"))
    try:
        times = measure(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    times |= {
        "repo": args.repo,
        "ref": args.ref,
        "pip_cache": args.pip_cache or "pip's own",
        "python": sys.version.split()[0],
    }
    for name in ("clone_s", "make_run_s", "make_run_cpu_s", "walkthrough_s", "total_s"):
        print(f"{name:<16} {times[name]:8.1f}")
    print(f"{'venv':<16} {times['venv_packages']} packages, {times['venv_mib']:.0f} MiB")
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (results / f"{stamp}-first-run.json").write_text(json.dumps(times, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
