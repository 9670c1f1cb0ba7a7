"""Standard Webhooks signing secrets: making, checking and signing with them."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets
from collections.abc import Sequence

PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh secret: `whsec_` and the base64 of 32 random bytes."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def endpoint_secret(given: str | None, shared_configured: bool) -> str:
    """The secret an endpoint (a watch's callback, a subscription) signs with: the one it was
    given; else "" when configured signing secrets sign for it; else a new one."""
    if given is not None:
        return given
    return "" if shared_configured else new_secret()


def check_secret(secret: str) -> str:
    """`secret` when it is `whsec_` + base64 of 24 to 64 bytes; else ValueError saying why."""
    if not secret.startswith(PREFIX):
        raise ValueError("must start with whsec_ followed by base64 of 24 to 64 random bytes")
    try:
        raw = base64.b64decode(secret.removeprefix(PREFIX), validate=True)
    except binascii.Error:
        raise ValueError("must be whsec_ followed by valid base64") from None
    if not 24 <= len(raw) <= 64:
        raise ValueError(f"must encode 24 to 64 bytes, not {len(raw)}")
    return secret


def sign(message_id: str, body: bytes, timestamp: float, secrets: Sequence[str]) -> dict[str, str]:
    """The Standard Webhooks headers for one attempt (the timestamp is the attempt's). With
    several secrets (a rotation), one signature each, space-separated.

    Each signature is `v1,` and the base64 HMAC-SHA256, keyed with the secret's bytes, of
    `{id}.{timestamp}.{body}` (what the `standardwebhooks` library computes)."""
    stamp = str(int(timestamp))
    signed = b"%s.%s.%s" % (message_id.encode(), stamp.encode(), body)
    # hmac.new, not hmac.digest: the one-shot call releases the GIL around every signature
    # (hmac.new only for messages of 2 KiB or more), and on the delivery path each release
    # lets the store's thread take the interpreter from the event loop.
    signatures = [
        "v1," + base64.b64encode(hmac.new(_key(s), signed, hashlib.sha256).digest()).decode()
        for s in secrets
    ]
    return {
        "webhook-id": message_id,
        "webhook-timestamp": stamp,
        "webhook-signature": " ".join(signatures),
    }


@functools.lru_cache(maxsize=1024)
def _key(secret: str) -> bytes:
    # As the library reads it: after the prefix, base64 that may lack its padding.
    return base64.b64decode(secret.removeprefix(PREFIX) + "==")
