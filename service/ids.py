"""Identifiers: a prefix and a time-ordered, random suffix (ULID layout, Crockford base32).

Ordering by id is ordering by creation time, which gives newest-first listings and cursors for
free.
"""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def new_id(prefix: str, now: float | None = None) -> str:
    """`prefix_` + 10 characters of milliseconds + 16 random characters."""
    millis = int((time.time() if now is None else now) * 1000)
    return f"{prefix}_{_encode(millis, 10)}{_encode(secrets.randbits(80), 16)}"
