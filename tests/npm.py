"""Node tools the tests run from their own npm project (a package.json and its lock): installed
with `npm ci` when node_modules is missing or older than the lock. Without node or npm a test
needing them is skipped, except in CI (CI=true), where it fails (`tests.tools.require`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.tools import require

INSTALL_TIMEOUT_S = 300


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the bridge's settings, npm kept quiet, and `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update(npm_config_update_notifier="false", npm_config_fund="false", **(extra or {}))
    return env


def run(
    argv: list[str], directory: Path, timeout: float, extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `argv` in `directory` with `extra` in its environment; its outcome, whatever its
    exit status."""
    return subprocess.run(
        argv,
        cwd=directory,
        env=environment(extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def install(directory: Path, why: str) -> None:
    """`npm ci` in `directory` unless node_modules is there and no older than the lock (npm
    writes the marker). Install scripts are not run: the tools used need none."""
    require("node", why)
    npm = require("npm", why)
    marker = directory / "node_modules" / ".package-lock.json"
    if (
        marker.exists()
        and marker.stat().st_mtime >= (directory / "package-lock.json").stat().st_mtime
    ):
        return
    done = run([npm, "ci", "--no-audit", "--ignore-scripts"], directory, INSTALL_TIMEOUT_S)
    if done.returncode != 0:
        pytest.fail(
            f"npm ci in {directory} exited {done.returncode}\n{done.stdout}\n{done.stderr}",
            pytrace=False,
        )
