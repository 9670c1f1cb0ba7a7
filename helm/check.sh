#!/usr/bin/env bash
# Offline checks of the Helm chart and its examples (`make lint` runs this; no cluster, no
# network, no helm executable: helm/helmtool.py drives Helm's Go SDK from helm-python-sdk).
#
#   1. yamllint: the chart's values, Chart.yaml files and helm/examples (helm/.yamllint).
#   2. check-jsonschema: values.yaml and every example against values.schema.json.
#   3. helm lint --strict (Kubernetes 1.29 and 1.37) and helm template, for each example; the
#      sidecar examples also through helm/examples/sidecar-app, which includes the chart's
#      named templates in its own pod.
#   4. kubernetes-validate --strict: every rendered manifest against Kubernetes 1.29 (the first
#      with native sidecars) and 1.37 (the newest schemas it bundles); the legacy sidecar also
#      against 1.25. ServiceMonitor (a CRD) has no bundled schema: tests/integration/test_helm.py
#      checks its shape.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${VENV:-.venv}/bin"
CHART=helm/webhook-bridge
APP=helm/examples/sidecar-app
KUBE_VERSIONS=(1.29.0 1.37.0)
OLDEST_KUBE_VERSION=1.25.0

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

step() { printf 'helm/check.sh: %s\n' "$*"; }

step "yamllint"
"$BIN/yamllint" --strict -c helm/.yamllint helm/

step "check-jsonschema (values.schema.json, then the values against it)"
"$BIN/check-jsonschema" --check-metaschema "$CHART/values.schema.json"
"$BIN/check-jsonschema" --schemafile "$CHART/values.schema.json" "$CHART/values.yaml" helm/examples/*.yaml

lint_args=()
for version in "${KUBE_VERSIONS[@]}"; do lint_args+=(--kube-version "$version"); done

for example in helm/examples/*.yaml; do
    name="$(basename "$example" .yaml)"
    step "lint and template $CHART with $example"
    "$BIN/python" helm/helmtool.py lint "$CHART" -f "$example" "${lint_args[@]}"
    "$BIN/python" helm/helmtool.py template "$CHART" -f "$example" --name bridge -o "$out/$name.yaml"
    if grep -q '^mode: sidecar' "$example"; then
        step "lint and template $APP with $example as its webhook-bridge values"
        "$BIN/python" helm/helmtool.py lint "$APP" --values-under "webhook-bridge=$example" "${lint_args[@]}"
        "$BIN/python" helm/helmtool.py template "$APP" --values-under "webhook-bridge=$example" \
            --name app -o "$out/app-$name.yaml"
    fi
done
step "lint and template $APP with its own values"
"$BIN/python" helm/helmtool.py lint "$APP" "${lint_args[@]}"
"$BIN/python" helm/helmtool.py template "$APP" --name app -o "$out/app-default.yaml"

validate() {
    # kubernetes-validate only warns about a kind it has no schema for: that fails here too,
    # except for the ServiceMonitor CRD.
    local report status=0
    report="$("$BIN/kubernetes-validate" --strict --quiet "$@" 2>&1)" || status=$?
    if [ -n "$report" ]; then printf '%s\n' "$report"; fi
    if [ "$status" -ne 0 ] || grep -v 'kind ServiceMonitor with api version monitoring.coreos.com/v1' <<<"$report" | grep -q .; then
        return 1
    fi
}
step "kubernetes-validate --strict against ${KUBE_VERSIONS[*]}: $(cd "$out" && echo *.yaml)"
kube_args=()
for version in "${KUBE_VERSIONS[@]}"; do kube_args+=(-k "$version"); done
validate "${kube_args[@]}" "$out"/*.yaml
step "kubernetes-validate --strict the legacy sidecar against $OLDEST_KUBE_VERSION"
validate -k "$OLDEST_KUBE_VERSION" "$out/app-sidecar-legacy.yaml"

step "ok"
