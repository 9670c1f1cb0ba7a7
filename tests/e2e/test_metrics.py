"""Prometheus metrics of a real run, read by the client library's own parsers and promtool;
the guide's list of them, the dashboard's queries and the alerts' checked against them."""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Iterable

import httpx
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families as text_families

from tests.e2e.harness import (
    Bridge,
    Receiver,
    StartBridge,
    Upstream,
    free_port,
    unique,
    wait_until,
)
from tests.monitoring import (
    DEPLOY_GUIDE,
    TARGET_LABELS,
    alert_queries,
    dashboard,
    dashboard_queries,
    promtool,
    reads,
)

# The Accept header Prometheus 2.x sends with each scrape.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
TEXT = "text/plain; version=0.0.4; charset=utf-8"


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in the Prometheus text format (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))  # as exposed
    pattern = rf"^{re.escape(name)}{re.escape('{' + wanted + '}') if wanted else ''} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.mark.e2e
def test_metrics_follow_a_job_from_poll_to_delivery(
    start_bridge: StartBridge, upstream: Upstream, receiver: Receiver
) -> None:
    """Polls, lateness, deliveries and notification latency are counted; no job id appears."""
    bridge = start_bridge()
    job = upstream.create_job(queue_positions=1, seconds_per_position=0.3, processing_s=0.3)
    failing = upstream.create_job(faults=[{"kind": "5xx", "count": 1}], processing_s=0.2)
    name = unique("metrics")
    first = bridge.register(job_id=job, callback_url=receiver.callback(name, respond="500,200"))
    second = bridge.register(job_id=failing, callback_url=receiver.callback(unique("metrics")))
    bridge.wait_all([first["id"], second["id"]], "delivered")

    response = bridge.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    polls = "bridge_upstream_requests_total"
    assert sample(text, polls, upstream="default", outcome="terminal") == 2
    assert sample(text, polls, upstream="default", outcome="transient") >= 1
    assert sample(text, polls, upstream="default", outcome="progress") >= 1
    assert sample(text, "bridge_upstream_request_duration_seconds_count", upstream="default") >= 4
    assert sample(text, "bridge_poll_lateness_seconds_count", upstream="default") >= 4
    assert sample(text, "bridge_delivery_attempts_total", outcome="retry") == 1
    assert sample(text, "bridge_delivery_attempts_total", outcome="succeeded") == 2
    assert sample(text, "bridge_notification_latency_seconds_count") == 2
    assert sample(text, "bridge_held_watches") == 0
    for secret_or_id in (job, failing, first["id"], first["secret"]):
        assert secret_or_id not in text

    def counted() -> bool:
        gauges = bridge.client.get("/metrics").text
        delivered = sample(gauges, "bridge_watches", status="delivered") == 2
        return delivered and "\nbridge_delivery_backlog 0.0" in gauges

    wait_until(counted, 30.0, what="the watches gauge to count both delivered watches")


@pytest.mark.e2e
def test_traceparent_reaches_the_webhook(
    bridge: Bridge, upstream: Upstream, receiver: Receiver
) -> None:
    """A traceparent sent with the registration is sent with the webhook request."""
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    job = upstream.create_job(queue_positions=1, seconds_per_position=0.2, processing_s=0.2)
    name = unique("trace")
    response = bridge.client.post(
        "/v1/watches",
        json={"job_id": job, "callback_url": receiver.callback(name)},
        headers={"traceparent": trace},
    )
    assert response.status_code == 201, response.text
    [hook] = receiver.wait_for(name)
    assert hook.headers["traceparent"] == trace


@pytest.mark.e2e
def test_health_port_serves_probes_and_reports_draining(
    start_bridge: StartBridge, upstream: Upstream, receiver: Receiver
) -> None:
    """With server.health_port, probes and metrics answer there; SIGTERM turns readyz to 503."""
    port = free_port()
    bridge = start_bridge(
        BRIDGE_SERVER__HEALTH_PORT=str(port),
        BRIDGE_SERVER__HEALTH_HOST="127.0.0.1",
        BRIDGE_SERVER__SHUTDOWN_GRACE_S="4",
    )
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as health:
        assert health.get("/livez").json() == {"status": "ok"}
        assert health.get("/readyz").status_code == 200
        assert "bridge_upstream_requests_total" in health.get("/metrics").text
        assert health.get("/v1/watches").status_code == 404  # the API is not on this port

        # A delivery to a receiver that takes its time keeps the bridge draining a while.
        job = upstream.create_job(queue_positions=1, seconds_per_position=0.1, processing_s=0.1)
        slow = receiver.callback(unique("slow"), delay_s=3)
        watch = bridge.register(job_id=job, callback_url=slow)
        wait_until(
            lambda: bridge.watch(watch["id"])["status"] == "delivering", 30.0, what="delivering"
        )
        bridge.process.popen.send_signal(signal.SIGTERM)

        def draining() -> bool:
            try:
                return health.get("/readyz").status_code == 503
            except httpx.TransportError:
                return False

        wait_until(draining, 10.0, interval=0.05, what="readyz to answer 503 while draining")
        assert "draining" in health.get("/readyz").json()["reason"]
    assert bridge.process.wait(20.0) == 0


