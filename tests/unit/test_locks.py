"""The locks agree with pyproject.toml, so a dependency added without `make lock` fails here.

`requirements.lock` pins what `serve` needs and the build backend; `requirements-dev.lock` pins
that and the dev extra, at the same versions; `requirements-uv.lock` pins uv. Every pin is exact
and carries hashes, as `pip install --require-hashes` demands.
"""

from __future__ import annotations

import tomllib
from collections import defaultdict
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
BUILD = [Requirement(spec) for spec in PYPROJECT["build-system"]["requires"]]
RUNTIME = [Requirement(spec) for spec in PYPROJECT["project"]["dependencies"]]
DEV = [Requirement(spec) for spec in PYPROJECT["project"]["optional-dependencies"]["dev"]]

Pins = dict[NormalizedName, list[tuple[Requirement, list[str]]]]


def read_lock(name: str) -> Pins:
    """Each package's pins (one per marker) with their hashes, continuation lines joined."""
    text = (REPO / name).read_text().replace("\\\n", " ")
    pins: Pins = defaultdict(list)
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        spec, *hashes = line.split("--hash=")
        requirement = Requirement(spec)
        pins[canonicalize_name(requirement.name)].append((requirement, [h.strip() for h in hashes]))
    return pins


def unpinned(declared: list[Requirement], pins: Pins) -> list[str]:
    """The declared requirements that no pin of the lock satisfies."""
    missing = []
    for requirement in declared:
        versions = [
            next(iter(pin.specifier)).version
            for pin, _ in pins.get(canonicalize_name(requirement.name), [])
        ]
        if not any(requirement.specifier.contains(v, prereleases=True) for v in versions):
            missing.append(f"{requirement} (locked: {', '.join(versions) or 'nothing'})")
    return missing


@pytest.mark.parametrize(
    ("lock", "declared"),
    [
        ("requirements.lock", BUILD + RUNTIME),
        ("requirements-dev.lock", BUILD + RUNTIME + DEV),
    ],
)
def test_every_declared_dependency_is_locked(lock: str, declared: list[Requirement]) -> None:
    """What pyproject.toml asks for is pinned, at a version it admits, in the lock installing it."""
    assert unpinned(declared, read_lock(lock)) == [], f"run `make lock`: {lock} is stale"


@pytest.mark.parametrize(
    "lock", ["requirements.lock", "requirements-dev.lock", "requirements-uv.lock"]
)
def test_every_pin_is_exact_and_hashed(lock: str) -> None:
    """pip's --require-hashes mode takes only `==` pins, each with the hashes of its files."""
    loose = [
        str(pin)
        for entries in read_lock(lock).values()
        for pin, hashes in entries
        if len(pin.specifier) != 1
        or next(iter(pin.specifier)).operator != "=="
        or not hashes
        or not all(h.startswith("sha256:") for h in hashes)
    ]
    assert loose == []


def test_the_dev_lock_holds_the_runtime_versions() -> None:
    """Every runtime pin is in the dev lock: the same version, marker and hashes."""
    runtime, dev = read_lock("requirements.lock"), read_lock("requirements-dev.lock")
    differing = [
        name
        for name, entries in runtime.items()
        if sorted(map(str, (pin for pin, _ in entries)))
        != sorted(map(str, (pin for pin, _ in dev.get(name, []))))
        or sorted(h for _, hashes in entries for h in hashes)
        != sorted(h for _, hashes in dev.get(name, []) for h in hashes)
    ]
    assert differing == []


def test_the_runtime_lock_holds_no_dev_tool() -> None:
    """`make run` installs none of the dev extra's own packages (the test runner, the linters)."""
    runtime = read_lock("requirements.lock")
    assert [str(r) for r in DEV if canonicalize_name(r.name) in runtime] == []


def test_uv_is_locked() -> None:
    """`make lock` installs uv from its own lock, whatever state the others are in."""
    assert list(read_lock("requirements-uv.lock")) == ["uv"]
