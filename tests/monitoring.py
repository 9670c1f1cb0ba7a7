"""What the monitoring tests share: promtool and the alert rules of docs/deploy.md."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY_GUIDE = ROOT / "docs" / "deploy.md"
_FENCED_YAML = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)


def promtool() -> str:
    """The path of Prometheus's promtool; the test is skipped without it, except under CI=true
    (.ci/run unpacks it from Debian's `prometheus` package when it is missing)."""
    found = shutil.which("promtool")
    if found is None:
        reason = "promtool is not installed (Debian: apt-get install prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; the Prometheus checks must run in CI", pytrace=False)
        pytest.skip(reason)
    return found


def alert_rules() -> dict[str, Any]:
    """The Prometheus rule file of docs/deploy.md (its one YAML block that starts `groups:`)."""
    blocks = _FENCED_YAML.findall(DEPLOY_GUIDE.read_text())
    (block,) = [block for block in blocks if block.startswith("groups:")]
    rules: dict[str, Any] = yaml.safe_load(block)
    return rules
