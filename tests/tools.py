"""Outside programs the tests run (node, npm, promtool): a test needing one that is missing is
skipped with the reason, except in CI (CI=true), where it must run and so fails."""

from __future__ import annotations

import os
import shutil

import pytest


def require(tool: str, why: str) -> str:
    """The path of `tool`; the test is skipped (failed in CI) without it."""
    found = shutil.which(tool)
    if found is None:
        reason = f"{tool} is not installed: {why}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; it must run in CI", pytrace=False)
        pytest.skip(reason)
    return found
