from __future__ import annotations

import pytest

from tests.unit.doubles import Sleeps


@pytest.fixture
def sleeps() -> Sleeps:
    """A sleep to inject instead of asyncio.sleep: returns at once, records the waits."""
    return Sleeps()
