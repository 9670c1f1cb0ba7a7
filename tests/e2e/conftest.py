"""Fixtures of the end-to-end suite: the upstream simulator, the receiver and bridges.

The simulator and the receiver are shared by the whole session: tests keep apart by using their
own job ids and callback paths. The bridge is shared too (`bridge`) by the tests that run with
the default test settings; a test that needs other settings, a crash or a second process starts
its own with `start_bridge`. A failed test's report carries the output of every process that is
still running or that the test started.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import harness
from tests.e2e.harness import Bridge, Receiver, StartBridge, Upstream
from tests.e2e.postgres import fresh_database


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, Any]:
    report = yield
    if report.failed:
        for process in harness.PROCESSES:
            if process.running or process.name.startswith(item.name):
                report.sections.append((f"process {process.name}", process.tail()))
    return report


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    """The upstream simulator, accepting the key `bw_test_key`."""
    directory = tmp_path_factory.mktemp("upstream")
    with harness.running_upstream("upstream", directory, "--seed", "7") as started:
        yield started


@pytest.fixture(scope="session")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    """The webhook receiver, recording every request."""
    with harness.running_receiver("receiver", tmp_path_factory.mktemp("receiver")) as started:
        yield started


@pytest.fixture(scope="session")
def bridge(
    tmp_path_factory: pytest.TempPathFactory, upstream: Upstream, receiver: Receiver
) -> Iterator[Bridge]:
    """A bridge with the default test settings, shared by the tests that need nothing else."""
    directory = tmp_path_factory.mktemp("bridge")
    started = harness.launch_bridge("bridge", directory, upstream.url, directory / "bridge.db")
    try:
        yield started
    finally:
        harness.close_bridge(started)


@pytest.fixture
def start_bridge(
    request: pytest.FixtureRequest, tmp_path: Path, upstream: Upstream, receiver: Receiver
) -> Iterator[StartBridge]:
    """Start a bridge of the test's own: `start_bridge(db=PATH, BRIDGE_X__Y="...")`."""
    started: list[Bridge] = []

    def start(db: Path | None = None, **overrides: str) -> Bridge:
        name = f"{request.node.name}.bridge{len(started) + 1}"
        launched = harness.launch_bridge(
            name, tmp_path, upstream.url, db or tmp_path / "bridge.db", **overrides
        )
        started.append(launched)
        return launched

    try:
        yield start
    finally:
        for launched in started:
            harness.close_bridge(launched)


@pytest.fixture
def database() -> Iterator[str]:
    """The URL of a fresh, empty database on the PostgreSQL test server, dropped after the test
    (tests/e2e/postgres.py)."""
    with fresh_database() as url:
        yield url