def _by_name(families: Iterable[Metric]) -> dict[str, Metric]:
    return {family.name: family for family in families}


@pytest.mark.e2e
def test_metrics_speak_openmetrics_when_asked_and_have_no_created_series(bridge: Bridge) -> None:
    """Without Accept (or asking for text) /metrics is the text format; asked for OpenMetrics,
    as Prometheus asks, it is OpenMetrics: each parses with the client library's parser of that
    format, with the same families, and neither has a `_created` series."""
    answers = {
        accept: bridge.client.get("/metrics", headers={"Accept": accept} if accept else {})
        for accept in ("", "text/plain", "application/openmetrics-text", PROMETHEUS_ACCEPT)
    }
    for accept, response in answers.items():
        assert response.status_code == 200
        assert response.headers["vary"] == "Accept"
        expected = OPENMETRICS if "openmetrics" in accept else TEXT
        assert response.headers["content-type"].startswith(expected), accept
    text = _by_name(text_families(answers[""].text))
    openmetrics_text = answers[PROMETHEUS_ACCEPT].text
    openmetrics = _by_name(openmetrics_families(openmetrics_text))  # type: ignore[no-untyped-call]
    assert openmetrics_text.endswith("# EOF\n")
    assert {(f.name, f.type) for f in text.values()} == {
        (f.name, f.type) for f in openmetrics.values()
    }
    assert "bridge_upstream_requests" in text
    for families in (text, openmetrics):
        names = {sample.name for family in families.values() for sample in family.samples}
        assert not {name for name in names if name.endswith("_created")}
    assert "_created" not in answers[""].text


@pytest.mark.e2e
def test_promtool_finds_nothing_in_the_metrics(bridge: Bridge) -> None:
    """`promtool check metrics` (Prometheus's own linter of names, units and help) passes the
    text format quietly."""
    exposed = bridge.client.get("/metrics").text
    done = subprocess.run(
        [promtool(), "check", "metrics"],
        input=exposed,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def _exposed(bridge: Bridge, upstream: Upstream, receiver: Receiver) -> dict[str, Metric]:
    """The bridge's families once each has samples (bridge_watches appears with a watch)."""
    job = upstream.create_job(queue_positions=0, processing_s=0.1)
    bridge.register(job_id=job, callback_url=receiver.callback(unique("exposed")))

    def every_family_sampled() -> dict[str, Metric] | None:
        families = _by_name(text_families(bridge.client.get("/metrics").text))
        return families if all(family.samples for family in families.values()) else None

    return wait_until(every_family_sampled, 30.0, interval=0.5, what="bridge_watches samples")


@pytest.mark.e2e
def test_the_guide_lists_every_metric_with_its_type_and_labels(
    bridge: Bridge, upstream: Upstream, receiver: Receiver
) -> None:
    """docs/deploy.md's table of metrics names exactly what a bridge exposes: each series (a
    counter by its `_total` name), its type and its labels."""
    documented = {
        name: (kind, set(filter(None, (labels or "").split(","))))
        for name, labels, kind in re.findall(
            r"^\| `(bridge_\w+)(?:\{([\w,]+)\})?` \| (\w+) \|", DEPLOY_GUIDE.read_text(), re.M
        )
    }
    exposed = {}
    for family in _exposed(bridge, upstream, receiver).values():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        keys = set().union(*(sample.labels for sample in family.samples)) - {"le"}
        exposed[name] = (family.type, keys)
    assert documented == exposed


@pytest.mark.e2e
def test_dashboard_and_alert_queries_read_what_the_bridge_exposes(
    bridge: Bridge, upstream: Upstream, receiver: Receiver
) -> None:
    """Each metric a dashboard or alert query selects is a series of a real bridge (those of
    kube-state-metrics aside), each label it matches or groups by is one of that series or a
    target label, and every family the bridge exposes is on the dashboard."""
    families = _exposed(bridge, upstream, receiver)
    labels: dict[str, set[str]] = {}
    for family in families.values():
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    dashboard_reads = [reads(query) for query in dashboard_queries(dashboard())]
    alert_reads = [reads(query) for query in alert_queries()]
    for read in [*dashboard_reads, *alert_reads]:
        if any(name.startswith("kube_") for name in read.metrics):
            continue  # kube-state-metrics' series, not the bridge's
        assert read.metrics <= set(labels), read.metrics - set(labels)
        known = TARGET_LABELS.union(*(labels[name] for name in read.metrics))
        assert read.labels <= known, (read, known)
    shown = set().union(*(read.metrics for read in dashboard_reads))
    for family in families.values():
        assert {sample.name for sample in family.samples} & shown, f"{family.name} not shown"
