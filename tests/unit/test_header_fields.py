"""One header grammar: the headers a client gives its callbacks and subscriptions, and those an
operator's profile sends upstream, are judged by the same rule."""

from __future__ import annotations

import pydantic
import pytest

from service.api.models import SubscriptionRequest
from service.profile import Auth, StatusRequest

URL = "https://hooks.example/in"


def _api_refusal(headers: dict[str, str]) -> str | None:
    try:
        SubscriptionRequest(url=URL, headers=headers)
    except pydantic.ValidationError as error:
        return str(error)
    return None


def _profile_refusal(headers: dict[str, str]) -> str | None:
    try:
        StatusRequest(headers=headers)
    except pydantic.ValidationError as error:
        return str(error)
    return None


@pytest.mark.parametrize(
    ("headers", "valid"),
    [
        ({"X-Api-Version": "7"}, True),
        ({"X-A": "two words"}, True),  # spaces inside a value
        ({"X~Odd!Name#": "v"}, True),  # every name character RFC 9110 allows is a token
        ({"X A": "v"}, False),  # a space in a name
        ({"X-A\n": "v"}, False),
        ({"": "v"}, False),
        ({"X-\u00e9": "v"}, False),  # a name outside ASCII
        ({"X-A": "a\r\nX-B: b"}, False),  # a second header smuggled in
        ({"X-A": "a\0b"}, False),
        # Other control characters are invalid too (RFC 9110, 5.5); servers refuse them.
        ({"X-A": "a\x01b"}, False),
        ({"X-A": "a\x7fb"}, False),
        ({"X-A": "a\tb"}, False),
        # The HTTP clients send str headers as ASCII: an accent fails or turns to mojibake.
        ({"X-A": "caf\u00e9"}, False),
        # Names ignore case: both would go out, and the receiver keeps one or joins them.
        ({"X-Token": "a", "x-token": "b"}, False),
    ],
)
def test_the_api_and_a_profile_take_the_same_headers(headers: dict[str, str], valid: bool) -> None:
    """A header is refused in a profile exactly when the API refuses it, naming it."""
    api, profile = _api_refusal(headers), _profile_refusal(headers)
    assert (api is None, profile is None) == (valid, valid)
    if not valid:
        named = repr(list(headers)[-1])
        assert named in (api or "")
        assert named in (profile or "")


@pytest.mark.parametrize(("name", "valid"), [("x-acme-key", True), ("x acme", False)])
def test_an_auth_header_name_follows_the_same_rule(name: str, valid: bool) -> None:
    """The key's own header is a header name like any other."""
    refused = None
    try:
        Auth(scheme="header", name=name)
    except pydantic.ValidationError as error:
        refused = str(error)
    assert (refused is None) == valid
    assert refused is None or repr(name) in refused
