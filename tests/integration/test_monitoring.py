"""The monitoring that docs/deploy.md suggests and the chart ships: the alert rules checked and
run by promtool (with kube-state-metrics series for each deployment shape), and the Grafana
dashboard as a model Grafana loads. tests/e2e/test_metrics.py checks both against a real
bridge's /metrics."""

from __future__ import annotations

import itertools
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from promql_parser import MatchOp

from tests.monitoring import (
    alert_rules,
    dashboard,
    dashboard_queries,
    matchers,
    panels,
    promtool,
    selectors,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_COLUMNS = 24
# Variables Grafana defines itself.
GRAFANA_VARIABLES = frozenset({"__rate_interval", "__interval", "__range"})
_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


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


def test_the_dashboard_is_a_grafana_dashboard_model() -> None:
    """A stable uid and title, a schema version, and a Prometheus data source variable that
    every panel and every query uses (no data source of the exporting Grafana baked in)."""
    model = dashboard()
    assert model["uid"] == "webhook-bridge"
    assert model["title"] == "Webhook Bridge"
    assert model["id"] is None  # Grafana assigns its own database id on import
    assert model["schemaVersion"] == 39
    variables = {variable["name"]: variable for variable in model["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == DATASOURCE
    shown = list(panels(model))
    assert shown
    for panel in shown:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        assert {target["datasource"]["uid"] for target in panel["targets"]} == {"${datasource}"}
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), panel["title"]
        assert panel["title"]
        assert panel["description"], panel["title"]


def test_every_dashboard_query_uses_defined_variables_and_filters_on_job_and_instance() -> None:
    """A query names only variables the dashboard or Grafana defines, and every selector is
    narrowed by the job and instance variables, so those variables do what they say."""
    model = dashboard()
    defined = {variable["name"] for variable in model["templating"]["list"]}
    for panel in panels(model):
        for target in panel["targets"]:
            named = {a or b for a, b in _VARIABLE.findall(target["expr"])}
            assert named <= defined | GRAFANA_VARIABLES, target["expr"]
    for query in dashboard_queries(model):
        found = selectors(query)
        assert found, query
        for selector in found:
            narrowed = {(m.name, m.value) for m in matchers(selector) if m.op == MatchOp.Re}
            assert {("job", "$job"), ("instance", "$instance")} <= narrowed, query


def test_dashboard_panels_have_unique_ids_and_fit_the_grid_without_overlapping() -> None:
    """Grafana lays panels out on a 24-column grid by gridPos; ids must be unique, and panels
    that overlap would be pushed around on load."""
    model = dashboard()
    ids = [panel["id"] for panel in model["panels"]]
    assert len(set(ids)) == len(ids)
    cells: list[set[tuple[int, int]]] = []
    for panel in model["panels"]:
        grid = panel["gridPos"]
        assert min(grid["w"], grid["h"]) > 0, panel["title"]
        assert min(grid["x"], grid["y"]) >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= GRID_COLUMNS, panel["title"]
        cells.append(
            set(
                itertools.product(
                    range(grid["x"], grid["x"] + grid["w"]), range(grid["y"], grid["y"] + grid["h"])
                )
            )
        )
    for (a, first), (b, second) in itertools.combinations(enumerate(cells), 2):
        assert not first & second, (model["panels"][a]["title"], model["panels"][b]["title"])
