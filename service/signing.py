"""Standard Webhooks signing secrets: making, checking and signing with them."""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

import standardwebhooks

PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh secret: `whsec_` and the base64 of 32 random bytes."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


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
    several secrets (a rotation), one signature each, space-separated."""
    moment = datetime.fromtimestamp(int(timestamp), UTC)
    text = body.decode()
    signatures = [standardwebhooks.Webhook(s).sign(message_id, moment, text) for s in secrets]
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": " ".join(signatures),
    }
