"""What the monitoring tests share: promtool, the Grafana dashboard's queries, the alert rules of
docs/deploy.md, and the metric and label names a PromQL expression reads."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import promql_parser
import yaml

from tests.tools import require

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "helm" / "webhook-bridge" / "dashboards" / "webhook-bridge.json"
DEPLOY_GUIDE = ROOT / "docs" / "deploy.md"
# Labels Prometheus adds to every series of a target, whatever the bridge exposes.
TARGET_LABELS = frozenset({"job", "instance"})
# Grafana's interval variables, replaced by a duration before a query reaches Prometheus.
_GRAFANA_INTERVAL = re.compile(r"\$__(rate_interval|interval|range)\b")
_FENCED_YAML = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)


def promtool() -> str:
    """The path of Prometheus's promtool; the test is skipped without it, except under CI=true
    (.ci/run unpacks it from Debian's `prometheus` package when it is missing)."""
    return require("promtool", "Debian: apt-get install prometheus")


def dashboard() -> dict[str, Any]:
    model: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return model


def panels(model: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The dashboard's panels that show data (rows left out)."""
    for panel in model["panels"]:
        if panel["type"] != "row":
            yield panel


def dashboard_queries(model: dict[str, Any]) -> list[str]:
    """Every panel query, with Grafana's interval variables replaced as Grafana does."""
    return [
        _GRAFANA_INTERVAL.sub("1m", target["expr"])
        for panel in panels(model)
        for target in panel["targets"]
    ]


def alert_rules() -> dict[str, Any]:
    """The Prometheus rule file of docs/deploy.md (its one YAML block that starts `groups:`)."""
    blocks = _FENCED_YAML.findall(DEPLOY_GUIDE.read_text())
    (block,) = [block for block in blocks if block.startswith("groups:")]
    rules: dict[str, Any] = yaml.safe_load(block)
    return rules


def alert_queries() -> list[str]:
    return [rule["expr"] for group in alert_rules()["groups"] for rule in group["rules"]]


def _nodes(expression: str) -> list[promql_parser.Expr]:
    """The nodes of `expression`'s syntax tree (it must parse as PromQL)."""
    found: list[promql_parser.Expr] = []
    promql_parser.walk(promql_parser.parse(expression), found.append)
    return found


def selectors(expression: str) -> list[promql_parser.VectorSelector]:
    return [node for node in _nodes(expression) if isinstance(node, promql_parser.VectorSelector)]


def matchers(selector: promql_parser.VectorSelector) -> list[promql_parser.Matcher]:
    """Every label matcher of `selector` but the metric name, `or` alternatives included."""
    every = [*selector.matchers.matchers, *itertools.chain(*selector.matchers.or_matchers)]
    return [matcher for matcher in every if matcher.name != "__name__"]


@dataclass
class Reads:
    """The metric names an expression selects and the label names it matches or groups by."""

    metrics: set[str] = field(default_factory=set)
    labels: set[str] = field(default_factory=set)


def reads(expression: str) -> Reads:
    found = Reads()
    for node in _nodes(expression):
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"a selector without a metric name in {expression}"
            found.metrics.add(node.name)
            found.labels.update(matcher.name for matcher in matchers(node))
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            found.labels.update(node.modifier.labels)
    return found
