"""Identifiers: a prefix and a time-ordered, random suffix (ULID layout, Crockford base32).

Ordering by id is ordering by creation time, which gives newest-first listings and cursors for
free.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
# Two characters per 10 bits, 13 lookups for the 130 bits of an id: several ids are made per
# request, and a divmod per character showed in profiles (base64.b32encode is slower still).
_PAIRS = [_ALPHABET[i >> 5] + _ALPHABET[i & 31] for i in range(1024)]
_SHIFTS = tuple(range(120, -1, -10))


def format_id(prefix: str, millis: int, random: bytes) -> str:
    """`prefix_` + `millis` in 10 characters + the 10 bytes of `random` in 16 characters.

    `millis` must be below 2**50 (the year 37648)."""
    value = (millis << 80) | int.from_bytes(random)
    pairs = _PAIRS
    return prefix + "_" + "".join([pairs[value >> shift & 1023] for shift in _SHIFTS])


def new_id(prefix: str, now: float | None = None) -> str:
    """`prefix_` + 10 characters of milliseconds + 16 random characters."""
    millis = int((time.time() if now is None else now) * 1000)
    return format_id(prefix, millis, os.urandom(10))
