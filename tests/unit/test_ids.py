import pytest

from service.ids import format_id, new_id

MAX_MILLIS = 2**50 - 1


@pytest.mark.parametrize(
    ("millis", "random", "expected"),
    [
        (0, bytes(10), "w_" + "0" * 26),
        (1, bytes(10), "w_" + "0" * 9 + "1" + "0" * 16),
        (31, bytes(10), "w_" + "0" * 9 + "z" + "0" * 16),
        (32, bytes(10), "w_" + "0" * 8 + "10" + "0" * 16),
        (0, bytes(9) + b"\x01", "w_" + "0" * 25 + "1"),
        (0, b"\xff" * 10, "w_" + "0" * 10 + "z" * 16),
        (MAX_MILLIS, bytes(10), "w_" + "z" * 10 + "0" * 16),
        # 2026-12-05T00:00:00Z, and 0x0123456789abcdef0123 spelt 5 bits at a time.
        (1_764_892_800_000, bytes.fromhex("0123456789abcdef0123"), "w_01kbnwxx0004hmasw9nf6yy093"),
    ],
)
def test_format_id_spells_time_then_randomness_in_crockford_base32(
    millis: int, random: bytes, expected: str
) -> None:
    assert format_id("w", millis, random) == expected


def test_ids_sort_by_creation_time_whatever_their_randomness() -> None:
    earlier = format_id("w", 1_764_892_800_000, b"\xff" * 10)
    later = format_id("w", 1_764_892_800_001, bytes(10))
    assert earlier < later


def test_new_id_uses_the_given_time_and_fresh_randomness() -> None:
    first, second = new_id("req", now=1_764_892_800.0), new_id("req", now=1_764_892_800.0)
    assert first[:14] == second[:14] == "req_01kbnwxx00"
    assert first != second
    assert len(first) == len("req_") + 26
