"""The container image (Dockerfile), checked without a Docker engine: its HEALTHCHECK command
run against a real bridge started with the image's environment and bridge.toml."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib import error, request

import pytest

from service import config
from tests.loopback import serving_bridge

ROOT = Path(__file__).resolve().parents[2]


def _final_stage() -> list[tuple[str, str]]:
    """The last stage's instructions as (keyword, arguments), comments dropped and continuation
    lines joined, as Docker reads them."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    instructions: list[tuple[str, str]] = []
    for line in text.replace("\\\n", " ").splitlines():
        if line.strip():
            keyword, arguments = line.strip().split(None, 1)
            instructions.append((keyword.upper(), arguments))
    start = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[start + 1 :]


def _image_environment() -> dict[str, str]:
    """The final stage's ENV, PATH left out (the test's own Python runs the bridge)."""
    environ: dict[str, str] = {}
    for keyword, arguments in _final_stage():
        if keyword == "ENV":
            for pair in shlex.split(arguments):
                name, value = pair.split("=", 1)
                environ[name] = value
    environ.pop("PATH", None)
    return environ


def _healthcheck() -> list[str]:
    (arguments,) = [arguments for keyword, arguments in _final_stage() if keyword == "HEALTHCHECK"]
    command: list[str] = json.loads(re.split(r"\s+CMD\s+", arguments, maxsplit=1)[1])
    assert command[:2] == ["python", "-c"]
    return command


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _check(environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The HEALTHCHECK command, run as Docker runs it: in the container's environment."""
    return subprocess.run(
        [sys.executable, *_healthcheck()[1:]],
        env=environ,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


def test_the_healthcheck_falls_back_to_the_port_of_the_images_bridge_toml() -> None:
    """With neither port variable set, the check asks the API port of the bridge.toml the image
    copies (8080: a port a test cannot count on binding)."""
    fallback = re.search(r"or '(\d+)'", _healthcheck()[2])
    assert fallback is not None
    image_config = {"BRIDGE_CONFIG": str(ROOT / "config" / "bridge.toml")}
    assert config.load(environ=image_config).server.port == int(fallback.group(1))
    assert ("COPY", "config/bridge.toml /etc/webhook-bridge/bridge.toml") in _final_stage()


@pytest.mark.parametrize("health_port", [False, True])
def test_the_healthcheck_passes_once_the_bridge_serves_livez(
    health_port: bool, tmp_path: Path
) -> None:
    """The image's HEALTHCHECK (python, as the image has no curl) fails while nothing listens and
    passes once a bridge started with the image's environment answers /livez: on the API port,
    or on BRIDGE_SERVER__HEALTH_PORT when set, even while the API port is full."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    environ.update(_image_environment())
    assert environ["BRIDGE_CONFIG"] == "/etc/webhook-bridge/bridge.toml"
    api = _free_port()
    environ.update(
        BRIDGE_CONFIG=str(ROOT / "config" / "bridge.toml"),
        BRIDGE_SERVER__HOST="127.0.0.1",  # the image's 0.0.0.0 would need API tokens
        BRIDGE_SERVER__PORT=str(api),
        BRIDGE_STORE__URL=f"sqlite:///{tmp_path}/bridge.db",
    )
    if health_port:
        environ.update(
            BRIDGE_SERVER__HEALTH_PORT=str(_free_port()),
            BRIDGE_SERVER__HEALTH_HOST="127.0.0.1",
            BRIDGE_SERVER__MAX_CONNECTIONS="2",
        )
    assert _check(environ).returncode != 0
    log = tmp_path / "bridge.log"
    with serving_bridge(environ, log) as process:
        deadline = time.monotonic() + 30
        while (check := _check(environ)).returncode != 0:
            assert process.poll() is None, f"the bridge exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"never healthy: {check.stderr}\n{log.read_text()}"
            time.sleep(0.2)
        if health_port:
            # One of the API port's two connections taken: /livez there answers 503.
            with socket.create_connection(("127.0.0.1", api)):
                opener = request.build_opener(request.ProxyHandler({}))
                with pytest.raises(error.HTTPError, match="503"):
                    opener.open(f"http://127.0.0.1:{api}/livez", timeout=5)
                assert _check(environ).returncode == 0
