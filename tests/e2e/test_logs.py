"""What a `serve` process writes, seen by a log pipeline: under JSON logging every line is one
JSON object, uvicorn's included."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from tests.e2e import harness
from tests.e2e.harness import StartBridge, free_port, wait_until

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
