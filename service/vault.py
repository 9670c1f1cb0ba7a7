"""Secrets at rest: signing secrets, per-watch upstream keys and callback header values are
stored encrypted (Fernet: AES-128-CBC with an HMAC-SHA256) under `security.encryption_key`.

Several keys may be configured, newest first: the first encrypts, every one decrypts, so a key
can be rotated without re-encrypting what is stored. Values stored before any key was set stay
readable as they are.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from service.errors import BridgeError

PREFIX = "enc:v1:"
# Without a key, a value that starts as sealed ones do is stored behind this, to open as it was
# given (a Fernet token never starts with it).
_CLEAR = PREFIX + "clear:"


class VaultError(BridgeError):
    """A stored secret could not be decrypted."""


def parse_keys(value: str) -> list[str]:
    """The keys of a comma-separated `security.encryption_key`, each checked; newest first."""
    keys = [part.strip() for part in value.split(",") if part.strip()]
    for position, key in enumerate(keys, 1):
        try:
            Fernet(key)
        except ValueError:
            raise ValueError(
                f"key {position} is not a Fernet key (32 url-safe base64-encoded bytes); "
                "make one with `webhook-bridge new-encryption-key`"
            ) from None
    return keys


class Vault:
    def __init__(self, keys: Sequence[str]) -> None:
        self._fernet = MultiFernet([Fernet(key) for key in keys]) if keys else None
        self._fingerprint_keys = [
            hashlib.sha256(b"webhook-bridge request fingerprint\0" + key.encode()).digest()
            for key in keys
        ]

    @property
    def enabled(self) -> bool:
        return self._fernet is not None

    def seal(self, value: str) -> str:
        """`value` encrypted under the newest key (unchanged when no key is configured, but for
        a value that starts as sealed ones do)."""
        if self._fernet is None:
            return _CLEAR + value if value.startswith(PREFIX) else value
        return PREFIX + self._fernet.encrypt(value.encode()).decode()

    def open(self, value: str) -> str:
        """The plain value of something `seal` returned (or stored before keys existed)."""
        if not value.startswith(PREFIX):
            return value
        if value.startswith(_CLEAR):
            return value.removeprefix(_CLEAR)
        if self._fernet is None:
            raise VaultError(
                "a stored secret is encrypted but security.encryption_key is not set; "
                "configure the key it was encrypted with"
            )
        try:
            return self._fernet.decrypt(value.removeprefix(PREFIX).encode()).decode()
        except InvalidToken:
            raise VaultError(
                "no configured security.encryption_key decrypts a stored secret; when rotating, "
                "keep the old key after the new one (new,old)"
            ) from None

    def fingerprint(self, data: bytes) -> str:
        """What a request is recorded by under its Idempotency-Key: an HMAC under a key
        derived from the newest encryption key, so that a reader of the database cannot test
        guesses of the secrets the request carried; without keys its SHA-256 (everything is
        stored in clear then)."""
        if not self._fingerprint_keys:
            return hashlib.sha256(data).hexdigest()
        return hmac.new(self._fingerprint_keys[0], data, "sha256").hexdigest()

    def matches(self, fingerprint: str, data: bytes) -> bool:
        """Whether `fingerprint` is `data`'s under any configured key, or its SHA-256 (recorded
        before a key was set)."""
        candidates = [hmac.new(key, data, "sha256").hexdigest() for key in self._fingerprint_keys]
        candidates.append(hashlib.sha256(data).hexdigest())
        return any(hmac.compare_digest(fingerprint, candidate) for candidate in candidates)


def new_key() -> str:
    return Fernet.generate_key().decode()
