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

# A lock's pins without their hashes, one per package and marker: uv's preferences.
pins() {
    [ -f "$1" ] || return 0
    grep -E '^[A-Za-z0-9]' "$1" | sed -E 's/[[:space:]]*\\$//' | awk '{
        name = tolower($0); sub(/[[:space:]=<>!~;@\[].*/, "", name); gsub(/[-_.]+/, "-", name)
        marker = index($0, ";") ? substr($0, index($0, ";")) : ""
        if (!((name, marker) in seen)) { seen[name, marker] = 1; print }
    }'
}

compile() {  # OUTPUT INPUT... [uv options]: resolves into a copy of OUTPUT, its pins preferred
    local out=$1
    shift
    pins "$out" >"$tmp/$out"
    upgrade=()
    for name in ${UPGRADE:-}; do upgrade+=(--upgrade-package "$name"); done
    "$uv" pip compile --quiet --no-config --universal --python-version 3.11 --generate-hashes \
        --no-annotate --custom-compile-command "make lock" "${upgrade[@]}" \
        --output-file "$tmp/$out" "$@"
}

python3 -c 'import sys, tomllib
print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")' \
    >"$tmp/build.in"
echo uv >"$tmp/uv.in"

compile requirements.lock pyproject.toml "$tmp/build.in"
compile requirements-dev.lock pyproject.toml "$tmp/build.in" --extra dev \
    --constraint "$tmp/requirements.lock"
compile requirements-uv.lock "$tmp/uv.in"
mv "$tmp"/requirements*.lock .
