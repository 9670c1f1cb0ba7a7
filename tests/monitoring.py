"""What the monitoring tests share: promtool."""

from __future__ import annotations

import os
import shutil

import pytest


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
