"""The collector settings every long-running bridge process applies once start-up is over."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from service import gc_tuning


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_gc")
def test_tune_freezes_start_up_objects_and_makes_young_collections_rarer() -> None:
    gc.unfreeze()
    _, middle, old = gc.get_threshold()

    gc_tuning.tune()

    assert gc.get_freeze_count() >= 1
    assert gc.get_threshold() == (gc_tuning.YOUNG_THRESHOLD, middle, old)
