"""The Helm chart (helm/webhook-bridge), rendered offline by Helm's Go SDK through the same
helm/helmtool.py that helm/check.sh uses: the rules it enforces, the sidecar templates, the
secrets, the security context, and that the bridge accepts what the chart renders (its
bridge.toml and environment are loaded by `service.config`, and the sidecar's exec probes are
run against a real bridge started with them).

helm/check.sh checks the examples' schemas and the manifests' Kubernetes schemas; this file
checks behaviour.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import helm_python
import pydantic
import pytest
import yaml
from kubernetes_validate import utils as kubernetes_validate

from service import config, profiles, sender
from service.errors import ConfigError
from service.profile import Profile
from tests.loopback import serving_bridge

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "webhook-bridge"
APP = ROOT / "helm" / "examples" / "sidecar-app"
EXAMPLES = ROOT / "helm" / "examples"

_spec = importlib.util.spec_from_file_location("helmtool", ROOT / "helm" / "helmtool.py")
assert _spec is not None
assert _spec.loader is not None
helmtool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helmtool)

DIGEST = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
TOKENS = [{"name": "app", "sha256": DIGEST}]
SIGNING_SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
# Two named upstreams (config.upstreams): one on a built-in profile, one declaring its own.
FAL = {"base_url": "https://queue.example.com", "profile": "betterwaifu"}
STUDIO = {
    "base_url": "https://studio.example.com",
    "profile": {
        "status": {"path": "/v1/tasks/{job_id}", "headers": {"X-Api-Version": "2024-11-06"}},
        "auth": {"scheme": "header", "name": "X-Key"},
        "read": {"status": "state", "outputs": "output[]"},
        "statuses": {"DONE": "succeeded", "BAD": "failed", "THROTTLED": "queued"},
        "http": {"not_found": [404, 410]},
    },
}
# Values that render in deployment mode: API tokens are required there.
AUTHENTICATED: dict[str, Any] = {"secret": {"authTokens": TOKENS}}
POSTGRES_URL = "postgresql://bridge@db.example:5432/bridge"
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "privileged": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def render(chart: Path = CHART, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The chart's manifests (NOTES.txt left out), parsed."""
    rendered = helmtool.render(chart, values, name="bridge", namespace="ns")
    return [doc for doc in yaml.safe_load_all(helmtool.manifests(rendered)) if doc]


def render_app(bridge: dict[str, Any]) -> list[dict[str, Any]]:
    """The example application chart, with `bridge` merged into its webhook-bridge values."""
    return render(APP, {"webhook-bridge": bridge})


def by_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [manifest for manifest in manifests if manifest["kind"] == kind]


