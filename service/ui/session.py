"""Dashboard sign-ins and CSRF tokens, signed by the bridge.

The `bridge_ui` cookie holds `token.expiry.id.mac`: the name of the token signed in with
(base64url), the Unix time the sign-in ends, the sign-in's random id, and an HMAC-SHA256 of the
three and of the token's configured digest. The token itself is never kept: it is checked once,
at sign-in, by the API's `Authenticator`. Changing or removing a token ends its sign-ins (the
digest no longer matches). The token's tenant and role are read from the settings at each
request, so a token made a viewer acts no more from then on.

`verify` checks the signature and the expiry only. Signing out records the id as revoked in the
store, which every replica reads (`service.ui.dashboard`): a copy of the cookie is then refused
everywhere, though its signature is still good.

The key: derived from `security.encryption_key` when one is set (sign-ins survive a restart and
are good on every replica sharing it), else random per process (a restart, or another replica,
asks to sign in again).

A form's CSRF token is an HMAC of the cookie's value under the same key (a value tied to the
sign-in, unknown to another site, which cannot read the cookie).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from service.config import Settings

COOKIE = "bridge_ui"
# A sign-in's id: 16 random bytes in base64url.
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{22}")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Session:
    tenant: str
    expires_at: int
    value: str  # the cookie's value ("" when the bridge has no tokens: no cookie needed)
    id: str = ""  # what a sign-out revokes ("" without tokens: there is no sign-in to end)
    read_only: bool = False  # signed in with a viewer token: it sees, never acts


class Sessions:
    def __init__(self, settings: Settings) -> None:
        keys = settings.security.encryption_keys
        self._key = (
            hashlib.sha256(b"webhook-bridge ui session\0" + keys[0].encode()).digest()
            if keys
            else secrets.token_bytes(32)
        )
        self._tokens = {token.name: token for token in settings.auth.tokens}
        self.lifetime_s = int(settings.ui.session_hours * 3600)

    @property
    def open(self) -> bool:
        """True when the bridge has no tokens: the dashboard is the anonymous tenant's."""
        return not self._tokens

    def issue(self, token: str, now: float) -> Session:
        """A sign-in with the token named `token` (the tenant's and role are its own)."""
        expires_at = int(now) + self.lifetime_s
        name = _b64(token.encode())
        session_id = secrets.token_urlsafe(16)
        value = f"{name}.{expires_at}.{session_id}.{self._mac(token, expires_at, session_id)}"
        return self._session(token, expires_at, value, session_id)

    def _session(self, token: str, expires_at: int, value: str, session_id: str) -> Session:
        found = self._tokens[token]
        return Session(found.tenant_name, expires_at, value, session_id, found.read_only)

    def verify(self, value: str | None, now: float) -> Session | None:
        """The sign-in the cookie's value proves, or None (absent, forged, expired, or its
        token changed); whether it was signed out is the store's to say. Without tokens, the
        anonymous tenant's, cookie or not."""
        if self.open:
            return Session("", 0, "")
        if not value or value.count(".") != 3:
            return None
        name, expiry, session_id, mac = value.split(".")
        try:
            token = _unb64(name).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        if not (expiry.isascii() and expiry.isdigit()) or len(expiry) > 12:
            return None
        expires_at = int(expiry)
        if token not in self._tokens or expires_at <= now or not _SESSION_ID.fullmatch(session_id):
            return None
        expected = self._mac(token, expires_at, session_id)
        if not hmac.compare_digest(mac.encode(), expected.encode()):
            return None
        return self._session(token, expires_at, value, session_id)

    def csrf(self, session: Session) -> str:
        return _b64(hmac.digest(self._key, b"csrf\0" + session.value.encode(), "sha256"))

    def check_csrf(self, session: Session, given: str | None) -> bool:
        expected = self.csrf(session).encode()
        return given is not None and hmac.compare_digest(given.encode(), expected)

    def _mac(self, token: str, expires_at: int, session_id: str) -> str:
        digest = self._tokens[token].digest
        signed = b"%s\0%d\0%s\0%s" % (token.encode(), expires_at, session_id.encode(), digest)
        return _b64(hmac.digest(self._key, b"session\0" + signed, "sha256"))
