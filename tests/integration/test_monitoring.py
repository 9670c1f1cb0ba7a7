"""The alert rules that docs/deploy.md suggests, checked and run by promtool with
kube-state-metrics series for each deployment shape. tests/e2e/test_metrics.py checks the
metrics they read against a real bridge's /metrics."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.monitoring import alert_rules, promtool


def _promtool(*argv: str) -> str:
    done = subprocess.run(
        [promtool(), *argv], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"promtool {' '.join(argv)}:\n{done.stdout}{done.stderr}"
    return done.stdout


def _rule_file(tmp_path: Path) -> Path:
    path = tmp_path / "webhook-bridge.rules.yaml"
    path.write_text(yaml.safe_dump(alert_rules()))
    return path


def test_the_alert_rules_pass_promtool(tmp_path: Path) -> None:
    """The guide's rule file loads in Prometheus as it is: promtool finds nothing."""
    assert "SUCCESS: 7 rules found" in _promtool("check", "rules", str(_rule_file(tmp_path)))


def _ready(kind: str, pod: str, container: str, values: str) -> dict[str, str]:
    """A kube-state-metrics readiness series: kind "container" or "init_container"."""
    labels = f'namespace="ns", pod="{pod}", container="{container}"'
    return {"series": f"kube_pod_{kind}_status_ready{{{labels}}}", "values": values}


def _not_ready_alert(pod: str) -> dict[str, Any]:
    return {"exp_labels": {"namespace": "ns", "pod": pod, "container": "webhook-bridge"}}


def test_the_not_ready_alert_fires_for_each_deployment_shape(tmp_path: Path) -> None:
    """kube-state-metrics reports the bridge of mode deployment and the legacy sidecar as a
    container and the native sidecar as an init container: after 5 minutes not ready the alert
    fires for each, and never for a ready bridge, another container, or a short blip."""
    rules = _rule_file(tmp_path)
    series = [
        _ready("container", "deployment-0", "webhook-bridge", "0x10"),
        _ready("container", "legacy-0", "webhook-bridge", "0x10"),
        _ready("init_container", "native-0", "webhook-bridge", "0x10"),
        # A ready native sidecar, the application beside it, a finished plain init container.
        _ready("init_container", "native-1", "webhook-bridge", "1x10"),
        _ready("container", "native-0", "app", "0x10"),
        _ready("init_container", "native-0", "migrate", "0x10"),
        # Not ready for 3 minutes, then ready.
        _ready("container", "deployment-1", "webhook-bridge", "0 0 0 1x8"),
    ]
    firing = [_not_ready_alert(pod) for pod in ("deployment-0", "legacy-0", "native-0")]
    tests = {
        "rule_files": [rules.name],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {"eval_time": "4m", "alertname": "WebhookBridgeNotReady", "exp_alerts": []},
                    {"eval_time": "6m", "alertname": "WebhookBridgeNotReady", "exp_alerts": firing},
                ],
            }
        ],
    }
    test_file = tmp_path / "tests.yaml"
    test_file.write_text(yaml.safe_dump(tests))
    assert "SUCCESS" in _promtool("test", "rules", str(test_file))
