"""n8n's Code node, as its JS task runner runs it, for the workflows' tests: `run_code` hands a
node's JavaScript and its input to `n8n_code_node.js` under node, and the checks below feed it
the webhooks the bridge really sent."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

from tests.e2e.harness import Hook

CODE_RUNNER = Path(__file__).with_name("n8n_code_node.js")
TOLERANCE_S = 300  # how far from a webhook's timestamp the workflows accept it


def run_code(
    node_path: str,
    code: str,
    item: dict[str, Any],
    nodes: dict[str, dict[str, Any]] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """What the Code node `code` returns for the input `item` ({"result": items}), or the error
    it fails with ({"error": message}); `nodes` are earlier nodes' outputs, `now` the clock."""
    given = {
        "code": code,
        "items": [item],
        "nodes": {name: [{"json": data}] for name, data in (nodes or {}).items()},
        "now": now,
    }
    done = subprocess.run(
        [node_path, str(CODE_RUNNER)],
        input=json.dumps(given),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def webhook_item(hook: Hook, body: bytes | None = None) -> dict[str, Any]:
    """The Webhook (or Wait) node's output for `hook` with Raw Body on: headers, the parsed
    body, and the raw body as binary `data`."""
    raw = hook.body.encode() if body is None else body
    return {
        "json": {"headers": dict(hook.headers), "params": {}, "query": {}, "body": hook.json()},
        "binary": {
            "data": {"data": base64.b64encode(raw).decode(), "mimeType": "application/json"}
        },
    }


def assert_verifies_only_what_the_bridge_signed(
    node_path: str, code: str, hook: Hook, nodes: dict[str, dict[str, Any]] | None = None
) -> None:
    """The code passes `hook` on as the bridge sent it (its event in `body`), and refuses it
    altered by one byte, stale or early past the tolerance, or without its signature."""
    stamp = int(hook.headers["webhook-timestamp"])
    accepted = run_code(node_path, code, webhook_item(hook), nodes, now=stamp + 5)
    assert "error" not in accepted, accepted
    [event] = accepted["result"]
    assert event["json"]["body"] == hook.json()
    assert event["json"]["headers"]["webhook-id"] == hook.webhook_id
    assert run_code(node_path, code, webhook_item(hook), nodes, now=stamp + TOLERANCE_S)["result"]

    tampered = hook.body.replace('"succeeded"', '"succeedef"', 1).encode()
    assert tampered != hook.body.encode()
    refused = run_code(node_path, code, webhook_item(hook, tampered), nodes, now=stamp)
    assert "webhook-signature does not match" in refused["error"]
    for late in (stamp + TOLERANCE_S + 1, stamp - TOLERANCE_S - 1):
        refused = run_code(node_path, code, webhook_item(hook), nodes, now=late)
        assert "more than 5 minutes from now" in refused["error"], late
    unsigned = webhook_item(hook)
    del unsigned["json"]["headers"]["webhook-signature"]
    refused = run_code(node_path, code, unsigned, nodes, now=stamp)
    assert "not signed" in refused["error"]
