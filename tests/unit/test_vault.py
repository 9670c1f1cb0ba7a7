"""Secrets at rest: sealing, opening, and key rotation."""

from __future__ import annotations

import hashlib

import pytest

from service.vault import PREFIX, Vault, VaultError, new_key, parse_keys

OLD, NEW = new_key(), new_key()


def test_sealed_values_hide_the_secret_and_open_again() -> None:
    """A sealed value does not contain the secret, is not deterministic, and opens to it."""
    vault = Vault([NEW])
    first, second = vault.seal("whsec_topsecret"), vault.seal("whsec_topsecret")
    assert first.startswith(PREFIX)
    assert "topsecret" not in first
    assert first != second  # a fresh IV each time: equal secrets don't look equal at rest
    assert vault.open(first) == vault.open(second) == "whsec_topsecret"


def test_rotation_keeps_old_values_readable() -> None:
    """With the new key first and the old one kept, old values open and new ones use the new."""
    sealed_before = Vault([OLD]).seal("bw_key")
    rotated = Vault([NEW, OLD])
    assert rotated.open(sealed_before) == "bw_key"
    assert Vault([NEW]).open(rotated.seal("bw_key")) == "bw_key"  # sealed under NEW


def test_a_dropped_key_is_a_clear_error() -> None:
    """A value sealed under a key no longer configured says how to fix the configuration."""
    sealed = Vault([OLD]).seal("bw_key")
    with pytest.raises(VaultError, match="keep the old key after the new one"):
        Vault([NEW]).open(sealed)
    with pytest.raises(VaultError, match="encryption_key is not set"):
        Vault([]).open(sealed)


def test_without_keys_values_pass_through() -> None:
    """With no key configured, values are stored as they are, and plain values always open."""
    assert Vault([]).seal("whsec_x") == "whsec_x"
    assert Vault([NEW]).open("whsec_stored_before_a_key_existed") == (
        "whsec_stored_before_a_key_existed"
    )


@pytest.mark.parametrize("keys", [[], [NEW]])
def test_a_value_that_looks_sealed_opens_as_it_was_given(keys: list[str]) -> None:
    """A client's value that happens to start as a sealed one does (a callback header's) opens
    as it was given, with or without a key: without one it was stored as it was, and every
    delivery failed, saying a secret was encrypted without a key to open it."""
    vault = Vault(keys)
    assert vault.open(vault.seal(f"{PREFIX}abc")) == f"{PREFIX}abc"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"{NEW}", [NEW]),
        (f"{NEW}, {OLD}", [NEW, OLD]),  # newest first, spaces tolerated
        (f"{NEW},,", [NEW]),
    ],
)
def test_parse_keys(value: str, expected: list[str]) -> None:
    """The setting is a comma-separated list of Fernet keys, newest first."""
    assert parse_keys(value) == expected


def test_parse_keys_names_the_bad_key() -> None:
    """A malformed key is refused with its position and how to make a good one."""
    with pytest.raises(ValueError, match=r"key 2 is not a Fernet key.*new-encryption-key"):
        parse_keys(f"{NEW},not-a-key")


def test_cli_makes_a_usable_key(capsys: pytest.CaptureFixture[str]) -> None:
    """`webhook-bridge new-encryption-key` prints a key the vault accepts."""
    from service.cli import main

    assert main(["new-encryption-key"]) == 0
    key = capsys.readouterr().out.strip()
    assert Vault(parse_keys(key)).open(Vault([key]).seal("x")) == "x"


def test_fingerprints_are_keyed_by_the_encryption_key() -> None:
    """With a key, a request's fingerprint is an HMAC no one without the key can recompute
    (guessing the secrets in the request needs the key); it matches under rotation, and a
    SHA-256 recorded before keys existed still matches."""
    request = b'{"job_id":"j","secret":"whsec_guessable"}'
    keyed = Vault([NEW]).fingerprint(request)
    assert keyed != hashlib.sha256(request).hexdigest()
    assert keyed != Vault([OLD]).fingerprint(request)
    assert Vault([NEW]).matches(keyed, request)
    assert Vault([OLD, NEW]).matches(keyed, request)  # rotated: the old key still matches
    assert not Vault([OLD]).matches(keyed, request)
    assert not Vault([NEW]).matches(keyed, request + b" ")
    legacy = hashlib.sha256(request).hexdigest()
    assert Vault([NEW]).matches(legacy, request)
    assert Vault([]).fingerprint(request) == legacy
