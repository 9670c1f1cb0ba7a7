"""The Zapier app (integrations/zapier) passes its own tests against a real bridge.

The app's tests (`npm test`: node's test runner and zapier-platform-core's app tester) do the
real calls; this test starts what they call: the simulator, a bridge with an API token that may
call back to loopback, two shared signing secrets (a rotation under way) and a second upstream
(the simulator under another name, which the Generate Image step names), and the receiver
standing in for Zapier's hook URLs. `npm ci` runs first
when node_modules is missing or older than package-lock.json. Without node or npm the test is
skipped, except in CI, where it fails.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from service.signing import new_secret
from tests import npm
from tests.e2e.harness import API_KEY, ROOT, Receiver, StartBridge, Upstream
from tests.tools import require

APP = ROOT / "integrations" / "zapier"
TOKEN = "wbt_zapier_app_test_token"
TENANT = "zapier"
WHY = "the Zapier app's tests need Node.js 18+ and npm"
TEST_TIMEOUT_S = 240
# Steers the simulator's job (passed unchanged in the generate call's `input`): done in a second.
GENERATE_INPUT = {"sim": {"queue_positions": 0, "processing_s": 0.3}}
# Shared signing secrets mid-rotation, current first: the bridge signs with both.
SIGNING_SECRETS = [new_secret(), new_secret()]
# The upstream the app's Generate Image step names (the simulator, under a name of its own).
UPSTREAM = "studio"


def _run(argv: list[str], extra: dict[str, str]) -> str:
    """Run `argv` in the app's directory; its output, or a failure showing it unless it exits 0."""
    done = npm.run(argv, APP, TEST_TIMEOUT_S, extra)
    if done.returncode != 0:
        pytest.fail(
            f"{' '.join(argv)} exited {done.returncode}\n--- stdout ---\n{done.stdout}"
            f"\n--- stderr ---\n{done.stderr}",
            pytrace=False,
        )
    return done.stdout


@pytest.mark.e2e
def test_zapier_app_tests_pass_against_a_real_bridge(
    start_bridge: StartBridge, upstream: Upstream, receiver: Receiver
) -> None:
    """Auth and its label, subscribe, generate on a named upstream, hook verification,
    performList, unsubscribe and a rotation's deliveries all work for real."""
    npm.install(APP, WHY)
    retiring = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    current, old = SIGNING_SECRETS
    bridge = start_bridge(
        BRIDGE_AUTH__TOKENS=json.dumps([{"name": TENANT, "token": TOKEN}]),
        BRIDGE_DELIVERY__SIGNING_SECRETS=json.dumps(
            [{"secret": current}, {"secret": old, "expires_at": retiring}]
        ),
        **{
            f"BRIDGE_UPSTREAMS__{UPSTREAM.upper()}__BASE_URL": upstream.url,
            f"BRIDGE_UPSTREAMS__{UPSTREAM.upper()}__API_KEY": API_KEY,
        },
    )
    output = _run(
        [require("npm", WHY), "test"],
        {
            "BRIDGE_URL": bridge.url,
            "BRIDGE_TOKEN": TOKEN,
            "BRIDGE_TENANT": TENANT,
            "RECEIVER_URL": receiver.url,
            "RECEIVER_RECORD": str(receiver.record),
            "GENERATE_INPUT": json.dumps(GENERATE_INPUT),
            "SIGNING_SECRETS": json.dumps(SIGNING_SECRETS),
            "UPSTREAM": UPSTREAM,
        },
    )
    # Every test ran (TAP, as package.json asks): none skipped for a missing setting.
    assert "# SKIP" not in output, output
    assert re.search(r"^# pass [1-9]", output, re.MULTILINE), output


def test_node_modules_is_never_committed() -> None:
    """The app's dependencies are installed from the lock file, not kept in the repository."""
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "node_modules/" in ignored
    assert (APP / "package-lock.json").exists()
    lock = json.loads((APP / "package-lock.json").read_text())
    pinned = json.loads((APP / "package.json").read_text())["dependencies"]
    assert lock["packages"][""]["dependencies"] == pinned
    assert all(version[0].isdigit() for version in pinned.values()), pinned  # exact versions
