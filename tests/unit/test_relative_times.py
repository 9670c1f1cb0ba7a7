"""The list's relative times (`words.ago`), as a table: each row a gap before the request's
time and what is said of it."""

from __future__ import annotations

import pytest

from service.ui.words import ago

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z


@pytest.mark.parametrize(
    ("seconds_before", "said"),
    [
        (0, "just now"),
        (9.9, "just now"),  # under 10 s
        (10, "10 s ago"),
        (59.9, "59 s ago"),
        (60, "1 min ago"),
        (3599, "59 min ago"),
        (3600, "1 h ago"),
        (86399, "23 h ago"),
        (86400, "1 day ago"),
        (2 * 86400, "2 days ago"),
        (30 * 86400 - 1, "29 days ago"),
        (30 * 86400, "2025-12-02"),  # a month or more: the date
        (-59, "just now"),  # another clock a little ahead
        (-60, "2026-01-01"),  # the future beyond that: the date
    ],
)
def test_ago(seconds_before: float, said: str) -> None:
    """How long before the request a time was, in the list's words."""
    assert ago(NOW - seconds_before, NOW) == said