def one(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (manifest,) = by_kind(manifests, kind)
    return manifest


def pod_spec(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(manifests, "Deployment")["spec"]["template"]["spec"]
    return spec


def bridge_container(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    spec = pod_spec(manifests)
    containers: list[dict[str, Any]] = [*spec.get("initContainers", []), *spec["containers"]]
    (container,) = [c for c in containers if c["name"] == "webhook-bridge"]
    return container


def example(name: str) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    return values


def with_values(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = helmtool.merge(base, extra)
    return merged


# The rules the chart enforces.


@pytest.mark.parametrize(
    ("values", "message"),
    [
        # Two replicas on the default store, SQLite.
        ({"replicaCount": 2}, "replicaCount is 2 but the store is SQLite"),
        # An autoscaler may add replicas: refused on SQLite too.
        ({"autoscaling": {"enabled": True}}, "autoscaling.enabled is true but the store is SQLite"),
        # An existing Secret that holds no store URL does not make the store PostgreSQL.
        (
            {"replicaCount": 3, "secret": {"existingSecret": "s"}},
            "replicaCount is 3 but the store is SQLite",
        ),
    ],
)
def test_more_than_one_replica_on_sqlite_is_refused(values: dict[str, Any], message: str) -> None:
    """Several replicas (or an autoscaler) on SQLite stop the render with a message naming the
    fix (a PostgreSQL URL)."""
    with pytest.raises(helm_python.HelmError, match=message) as caught:
        render(values=with_values(AUTHENTICATED, values))
    assert "set a PostgreSQL URL" in str(caught.value)


@pytest.mark.parametrize(
    "values",
    [
        # A passwordless URL in the values.
        {"store": {"url": POSTGRES_URL}},
        # A URL with a password in the created Secret.
        {"secret": {"storeUrl": "postgresql://bridge:pw@db:5432/bridge"}},
        # A URL in an existing Secret, declared by naming its key.
        {"secret": {"existingSecret": "s", "existingSecretKeys": {"storeUrl": "url"}}},
    ],
)
def test_a_postgresql_url_allows_replicas(values: dict[str, Any]) -> None:
    """With a PostgreSQL URL from any source, replicas run side by side with rolling updates
    and no claim is made."""
    manifests = render(values=with_values(AUTHENTICATED, {"replicaCount": 3, **values}))
    deployment = one(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert by_kind(manifests, "PersistentVolumeClaim") == []


def test_a_password_in_store_url_is_refused_by_the_schema() -> None:
    """store.url is not secret, so a URL with a password there fails schema validation."""
    with pytest.raises(helm_python.HelmValuesError, match="store/url"):
        render(values={"store": {"url": "postgresql://bridge:pw@db:5432/bridge"}})


def test_sqlite_runs_one_replica_on_a_claim_and_recreates() -> None:
    """The default store: one replica, its database on a PersistentVolumeClaim mounted at /data,
    and the old pod stopped before the new one opens the file."""
    manifests = render(values=AUTHENTICATED)
    deployment = one(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    claim = one(manifests, "PersistentVolumeClaim")
    volumes = {volume["name"]: volume for volume in pod_spec(manifests)["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    env = {e["name"]: e.get("value") for e in bridge_container(manifests)["env"]}
    assert env["BRIDGE_STORE__URL"] == "sqlite:////data/bridge.db"


def test_deployment_mode_without_tokens_is_refused() -> None:
    """The bridge refuses to serve 0.0.0.0 without tokens, so the chart refuses first and says
    how to add them (or opt out)."""
    with pytest.raises(helm_python.HelmError, match="without API tokens") as caught:
        render()
    assert "allow_unauthenticated" in str(caught.value)
    manifests = render(values={"config": {"auth": {"allow_unauthenticated": True}}})
    assert one(manifests, "Deployment")


def test_a_grace_period_shorter_than_the_bridge_shutdown_is_refused() -> None:
    """terminationGracePeriodSeconds must cover the preStop sleep, shutdown_grace_s and the 3 s
    the bridge takes to exit after it; by default it is computed with room to spare."""
    values = with_values(AUTHENTICATED, {"config": {"server": {"shutdown_grace_s": 30}}})
    assert pod_spec(render(values=values))["terminationGracePeriodSeconds"] == 5 + 30 + 3 + 7
    least = with_values(values, {"terminationGracePeriodSeconds": 38})
    assert pod_spec(render(values=least))["terminationGracePeriodSeconds"] == 38
    with pytest.raises(helm_python.HelmError, match="must be at least"):
        render(values=with_values(values, {"terminationGracePeriodSeconds": 37}))


def test_a_sender_process_lengthens_the_least_grace_period() -> None:
    """With delivery.sender "process" the bridge may wait for the sender process a while more
    after shutdown_grace_s (service.sender.GRACE_S): the least grace period covers it too."""
    values = with_values(
        AUTHENTICATED,
        {"config": {"server": {"shutdown_grace_s": 30}, "delivery": {"sender": "process"}}},
    )
    least = 5 + 30 + 3 + math.ceil(sender.GRACE_S)
    assert pod_spec(render(values=values))["terminationGracePeriodSeconds"] == least + 7
    enough = with_values(values, {"terminationGracePeriodSeconds": least})
    assert pod_spec(render(values=enough))["terminationGracePeriodSeconds"] == least
    with pytest.raises(helm_python.HelmError, match="must be at least"):
        render(values=with_values(values, {"terminationGracePeriodSeconds": least - 1}))


# Optional resources.

MONITORED = {"serviceMonitor": {"enabled": True}}


def test_a_service_monitor_with_tokens_needs_the_health_port() -> None:
    """With API tokens /metrics is on the health port only: a ServiceMonitor without one would
    scrape 404s, so the chart says what to set; behind a gateway (no tokens) the API port works."""
    base = with_values(
        AUTHENTICATED, {"store": {"url": POSTGRES_URL}, "metrics": MONITORED, "healthPort": None}
    )
    with pytest.raises(helm_python.HelmError, match="needs healthPort"):
        render(values=base)
    open_api = {
        "config": {"auth": {"allow_unauthenticated": True}},
        "metrics": MONITORED,
        "healthPort": None,
    }
    (endpoint,) = one(render(values=open_api), "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["port"] == "http"


@pytest.mark.parametrize(
    ("values", "kinds"),
    [
        # Off by default.
        ({}, set()),
        ({"metrics": MONITORED, "healthPort": 9091}, {"ServiceMonitor"}),
        ({"autoscaling": {"enabled": True}}, {"HorizontalPodAutoscaler"}),
        (
            {"autoscaling": {"enabled": True}, "metrics": MONITORED, "healthPort": 9091},
            {"HorizontalPodAutoscaler", "ServiceMonitor"},
        ),
    ],
)
def test_service_monitor_and_autoscaler_only_when_enabled(
    values: dict[str, Any], kinds: set[str]
) -> None:
    """ServiceMonitor and HorizontalPodAutoscaler appear exactly when their values enable them."""
    base = with_values(AUTHENTICATED, {"store": {"url": POSTGRES_URL}})
    manifests = render(values=with_values(base, values))
    optional = {m["kind"] for m in manifests} & {"ServiceMonitor", "HorizontalPodAutoscaler"}
    assert optional == kinds
    if "HorizontalPodAutoscaler" in kinds:
        assert "replicas" not in one(manifests, "Deployment")["spec"]
        target = one(manifests, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
        assert target["name"] == one(manifests, "Deployment")["metadata"]["name"]
    if "ServiceMonitor" in kinds:
        monitor = one(manifests, "ServiceMonitor")
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] == "health"  # with tokens, only the health port serves /metrics
        assert endpoint["path"] == "/metrics"
        selector = monitor["spec"]["selector"]["matchLabels"]
        assert selector == one(manifests, "Service")["spec"]["selector"]


# The Grafana dashboard.

DASHBOARD = CHART / "dashboards" / "webhook-bridge.json"
DASHBOARD_ON = {"metrics": {"grafanaDashboard": {"enabled": True}}}


def dashboard_maps(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in by_kind(manifests, "ConfigMap") if "webhook-bridge.json" in m["data"]]


@pytest.mark.parametrize("mode", ["deployment", "sidecar"])
def test_the_grafana_dashboard_is_a_config_map_only_when_enabled(mode: str) -> None:
    """Off by default; enabled, in either mode, a ConfigMap holds the chart's dashboard file as
    it is, labelled grafana_dashboard: "1" for Grafana's dashboard sidecar."""
    if mode == "deployment":
        assert dashboard_maps(render(values=AUTHENTICATED)) == []
        manifests = render(values=with_values(AUTHENTICATED, DASHBOARD_ON))
    else:
        assert dashboard_maps(render_app({})) == []
        manifests = render_app(DASHBOARD_ON)
    (config_map,) = dashboard_maps(manifests)
    assert config_map["metadata"]["name"] == "bridge-webhook-bridge-grafana-dashboard"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert "namespace" not in config_map["metadata"]  # the release's
    assert config_map["data"] == {"webhook-bridge.json": DASHBOARD.read_text().rstrip("\n")}
    assert kubernetes_validate.validate(config_map, "1.29.0", strict=True)


def test_the_grafana_dashboard_label_namespace_and_annotations_are_values() -> None:
    """The label Grafana's sidecar looks for, the namespace it watches and the folder
    annotation it reads are the values given."""
    dashboard = {
        "enabled": True,
        "label": "grafana.example.com/dashboard",
        "labelValue": "bridges",
        "namespace": "monitoring",
        "annotations": {"grafana_folder": "Webhooks"},
    }
    values = with_values(AUTHENTICATED, {"metrics": {"grafanaDashboard": dashboard}})
    (config_map,) = dashboard_maps(render(values=values))
    metadata = config_map["metadata"]
    assert metadata["labels"]["grafana.example.com/dashboard"] == "bridges"
    assert "grafana_dashboard" not in metadata["labels"]
    assert metadata["namespace"] == "monitoring"
    assert metadata["annotations"] == {"grafana_folder": "Webhooks"}


def test_a_grafana_dashboard_label_kubernetes_refuses_is_refused_by_the_schema() -> None:
    """A label key Kubernetes would refuse at install time fails the values schema first."""
    bad = {"metrics": {"grafanaDashboard": {"enabled": True, "label": "has space"}}}
    with pytest.raises(helm_python.HelmValuesError, match="grafanaDashboard/label"):
        render(values=with_values(AUTHENTICATED, bad))


# Secrets.


def test_secrets_come_from_the_existing_secret() -> None:
    """With existingSecret no Secret is made and every secret variable (a named upstream's API
    key too) reads the named keys of the existing one; a key named "" is not referenced."""
    values: dict[str, Any] = {
        "config": {"upstreams": {"studio": STUDIO, "fal": FAL}},
        "secret": {
            "existingSecret": "bridge-secrets",
            "existingSecretKeys": {
                "authTokens": "tokens", "encryptionKey": "", "storeUrl": "pg",
                "upstreamApiKeys": {"studio": "studio-key", "fal": ""},
            },
            # Ignored with existingSecret.
            "upstreamApiKey": "bw_ignored",
            "upstreamApiKeys": {"fal": "key_ignored"},
        },
    }  # fmt: skip
    manifests = render(values=values)
    assert by_kind(manifests, "Secret") == []
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in bridge_container(manifests)["env"]
        if "valueFrom" in e
    }
    assert refs == {
        "BRIDGE_UPSTREAM__API_KEY": {"name": "bridge-secrets", "key": "upstream-api-key"},
        "BRIDGE_AUTH__TOKENS": {"name": "bridge-secrets", "key": "tokens"},
        "BRIDGE_STORE__URL": {"name": "bridge-secrets", "key": "pg"},
        "BRIDGE_UPSTREAMS__STUDIO__API_KEY": {"name": "bridge-secrets", "key": "studio-key"},
    }


def test_secret_values_go_into_the_created_secret_only() -> None:
    """Secret values land base64-encoded in the chart's Secret (tokens as JSON, a named
    upstream's API key under a key of its own), are read from it by secretKeyRef, and appear
    nowhere else in the manifests."""
    values: dict[str, Any] = {
        "config": {"upstreams": {"studio": STUDIO, "fal": FAL}},
        "secret": {
            "authTokens": TOKENS,
            "upstreamApiKey": "bw_secret_value",
            "upstreamApiKeys": {"studio": "key_studio_secret", "fal": ""},
            "encryptionKey": "pVQm2cl3y3ZTOQ0xq0Ht8xKSodUSlsXaZBRiSPVzFjw=",
            "signingSecrets": [{"secret": SIGNING_SECRET}],
        },
    }
    manifests = render(values=values)
    data = _secret_data(manifests)
    assert data == {
        "auth-tokens": json.dumps(TOKENS, separators=(",", ":")),
        "upstream-api-key": "bw_secret_value",
        "upstream-api-key-studio": "key_studio_secret",
        "encryption-key": values["secret"]["encryptionKey"],
        "signing-secrets": json.dumps([{"secret": SIGNING_SECRET}], separators=(",", ":")),
    }
    refs = {
        e["valueFrom"]["secretKeyRef"]["key"]
        for e in bridge_container(manifests)["env"]
        if "valueFrom" in e
    }
    assert refs == set(data)
    others = yaml.safe_dump_all([m for m in manifests if m["kind"] != "Secret"])
    assert "bw_secret_value" not in others
    assert "key_studio_secret" not in others
    assert DIGEST not in others
    assert SIGNING_SECRET not in others


def test_signing_secrets_reach_the_bridge_in_rotation_order(tmp_path: Path) -> None:
    """The chart's signing secrets load as the bridge's delivery.signing_secrets, current
    first, the old one with its expiry."""
    old = "whsec_" + base64.b64encode(b"o" * 32).decode()
    values = with_values(
        AUTHENTICATED,
        {
            "secret": {
                "signingSecrets": [
                    {"secret": SIGNING_SECRET},
                    {"secret": old, "expires_at": "2027-01-01T00:00:00Z"},
                ]
            }
        },
    )
    manifests = render(values=values)
    settings = _load_settings(manifests, _secret_data(manifests), tmp_path)
    before_expiry = datetime(2026, 12, 31, tzinfo=UTC).timestamp()
    after_expiry = datetime(2027, 1, 2, tzinfo=UTC).timestamp()
    assert settings.delivery.signing_secrets_at(before_expiry) == [SIGNING_SECRET, old]
    assert settings.delivery.signing_secrets_at(after_expiry) == [SIGNING_SECRET]


def test_viewer_tokens_reach_the_bridge(tmp_path: Path) -> None:
    """A token with a tenant and role viewer passes the schema and loads as the bridge's
    read-only token of that tenant; an unknown role fails the schema."""
    viewer = {"name": "app-dashboard", "tenant": "app", "role": "viewer", "sha256": "0" * 64}
    manifests = render(values={"secret": {"authTokens": [*TOKENS, viewer]}})
    settings = _load_settings(manifests, _secret_data(manifests), tmp_path)
    loaded = [(t.name, t.tenant_name, t.read_only) for t in settings.auth.tokens]
    assert loaded == [("app", "app", False), ("app-dashboard", "app", True)]
    with pytest.raises(helm_python.HelmValuesError, match="authTokens/1/role"):
        render(values={"secret": {"authTokens": [*TOKENS, {**viewer, "role": "admin"}]}})


# Security, labels, probes.


def _assert_restricted(container: dict[str, Any]) -> None:
    assert container["securityContext"] == RESTRICTED_CONTAINER
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    assert {"/tmp", "/data", "/etc/webhook-bridge"} <= set(mounts)
    assert mounts["/etc/webhook-bridge"]["readOnly"] is True


def test_deployment_pods_are_restricted() -> None:
    """The pod and its container meet the restricted Pod Security Standard, with writable
    /tmp and /data volumes under the read-only root filesystem."""
    manifests = render(values=AUTHENTICATED)
    spec = pod_spec(manifests)
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert spec["automountServiceAccountToken"] is False
    _assert_restricted(bridge_container(manifests))
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    assert "emptyDir" in volumes["tmp"]


@pytest.mark.parametrize("native", [True, False])
def test_sidecar_containers_are_restricted(native: bool) -> None:
    """The sidecar carries the whole restricted context itself, whatever the application's pod
    sets."""
    manifests = render_app({"sidecar": {"native": native}})
    _assert_restricted(bridge_container(manifests))


def test_every_resource_has_the_standard_labels() -> None:
    """Each resource carries app.kubernetes.io/{name,instance,version,component,managed-by}."""
    values = with_values(AUTHENTICATED, {"store": {"url": POSTGRES_URL}})
    values["autoscaling"] = {"enabled": True}
    values["metrics"] = {**MONITORED, "grafanaDashboard": {"enabled": True}}
    values["healthPort"] = 9091
    values["secret"]["upstreamApiKey"] = "bw_x"
    manifests = render(values=values)
    assert len(manifests) == 8
    for manifest in manifests:
        labels = manifest["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "webhook-bridge"
        assert labels["app.kubernetes.io/instance"] == "bridge"
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["app.kubernetes.io/component"] == "webhook-bridge"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


def test_deployment_probes_are_http_on_the_api_port() -> None:
    """In deployment mode the kubelet reaches the API port: with healthPort null, httpGet
    probes on /livez and /readyz there, a startupProbe first."""
    container = bridge_container(render(values=with_values(AUTHENTICATED, {"healthPort": None})))
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


@pytest.mark.parametrize("mode", ["deployment", "sidecar"])
def test_a_separate_health_port_is_probed_over_http(mode: str) -> None:
    """healthPort set apart from the API port becomes BRIDGE_SERVER__HEALTH_PORT (the bridge's
    server.health_port) and a `health` container port that every probe uses."""
    bridge = {"healthPort": 9090, "mode": mode}
    if mode == "deployment":
        container = bridge_container(render(values=with_values(AUTHENTICATED, bridge)))
    else:
        container = bridge_container(render_app(bridge))
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["BRIDGE_SERVER__HEALTH_PORT"] == "9090"
    assert {"name": "health", "containerPort": 9090, "protocol": "TCP"} in container["ports"]
    probes = ("startupProbe", "livenessProbe", "readinessProbe")
    for probe in probes if mode == "deployment" else probes[:2]:
        assert container[probe]["httpGet"]["port"] == "health"


@pytest.mark.parametrize("mode", ["deployment", "sidecar"])
def test_the_probes_have_a_port_of_their_own_by_default(mode: str) -> None:
    """By default the probes reach the health port, not the API port, whose
    server.max_connections long-polls and event streams can fill: there /livez would answer
    503 and the kubelet restart a bridge that is only busy."""
    if mode == "deployment":
        container = bridge_container(render(values=AUTHENTICATED))
    else:
        container = bridge_container(render_app({}))
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["BRIDGE_SERVER__HEALTH_PORT"] == "9091"
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "health"


@pytest.mark.parametrize("native", [True, False])
def test_a_sidecar_has_no_readiness_probe(native: bool) -> None:
    """A sidecar's readiness is its pod's: /readyz failing while the bridge's store is down
    would take the application out of its Service. The startupProbe on /readyz still holds
    the application (native) until the bridge is ready."""
    container = bridge_container(render_app({"sidecar": {"native": native}}))
    assert "readinessProbe" not in container
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    deployment = bridge_container(render(values=AUTHENTICATED))
    assert deployment["readinessProbe"]["httpGet"]["path"] == "/readyz"


# A private CA bundle from a ConfigMap, trusted by the bridge's TLS (OpenSSL reads
# SSL_CERT_FILE; the image's public CAs in /etc/ssl/certs stay trusted).
CA_BUNDLE: dict[str, Any] = {
    "extraVolumes": [{"name": "corporate-ca", "configMap": {"name": "corporate-ca"}}],
    "extraVolumeMounts": [
        {"name": "corporate-ca", "mountPath": "/etc/ssl/corporate", "readOnly": True}
    ],
    "extraEnv": [{"name": "SSL_CERT_FILE", "value": "/etc/ssl/corporate/ca.crt"}],
}


@pytest.mark.parametrize("mode", ["deployment", "native sidecar", "legacy sidecar"])
def test_extra_volumes_mount_a_ca_bundle_in_the_bridge_container(mode: str) -> None:
    """extraVolumes join the pod's volumes and extraVolumeMounts the bridge container's mounts,
    beside the chart's own, in both modes (a sidecar's in the application's pod); the result is
    a valid Kubernetes Deployment."""
    if mode == "deployment":
        manifests = render(values=with_values(AUTHENTICATED, CA_BUNDLE))
    else:
        native = mode == "native sidecar"
        manifests = render_app(with_values(CA_BUNDLE, {"sidecar": {"native": native}}))
    container = bridge_container(manifests)
    assert container["volumeMounts"][-1] == CA_BUNDLE["extraVolumeMounts"][0]
    assert {"/etc/webhook-bridge", "/data", "/tmp"} <= {
        m["mountPath"] for m in container["volumeMounts"]
    }
    assert container["env"][-1] == CA_BUNDLE["extraEnv"][0]
    assert pod_spec(manifests)["volumes"][-1] == CA_BUNDLE["extraVolumes"][0]
    assert kubernetes_validate.validate(one(manifests, "Deployment"), "1.29.0", strict=True)


# Sidecar mode.


def test_pods_take_no_service_links() -> None:
    """Kubernetes gives a pod BRIDGE_..._SERVICE_HOST and the like for each Service whose name
    starts with "bridge" (the examples' release name), which the bridge refuses as unknown
    settings: the Deployment's pods and the example application's turn service links off."""
    links = {"BRIDGE_WEBHOOK_BRIDGE_SERVICE_HOST": "10.96.0.12", "BRIDGE_STORE__URL": "memory://"}
    with pytest.raises(ConfigError, match="BRIDGE_WEBHOOK_BRIDGE_SERVICE_HOST"):
        config.load(environ=links)
    assert pod_spec(render(values=AUTHENTICATED))["enableServiceLinks"] is False
    for native in (True, False):
        assert pod_spec(render_app({"sidecar": {"native": native}}))["enableServiceLinks"] is False


def test_native_sidecar_is_an_init_container_that_restarts_always() -> None:
    """sidecar.native renders the bridge as an initContainers entry with restartPolicy Always
    and a startupProbe on /readyz, listening on 127.0.0.1 with loopback callbacks allowed."""
    manifests = render_app({"sidecar": {"native": True}})
    spec = pod_spec(manifests)
    (init,) = spec["initContainers"]
    assert init["name"] == "webhook-bridge"
    assert init["restartPolicy"] == "Always"
    assert init["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert [c["name"] for c in spec["containers"]] == ["app"]
    env = {e["name"]: e.get("value") for e in init["env"]}
    assert env["BRIDGE_SERVER__HOST"] == "127.0.0.1"
    toml = one(manifests, "ConfigMap")["data"]["bridge.toml"]
    assert 'callback_allow_cidrs = ["127.0.0.0/8", "::1/128"]' in toml
    volumes = {volume["name"] for volume in spec["volumes"]}
    assert {"webhook-bridge-config", "webhook-bridge-data", "webhook-bridge-tmp"} <= volumes


def test_legacy_sidecar_is_a_plain_container() -> None:
    """sidecar.native false renders the bridge beside the application in containers, with no
    restartPolicy and no initContainers."""
    spec = pod_spec(render_app({"sidecar": {"native": False}}))
    assert "initContainers" not in spec
    assert [c["name"] for c in spec["containers"]] == ["app", "webhook-bridge"]
    assert "restartPolicy" not in spec["containers"][1]
    assert "httpGet" in spec["containers"][1]["startupProbe"]


def test_sidecar_mode_renders_no_workload_of_its_own() -> None:
    """Installed alone in sidecar mode, the chart holds only the configuration (and Secret)."""
    kinds = {
        m["kind"] for m in render(values={"mode": "sidecar", "secret": {"upstreamApiKey": "k"}})
    }
    assert kinds == {"ConfigMap", "Secret"}


def test_including_the_sidecar_in_deployment_mode_is_refused() -> None:
    """The sidecar template names the value to change when the dependency is not in sidecar
    mode."""
    bridge = {"mode": "deployment", "config": {"auth": {"allow_unauthenticated": True}}}
    with pytest.raises(helm_python.HelmError, match="set mode: sidecar"):
        render_app(bridge)


def test_kubernetes_schemas_tell_native_from_legacy_sidecars() -> None:
    """The bundled Kubernetes schemas accept the native sidecar from 1.29 on and refuse it in
    1.25, where the legacy one passes (what helm/check.sh relies on)."""
    native = one(render_app({"sidecar": {"native": True}}), "Deployment")
    legacy = one(render_app({"sidecar": {"native": False}}), "Deployment")
    assert kubernetes_validate.validate(native, "1.29.0", strict=True)
    assert kubernetes_validate.validate(legacy, "1.25.0", strict=True)
    with pytest.raises(kubernetes_validate.ValidationError, match="restartPolicy"):
        kubernetes_validate.validate(native, "1.25.0", strict=True)


# The bridge accepts what the chart renders.


def _secret_data(manifests: list[dict[str, Any]]) -> dict[str, str]:
    """The chart's Secret, decoded."""
    secret = one(manifests, "Secret")
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def _load_settings(
    manifests: list[dict[str, Any]], secrets: dict[str, str], tmp_path: Path
) -> config.Settings:
    """The bridge's settings from the rendered bridge.toml and the container's environment,
    its secretKeyRef values taken from `secrets`; SQLite on /data moved under `tmp_path`."""
    (tmp_path / "bridge.toml").write_text(one(manifests, "ConfigMap")["data"]["bridge.toml"])
    environ = _environment(bridge_container(manifests), secrets)
    assert environ.pop("BRIDGE_CONFIG") == "/etc/webhook-bridge/bridge.toml"
    if environ["BRIDGE_STORE__URL"] == "sqlite:////data/bridge.db":
        environ["BRIDGE_STORE__URL"] = f"sqlite:///{tmp_path}/bridge.db"
    return config.load(tmp_path / "bridge.toml", environ)


def _environment(container: dict[str, Any], secrets: dict[str, str]) -> dict[str, str]:
    """The container's environment, secretKeyRef values taken from `secrets` by key."""
    environ = {}
    for variable in container["env"]:
        if "value" in variable:
            environ[variable["name"]] = variable["value"]
        else:
            environ[variable["name"]] = secrets[variable["valueFrom"]["secretKeyRef"]["key"]]
    return environ


SECRETS = {
    "upstream-api-key": "bw_test_key",
    "auth-tokens": json.dumps(TOKENS),
    "encryption-key": "pVQm2cl3y3ZTOQ0xq0Ht8xKSodUSlsXaZBRiSPVzFjw=",
    "store-url": "postgresql://bridge:pw@db.example:5432/bridge",
}


# A value other than the bridge's default for every key of `config`.
EVERY_KEY_CHANGED: dict[str, dict[str, Any]] = {
    "server": {
        "port": 9000,
        "shutdown_grace_s": 12.5,
        "max_header_bytes": 8192,
        "max_headers": 50,
        "header_timeout_s": 5.0,
        "max_connections": 200,
        "keepalive_timeout_s": 10,
        "allowed_hosts": ["bridge.team.svc", "*.example.com"],
        "forwarded_allow_ips": ["10.0.0.0/8"],
    },
    "upstream": {
        "base_url": "https://jobs.example.com",
        "request_timeout_s": 7.5,
        "max_concurrency": 32,
        "max_requests_per_s": 300.0,
        "request_burst": 20,
        "max_requests_per_s_per_key": 150.0,
        "request_burst_per_key": 5,
        "circuit_breaker": False,
        "circuit_window_s": 30.0,
        "circuit_min_requests": 40,
        "circuit_failure_ratio": 0.75,
        "circuit_consecutive_failures": 10,
        "circuit_cooldown_s": 2.5,
        "circuit_max_cooldown_s": 120.0,
        "profile": {"statuses": {"DONE": "succeeded", "BAD": "failed"}},
    },
    "store": {"lease_s": 20, "pool_min_size": 2, "pool_max_size": 5},
    "poll": {
        "interval_s": 3.5,
        "timeout_s": 600,
        "min_interval_s": 2.5,
        "max_interval_s": 600,
        "max_timeout_s": 43200,
        "jitter": 0.05,
        "max_backoff_s": 30,
        "not_found_grace_s": 10,
        "strategy": "fixed",
    },
    "delivery": {
        "timeout_s": 20,
        "retry_schedule_s": [1, 2.5, 60],
        "jitter": 0.1,
        "max_concurrency": 16,
        "max_per_host": 4,
        "max_per_tenant": 8,
        "max_retry_after_s": 600,
        "max_response_bytes": 2048,
        "payload_retention_days": 7.5,
        "sender": "process",
    },
    "security": {
        "allow_private_callbacks": True,
        "callback_allow_cidrs": ["10.0.0.0/8"],
        "require_https": True,
        "callback_dns_timeout_s": 2.5,
    },
    "auth": {
        "allow_unauthenticated": True,
        "registrations_per_s": 2.5,
        "registration_burst": 10,
        "failed_auth_burst": 5,
        "failed_auth_per_minute": 2.0,
        "subscription_changes_per_min": 12.0,
        "subscription_change_burst": 4,
    },
    "api": {
        "sse_keepalive_s": 5.0,
        "max_wait_s": 30.0,
        "max_streams_per_tenant": 5,
        "max_redeliveries": 25,
    },
    "ui": {
        "enabled": False,
        "session_hours": 1.5,
        "image_hosts": ["images.example.com", "http://images.internal:8081"],
    },
    "log": {"level": "debug", "format": "json"},
}


# Settings the chart sets itself: from mode, healthPort, store and the Secret's values.
NOT_IN_CONFIG = {
    "server": {"host", "health_port", "health_host"},
    "upstream": {"api_key"},
    "store": {"url"},
    "delivery": {"signing_secrets"},
    "security": {"encryption_key"},
    "auth": {"tokens"},
}


# config.upstreams maps names to upstreams, not keys to settings: tested on its own below.
NAMED = "upstreams"


def _config_defaults() -> dict[str, Any]:
    """config in values.yaml, its sections of settings only (without NAMED)."""
    config_values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())["config"]
    return {section: keys for section, keys in config_values.items() if section != NAMED}


def test_config_in_values_has_every_setting_of_the_bridge() -> None:
    """A setting added to the bridge is added to the chart too (or named above as the chart's)."""
    defaults = _config_defaults()
    expected = {
        name: set(field.annotation.model_fields) - NOT_IN_CONFIG.get(name, set())
        for name, field in config.Settings.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, pydantic.BaseModel)
    }
    assert {s: set(k) for s, k in defaults.items()} == expected


def test_every_config_key_is_changed_by_the_table_below() -> None:
    """EVERY_KEY_CHANGED covers each key of config in values.yaml, so the next test checks
    the rendering of every one."""
    defaults = _config_defaults()
    assert {s: set(k) for s, k in EVERY_KEY_CHANGED.items()} == {
        s: set(k) for s, k in defaults.items()
    }
    for section, keys in EVERY_KEY_CHANGED.items():
        for key, value in keys.items():
            assert value != defaults[section][key], f"config.{section}.{key}"


@pytest.mark.parametrize("name", ["sqlite-single", "postgresql-ha", "every-key-changed"])
def test_the_bridge_loads_the_rendered_configuration(name: str, tmp_path: Path) -> None:
    """bridge.toml from the ConfigMap plus the container's environment load as the bridge's
    settings, every config value as the chart's defaults and the values chose it."""
    values = (
        with_values(AUTHENTICATED, {"config": EVERY_KEY_CHANGED})
        if name == "every-key-changed"
        else example(name)
    )
    manifests = render(values=values)
    settings = _load_settings(manifests, SECRETS, tmp_path)
    chosen = helmtool.merge(
        yaml.safe_load((CHART / "values.yaml").read_text())["config"], values["config"]
    )
    for section, keys in chosen.items():
        for key, value in keys.items():
            loaded = getattr(getattr(settings, section), key)
            if isinstance(loaded, tuple):
                loaded = [str(item) for item in loaded] if section == "security" else list(loaded)
            elif key == "base_url":
                loaded = str(loaded).rstrip("/")
            elif key == "profile":  # a built-in's name, or a table: the profile either way
                value = profiles.builtin(value) if isinstance(value, str) else value
                loaded = loaded if isinstance(value, Profile) else loaded.model_dump()
                value = value if isinstance(value, Profile) else Profile(**value).model_dump()
            assert loaded == value, f"config.{section}.{key}"
    assert settings.server.host == "0.0.0.0"
    assert [t.name for t in settings.auth.tokens] == ["app"]
    if name == "postgresql-ha":
        assert settings.store.url == SECRETS["store-url"]


# Named upstreams.


def test_a_named_upstream_takes_every_setting_of_one() -> None:
    """config.upstreams' schema takes each setting of an [upstreams.<name>] table but its API
    key (the Secret's), and its poll table each setting of [poll]."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    named = schema["properties"]["config"]["properties"][NAMED]["additionalProperties"]
    assert set(named["properties"]) == set(config.NamedUpstreamSettings.model_fields) - {"api_key"}
    assert set(named["properties"]["poll"]["properties"]) == set(config.PollSettings.model_fields)
    assert named["required"] == ["base_url"]


def test_named_upstreams_load_as_the_bridges(tmp_path: Path) -> None:
    """Each of config.upstreams renders as an [upstreams.<name>] table, with its poll and
    profile as tables of their own, and loads as the bridge's upstream of that name: every key
    of an upstream and of its poll table changed and a declared profile on one, a built-in
    profile and the [poll] settings on the other; each one's API key from the Secret."""
    studio = {
        **EVERY_KEY_CHANGED["upstream"], "profile": STUDIO["profile"],
        "poll": EVERY_KEY_CHANGED["poll"],
    }  # fmt: skip
    values = with_values(
        AUTHENTICATED,
        {
            "config": {NAMED: {"studio": studio, "fal-queue": FAL}},
            "secret": {"upstreamApiKeys": {"studio": "key_studio", "fal-queue": "key_fal"}},
        },
    )
    manifests = render(values=values)
    toml = one(manifests, "ConfigMap")["data"]["bridge.toml"]
    for table in ("upstreams.fal-queue", "upstreams.studio", "upstreams.studio.poll"):
        assert f"\n[{table}]\n" in toml
    assert (
        '\n[upstreams.studio.profile]\nauth = { "name" = "X-Key", "scheme" = "header" }\n' in toml
    )

    settings = _load_settings(manifests, _secret_data(manifests), tmp_path)
    assert settings.upstream_names == ("default", "fal-queue", "studio")
    loaded = settings.upstreams["studio"]
    for key, value in studio.items():
        if key == "poll":
            assert {name: getattr(loaded.poll, name) for name in value} == value
        elif key == "profile":
            assert loaded.profile == Profile(**value)
        elif key == "base_url":
            assert str(loaded.base_url).rstrip("/") == value
        else:
            assert getattr(loaded, key) == value, f"config.upstreams.studio.{key}"
    fal = settings.upstreams["fal-queue"]
    assert (fal.profile, fal.poll) == (profiles.builtin("betterwaifu"), settings.poll)
    keys = {
        name: u.api_key and u.api_key.get_secret_value() for name, u in settings.upstreams.items()
    }
    assert keys == {"studio": "key_studio", "fal-queue": "key_fal"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        # Names the bridge refuses.
        ({"config": {NAMED: {"default": FAL}}}, "the upstream named default is config.upstream"),
        ({"config": {NAMED: {"Studio": FAL}}}, "'Studio' does not match pattern"),
        ({"config": {NAMED: {"a.b": FAL}}}, "'a.b' does not match pattern"),
        # `__` splits BRIDGE_UPSTREAMS__<NAME>__API_KEY, and so does a `_` before it.
        ({"config": {NAMED: {"fal__eu": FAL}}}, "'fal__eu' does not match pattern"),
        ({"config": {NAMED: {"fal_": FAL}}}, "'fal_' does not match pattern"),
        ({"secret": {"upstreamApiKeys": {"fal_": "k"}}}, "'fal_' does not match pattern"),
        # An upstream without its address, or with its key in the ConfigMap.
        ({"config": {NAMED: {"studio": {"profile": "betterwaifu"}}}}, "property 'base_url'"),
        ({"config": {NAMED: {"studio": {**FAL, "api_key": "k"}}}}, "'api_key' not allowed"),
        ({"config": {NAMED: {"studio": {**FAL, "poll": {"interval_s": 0}}}}}, "poll/interval_s"),
        # An API key for an upstream that is not configured.
        (
            {"secret": {"upstreamApiKeys": {"studio": "k"}}},
            'secret.upstreamApiKeys names "studio", which is no upstream of config.upstreams '
            "(none configured): add config.upstreams.studio",
        ),
        (
            {
                "config": {NAMED: {"fal": FAL}},
                "secret": {"existingSecret": "s",
                           "existingSecretKeys": {"upstreamApiKeys": {"studio": "studio-key"}}},
            },
            'secret.existingSecretKeys.upstreamApiKeys names "studio", which is no upstream of '
            "config.upstreams (fal)",
        ),
    ],
)  # fmt: skip
def test_named_upstreams_the_bridge_would_refuse_stop_the_render(
    values: dict[str, Any], message: str
) -> None:
    """What the bridge would refuse at start-up (or ignore) stops the render, saying what."""
    with pytest.raises(helm_python.HelmError) as caught:
        render(values=with_values(AUTHENTICATED, values))
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "name",
    ["fal", "f", "0x", "fal-eu", "fal_eu", "fal-", "fal_-eu", "a" * 32,
     "fal__eu", "fal_", "_fal", "-fal", "Fal", "fal.eu", "a" * 33],
)  # fmt: skip
def test_the_chart_takes_the_upstream_names_the_bridge_takes(name: str, tmp_path: Path) -> None:
    """A name config.upstreams' schema takes is one the bridge starts with, and the reverse."""
    values = with_values(AUTHENTICATED, {"config": {NAMED: {name: FAL}}})
    try:
        render(values=values)
    except helm_python.HelmError:
        rendered = False
    else:
        rendered = True
    path = tmp_path / "bridge.toml"
    path.write_text(f'[upstreams."{name}"]\nbase_url = "{FAL.get("base_url")}"\n')
    try:
        config.load(path, {})
    except ConfigError:
        loaded = False
    else:
        loaded = True
    assert rendered == loaded


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _run_probe(command: list[str]) -> subprocess.CompletedProcess[str]:
    assert command[:2] == ["python", "-c"]
    return subprocess.run(
        [sys.executable, *command[1:]], capture_output=True, text=True, timeout=10, check=False
    )


@contextlib.contextmanager
def _rendered_bridge(
    manifests: list[dict[str, Any]], tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A real bridge started with the rendered bridge.toml and container environment, SQLite in
    tmp_path; its output in tmp_path/bridge.log."""
    (tmp_path / "bridge.toml").write_text(one(manifests, "ConfigMap")["data"]["bridge.toml"])
    environ = _environment(bridge_container(manifests), SECRETS)
    environ["BRIDGE_CONFIG"] = str(tmp_path / "bridge.toml")
    environ["BRIDGE_STORE__URL"] = f"sqlite:///{tmp_path}/bridge.db"
    if environ["BRIDGE_SERVER__HOST"] == "0.0.0.0":
        environ["BRIDGE_SERVER__HOST"] = "127.0.0.1"
    base = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    environ = {**base, **environ, "BRIDGE_SERVER__HEALTH_HOST": "127.0.0.1"}
    with serving_bridge(environ, tmp_path / "bridge.log") as process:
        yield process


@pytest.fixture
def sidecar_bridge(tmp_path: Path) -> Iterator[tuple[dict[str, Any], subprocess.Popen[bytes]]]:
    """A real bridge started with the native sidecar's rendered configuration and environment
    (healthPort null, on a free port, SQLite in tmp_path), and its container."""
    port = _free_port()
    manifests = render_app({"config": {"server": {"port": port}}, "healthPort": None})
    container = bridge_container(manifests)
    assert _run_probe(container["startupProbe"]["exec"]["command"]).returncode != 0
    with _rendered_bridge(manifests, tmp_path) as process:
        yield container, process


def test_sidecar_exec_probes_pass_against_the_rendered_bridge(
    sidecar_bridge: tuple[dict[str, Any], subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """The bridge starts on 127.0.0.1 from the rendered sidecar settings (healthPort null), and
    the exec probes (python -c against 127.0.0.1) fail before it listens and pass once it is
    ready."""
    container, process = sidecar_bridge
    deadline = time.monotonic() + 30
    while True:
        startup = _run_probe(container["startupProbe"]["exec"]["command"])
        if startup.returncode == 0:
            break
        log = (tmp_path / "bridge.log").read_text()
        assert process.poll() is None, f"the bridge exited:\n{log}"
        assert time.monotonic() < deadline, f"never ready: {startup.stderr}\n{log}"
        time.sleep(0.2)
    assert _run_probe(container["livenessProbe"]["exec"]["command"]).returncode == 0
    assert process.poll() is None


# values.yaml and values.schema.json describe the same values.


def _schema_leaves(
    schema: dict[str, Any], path: tuple[str, ...] = ()
) -> dict[tuple[str, ...], Any]:
    """Every value the schema describes that is not an object of named properties, by path."""
    if "properties" not in schema:
        return {path: schema}
    leaves: dict[tuple[str, ...], Any] = {}
    for key, sub in schema["properties"].items():
        leaves.update(_schema_leaves(sub, (*path, key)))
    return leaves


def _documented_keys(text: str) -> dict[tuple[str, ...], bool]:
    """Each mapping key of a block-style YAML file, by path: whether a comment line sits right
    above it."""
    keys: dict[tuple[str, ...], bool] = {}
    stack: list[tuple[int, str]] = []
    previous = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", "-")) and ":" in stripped:
            indent = len(line) - len(line.lstrip())
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, stripped.split(":", 1)[0]))
            keys[tuple(key for _, key in stack)] = previous.startswith("#")
        if stripped:
            previous = stripped
    return keys


def test_every_value_is_in_the_schema_and_documented() -> None:
    """values.yaml and values.schema.json name the same values, each with a description in the
    schema and a comment right above it in values.yaml."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    leaves = _schema_leaves(schema)
    del leaves[("global",)]  # Helm's, for a parent chart
    keys = _documented_keys((CHART / "values.yaml").read_text())
    assert sorted(set(leaves) - set(keys)) == [], "in the schema, not in values.yaml"
    # Every key of values.yaml is a value of the schema, leads to one, or lies inside one.
    stray = [
        key
        for key in keys
        if not any(leaf[: len(key)] == key or key[: len(leaf)] == leaf for leaf in leaves)
    ]
    assert stray == [], "in values.yaml, not in the schema"
    undocumented = sorted(".".join(path) for path in leaves if not keys[path])
    assert undocumented == []
    described = sorted(".".join(p) for p, s in leaves.items() if not s.get("description"))
    assert described == []


def _get(port: int, path: str) -> int:
    """The status of GET http://127.0.0.1:port/path, as the kubelet's httpGet probe sees it."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        return int(connection.recv(4096).split(b" ", 2)[1])


def test_probes_pass_while_the_api_port_is_full(tmp_path: Path) -> None:
    """With the API port at server.max_connections (long-polls and streams), it answers 503,
    /livez included; the probes, on the health port by default, still pass."""
    api, health = _free_port(), _free_port()
    values = {"config": {"server": {"port": api, "max_connections": 2}}, "healthPort": health}
    manifests = render(values=with_values(AUTHENTICATED, values))
    container = bridge_container(manifests)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    probed = ports[container["livenessProbe"]["httpGet"]["port"]]
    assert probed == health
    with _rendered_bridge(manifests, tmp_path) as process:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                if _get(probed, "/readyz") == 200 and _get(api, "/livez") == 200:
                    break
            log = (tmp_path / "bridge.log").read_text()
            assert process.poll() is None, f"the bridge exited:\n{log}"
            assert time.monotonic() < deadline, f"never ready:\n{log}"
            time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", api)):  # one of the two slots
            assert _get(api, "/livez") == 503
            assert _get(probed, "/livez") == 200
            assert _get(probed, "/readyz") == 200
