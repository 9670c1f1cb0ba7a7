"""The benchmark's plumbing: child processes on loopback ports, and what /proc says about them.

`Services` starts the simulator, the listener and the bridge as separate processes, each writing
its output to a log file in the run's temporary directory, and stops every one of them when it is
closed, whatever happened before (an error, Ctrl-C, SIGTERM). On Linux each child is also told to
die with the benchmark (PR_SET_PDEATHSIG), so even a SIGKILL of the benchmark leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
WEBHOOK_BRIDGE = [sys.executable, "-m", "service"]
BANNER = re.compile(r"listening on (http://\S+)")
START_TIMEOUT_S = 30.0
STOP_GRACE_S = 10.0


class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (for `serve`, which cannot take 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, all its threads included (/proc/PID/stat)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    # The command name, in parentheses, may hold spaces: fields are counted after it.
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds spent by every CPU on anything but idling and waiting for I/O (/proc/stat)."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (/proc/PID/status VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for process {pid}")


@contextlib.contextmanager
def paused(pids: list[int]) -> Iterator[None]:
    """`pids` stopped (SIGSTOP) inside the block, continued after it."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Services:
    """Every child process of one run; `close` stops those still running."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._running: list[Service] = []

    def spawn_tool(self, name: str, argv: list[str]) -> Service:
        """Start any command (a profiler, say), to be stopped with the others."""
        return self._spawn(name, argv, dict(os.environ))

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Service:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C reaches the benchmark only, which stops it in order.
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        service = Service(name, process, log)
        self._running.append(service)
        return service

    async def start_devtool(self, name: str, args: list[str], port: int = 0) -> Service:
        """Start `webhook-bridge <args> --port PORT` (any free one by default) and wait for the
        URL in its start line."""
        argv = [*WEBHOOK_BRIDGE, *args, "--host", "127.0.0.1", "--port", str(port)]
        service = self._spawn(name, argv, dict(os.environ))
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            match = BANNER.search(service.log.read_text(errors="replace"))
            if match:
                service.url = match.group(1)
                return service
            self._check_alive(service)
            await asyncio.sleep(0.05)
        raise BenchError(
            f"{name} printed no start line in {START_TIMEOUT_S:g} s:\n{service.tail()}"
        )

    async def start_bridge(self, name: str, env: dict[str, str]) -> Service:
        """Start `webhook-bridge serve` on a free port and wait until /readyz answers 200."""
        port = free_port()
        bridge_env = {
            key: value for key, value in os.environ.items() if not key.startswith("BRIDGE_")
        }
        bridge_env.update({"BRIDGE_SERVER__HOST": "127.0.0.1", "BRIDGE_SERVER__PORT": str(port)})
        bridge_env.update(env)
        return await self.start_server(name, [*WEBHOOK_BRIDGE, "serve"], bridge_env, port)

    async def start_server(
        self, name: str, argv: list[str], env: dict[str, str], port: int
    ) -> Service:
        """Start `argv`, which serves HTTP on 127.0.0.1:`port`, and wait until /readyz answers
        200."""
        service = self._spawn(name, argv, env)
        service.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                self._check_alive(service)
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(f"{service.url}/readyz") as response:
                        if response.status == 200:
                            return service
                await asyncio.sleep(0.1)
        raise BenchError(f"{name} was not ready in {START_TIMEOUT_S:g} s:\n{service.tail()}")

    def _check_alive(self, service: Service) -> None:
        code = service.process.poll()
        if code is not None:
            raise BenchError(f"{service.name} exited with status {code}:\n{service.tail()}")

    def stop(self, service: Service) -> None:
        """SIGINT (a graceful stop), then SIGKILL after a grace period."""
        if service in self._running:
            self._running.remove(service)
        process = service.process
        if process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        """Stop every service still running, the last started first."""
        for service in reversed(list(self._running)):
            self.stop(service)
