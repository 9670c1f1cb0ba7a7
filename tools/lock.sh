#!/usr/bin/env bash
# `make lock`: re-locks every dependency from pyproject.toml, each version with the hashes of all
# its files on PyPI (every platform and Python the project supports):
#   requirements.lock      what `serve` needs, and the build backend ([build-system] requires)
#   requirements-dev.lock  that, plus the dev extra, constrained by requirements.lock
#   requirements-uv.lock   uv itself, which resolves them
# The versions locked now are kept wherever they still fit, even in a lock that a merge left with
# conflict markers (both sides' pins count, this side's first); UPGRADE="name ..." moves those
# packages to their newest versions. Nothing is written unless all three resolve.
set -euo pipefail
cd "$(dirname "$0")/.."
uv=${UV:-.venv/bin/uv}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The pins of the locks named that exist, without their hashes, the first of each package and
# marker: uv's preferences.
pins() {
    local lock
    for lock in "$@"; do
        if [ -f "$lock" ]; then grep -E '^[A-Za-z0-9]' "$lock" || true; fi
    done | sed -E 's/[[:space:]]*\\$//' | awk '{
        name = tolower($0); sub(/[[:space:]=<>!~;@\[].*/, "", name); gsub(/[-_.]+/, "-", name)
        marker = index($0, ";") ? substr($0, index($0, ";")) : ""
        if (!((name, marker) in seen)) { seen[name, marker] = 1; print }
    }'
}

compile() {  # OUTPUT "PREFERRED LOCKS" INPUT... [uv options]
    local out=$1 preferred=$2
    shift 2
    # shellcheck disable=SC2086 # the preferred locks are a list
    pins $preferred >"$tmp/$out"
    local name upgrade=()
    for name in ${UPGRADE:-}; do upgrade+=(--upgrade-package "$name"); done
    "$uv" pip compile --quiet --no-config --universal --python-version 3.11 --generate-hashes \
        --no-annotate --custom-compile-command "make lock" ${upgrade[@]+"${upgrade[@]}"} \
        --output-file "$tmp/$out" "$@"
}

python3 -c 'import tomllib
print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")' \
    >"$tmp/build.in"
echo uv >"$tmp/uv.in"

compile requirements.lock requirements.lock pyproject.toml "$tmp/build.in"
# The runtime lock's pins count for the dev lock too: a dev dependency pinned there still keeps
# its version.
compile requirements-dev.lock "requirements-dev.lock requirements.lock" \
    pyproject.toml "$tmp/build.in" --extra dev --constraint "$tmp/requirements.lock"
compile requirements-uv.lock requirements-uv.lock "$tmp/uv.in"
mv "$tmp"/requirements*.lock .
