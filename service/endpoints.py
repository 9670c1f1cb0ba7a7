"""Callback endpoints: each callback URL worked out once (the URL without its userinfo, the
Basic credentials the userinfo stood for, its host key), and the signed headers of a webhook
to it."""

from __future__ import annotations

import base64
import functools
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

from service import USER_AGENT
from service.config import DeliverySettings
from service.signing import sign
from service.store.base import Delivery, callback_host
from service.vault import Vault, VaultError

# Callback URLs kept worked out: the busiest ones stay, as a claim's deliveries mostly go to
# few receivers.
KEPT = 1024


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str  # without userinfo
    authorization: str | None  # the Basic credentials of the userinfo
    host: str  # what the per-host limit counts it under


@functools.lru_cache(maxsize=KEPT)
def endpoint_of(callback_url: str) -> Endpoint:
    url, authorization = split_credentials(callback_url)
    return Endpoint(url, authorization, callback_host(callback_url))


class Endpoints:
    def __init__(self, settings: DeliverySettings, vault: Vault) -> None:
        self._settings = settings
        self._vault = vault

    def headers(self, delivery: Delivery, endpoint: Endpoint, now: float) -> dict[str, str] | str:
        """The headers of an attempt of `delivery` made at `now`, signed; or why it cannot
        be made."""
        vault = self._vault
        try:
            secrets = self._secrets(delivery.secret, now)
            until = delivery.previous_secret_until
            if until is not None and now < until:  # a rotation's overlap: the old ones sign too
                secrets += self._secrets(delivery.previous_secret, now)
            if not secrets:
                return "no delivery.signing_secrets is configured to sign this watch"
            headers = {k: vault.open(v) for k, v in delivery.callback_headers.items()}
        except VaultError as unreadable:
            return unreadable.message
        if endpoint.authorization:
            headers["authorization"] = endpoint.authorization
        headers["content-type"] = "application/json"
        headers["user-agent"] = USER_AGENT
        # The start of the answer is kept as text for the attempt log: not compressed, please.
        headers["accept-encoding"] = "identity"
        headers.update(sign(delivery.id, delivery.body, now, secrets))
        return headers

    def _secrets(self, sealed: str, now: float) -> list[str]:
        """The secrets `sealed` stands for: itself opened, or "" the configured ones."""
        return [self._vault.open(sealed)] if sealed else self._settings.signing_secrets_at(now)


def split_credentials(url: str) -> tuple[str, str | None]:
    """The URL without userinfo, and the Basic `Authorization` value the userinfo stood for."""
    if "@" not in url:  # the common case, without parsing
        return url, None
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    netloc = parts.netloc.rsplit("@", 1)[1]
    user, password = unquote(parts.username), unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return urlunsplit(parts._replace(netloc=netloc)), f"Basic {token}"
