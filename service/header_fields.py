"""Pure: the grammar of the header fields the bridge sends as it is told, the same for a callback's
or a subscription's headers (the API) and an upstream profile's (the configuration); each caller
keeps its own bounds on how many and how long."""

from __future__ import annotations

import re
from collections.abc import Mapping

# tchar (RFC 9110, 5.6.2): a field name is a token of one or more of these.
NAME_CHARACTERS = "A-Za-z0-9!#$%&'*+.^_`|~-"
_NAME = re.compile(f"[{NAME_CHARACTERS}]+")


def check_name(name: str) -> str:
    """`name` if it is a field name; a ValueError naming it otherwise."""
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a valid header name: use letters, digits and !#$%&'*+-.^_`|~ only"
        )
    return name


def check_fields(headers: Mapping[str, str]) -> None:
    """A ValueError naming the first header that is not a field name and value, or whose name
    comes twice: names ignore case, and the receiver would keep one or join both."""
    seen: set[str] = set()
    for name, value in headers.items():
        check_name(name)
        if name.lower() in seen:
            raise ValueError(f"names {name!r} twice (header names ignore case)")
        seen.add(name.lower())
        # Visible ASCII and spaces: CR, LF and NUL would end the header or the request, other
        # control characters are refused by servers, and the HTTP clients send text as ASCII.
        if not (value.isascii() and value.isprintable()):
            raise ValueError(
                f"the value of {name!r} must be one line of printable ASCII characters"
            )
