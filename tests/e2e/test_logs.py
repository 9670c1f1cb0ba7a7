"""What a `serve` process writes, seen by a log pipeline: under JSON logging every line is one
JSON object, uvicorn's included, and a port in use is one such line, not a traceback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import harness
from tests.e2e.harness import StartBridge, Upstream, free_port, wait_until

pytestmark = pytest.mark.e2e


def lines(process: harness.Process) -> list[str]:
    """Every line the process wrote, on stdout and stderr."""
    return (process.stdout() + process.stderr()).splitlines()


def as_json(line: str) -> dict[str, Any]:
    parsed = json.loads(line)
    assert isinstance(parsed, dict), line
    return parsed


def test_every_line_is_a_json_object_uvicorns_too(start_bridge: StartBridge) -> None:
    """A bridge started with JSON logging, sent a request uvicorn rejects (uvicorn logs a
    warning of its own) and then stopped, writes nothing but JSON objects, uvicorn's line
    among them in the bridge's shape."""
    bridge = start_bridge(BRIDGE_SERVER__HEALTH_PORT=str(free_port()))
    port = int(bridge.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"NOT HTTP\r\n\r\n")
        assert connection.recv(100).startswith(b"HTTP/1.1 400")
    wait_until(
        lambda: any("Invalid HTTP request" in line for line in lines(bridge.process)),
        what="uvicorn's warning of the request it rejected",
    )
    assert bridge.process.stop() == 0
    logged = [as_json(line) for line in lines(bridge.process)]
    uvicorns = [line for line in logged if line.get("logger") == "uvicorn.error"]
    assert [line["event"] for line in uvicorns] == ["Invalid HTTP request received."]
    assert uvicorns[0]["level"] == "warning"
    assert uvicorns[0]["timestamp"].endswith("Z")
    assert logged[-1]["event"] == "bridge.stopped"


@pytest.mark.parametrize(
    ("setting", "variable"),
    [("server.port", "BRIDGE_SERVER__PORT"), ("server.health_port", "BRIDGE_SERVER__HEALTH_PORT")],
)
def test_a_port_in_use_is_one_line_naming_it_and_its_setting(
    upstream: Upstream, tmp_path: Path, setting: str, variable: str
) -> None:
    """A bridge whose API or health port another socket listens on exits non-zero at once,
    having written one JSON line that names the address and the setting that changes it, and
    no traceback."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        ports = {"BRIDGE_SERVER__HEALTH_PORT": str(free_port()), variable: str(port)}
        env = harness.bridge_env(
            upstream.url, tmp_path / "bridge.db", free_port(),
            BRIDGE_SERVER__HEALTH_HOST="127.0.0.1", **ports,
        )  # fmt: skip
        process = harness.start_process(setting, tmp_path, ["serve"], env)
        code = process.wait(harness.START_DEADLINE_S)
    assert code != 0
    assert "Traceback" not in process.stdout() + process.stderr()
    [line] = lines(process)
    error = as_json(line)
    assert (error["event"], error["level"]) == ("bridge.cannot_start", "error")
    assert f"127.0.0.1:{port}" in error["detail"]
    assert "in use" in error["detail"]
    assert f"choose another port with {setting} ({variable})" in error["detail"]


@pytest.mark.parametrize("host", ["no-such-host.invalid", "a..b"])
def test_a_host_that_cannot_be_listened_on_names_the_host_setting(
    upstream: Upstream, tmp_path: Path, host: str
) -> None:
    """A host name that does not resolve, or that IDNA refuses, is one JSON line pointing at
    server.host, not at the port, and no traceback."""
    env = harness.bridge_env(
        upstream.url, tmp_path / "bridge.db", free_port(), BRIDGE_SERVER__HOST=host,
        BRIDGE_AUTH__ALLOW_UNAUTHENTICATED="true",
    )  # fmt: skip
    process = harness.start_process(host, tmp_path, ["serve"], env)
    assert process.wait(harness.START_DEADLINE_S) != 0
    [line] = lines(process)
    error = as_json(line)
    assert error["event"] == "bridge.cannot_start"
    assert f"cannot listen on {host}:" in error["detail"]
    assert "choose another host with server.host (BRIDGE_SERVER__HOST)" in error["detail"]


# The bridge's own lines and a library's, written at once from two threads.
TWO_THREADS = """
import logging, threading, structlog
from service import logs
from service.config import LogSettings
logs.configure(LogSettings(level="info", format="json"))
structlog.contextvars.bind_contextvars(request_id="req_1")
def library():
    structlog.contextvars.bind_contextvars(request_id="req_1")  # a thread has its own context
    for n in range(20000):
        logging.getLogger("library").warning("line %d", n)
thread = threading.Thread(target=library)
thread.start()
for n in range(20000):
    structlog.get_logger().info("bridge.line", n=n)
thread.join()
"""


def test_lines_written_from_two_threads_stay_whole_and_carry_the_request_id() -> None:
    """Every line is whole JSON even while a library logs from another thread (each line one
    write), and a library's line carries the request's id as the bridge's do."""
    written = subprocess.run(
        [sys.executable, "-c", TWO_THREADS], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    parsed = [as_json(line) for line in written]
    assert len(parsed) == 40000
    assert {line["request_id"] for line in parsed} == {"req_1"}
