"""Pure: the hosts the dashboard may load generated images from (`ui.image_hosts`).

One parsed entry gives both the source the pages' Content-Security-Policy lists in `img-src` and
the rule that decides whether an image URL is shown as a thumbnail, so the page never offers a
thumbnail the policy would block. An entry is a host (`images.example.com`, an IPv4 address,
`[2001:db8::1]`), or `*.example.com` for every subdomain of example.com (not example.com
itself), with an optional `:port`. Images from it load over https only; written `http://host`,
plain http is allowed too (a local image server; an https page blocks or upgrades such images
anyway). `https://host` is the same as `host`. Paths, bare schemes, `*` and CSP keywords are
refused: the setting names hosts, it is not policy text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

# A DNS name or IPv4 address (dot-separated labels, no trailing dot), `*.` and a domain, or a
# bracketed IPv6 address; then an optional port.
_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
_ENTRY = re.compile(
    rf"(?P<host>(?P<wildcard>\*\.)?{_LABEL}(\.{_LABEL})*|\[[0-9a-f:.]+\])"
    r"(:(?P<port>[0-9]{1,5}))?"
)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_FORM = (
    "an entry is a host such as images.example.com, *.example.com for its subdomains, or "
    "host:port (images then load over https only; write http://host to allow plain http)"
)


@dataclass(frozen=True, slots=True)
class ImageHost:
    scheme: Literal["http", "https"]  # "http" also allows https, as CSP does
    host: str  # lower case; "*.example.com" for subdomains; "[::1]" for an IPv6 address
    port: int | None  # None: the scheme's default port

    @property
    def source(self) -> str:
        """The host as a CSP source expression."""
        port = "" if self.port is None else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}"

    def allows(self, url: str) -> bool:
        """Whether a browser applying `img-src` with this source would load `url` (CSP Level 3
        "does url match expression", the rare upgrades from port 80 to 443 left out)."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return False
        scheme, name = parts.scheme.lower(), (parts.hostname or "").lower()
        if scheme != "https" and not (scheme == "http" and self.scheme == "http"):
            return False
        if ":" in name:
            name = f"[{name}]"
        if self.host.startswith("*."):
            if not name.endswith(self.host[1:]):
                return False
        elif name != self.host:
            return False
        return (port or _DEFAULT_PORTS[scheme]) == (self.port or _DEFAULT_PORTS[scheme])


def parse(entry: str) -> ImageHost:
    """One entry of `ui.image_hosts`; a ValueError saying what is wrong and what to write."""
    text = entry.strip().lower()
    scheme: Literal["http", "https"] = "https"
    if text.startswith("http://"):
        scheme, text = "http", text.removeprefix("http://")
    elif text.startswith("https://"):
        text = text.removeprefix("https://")
    elif not text:
        raise ValueError(f"an empty entry is not a host; {_FORM}")
    found = _ENTRY.fullmatch(text.removesuffix("/"))  # an origin as browsers show it
    problem = _problem(text) if found is None else _bad_host(found)
    if problem is not None or found is None:
        raise ValueError(f"{entry!r} {problem or 'is not a host'}; {_FORM}")
    port = found["port"]
    return ImageHost(scheme, found["host"], None if port is None else int(port))


def _problem(text: str) -> str | None:
    """Why `text` (the entry without http:// or https://) is not a host, for the usual slips."""
    if not text or re.fullmatch(r"[a-z][a-z0-9+.-]*:(//)?", text):
        return "is a scheme, not a host"
    if "://" in text:
        return "has a scheme other than http:// or https://"
    if text == "*":
        return "would allow every host"
    host = re.split(r"[/?#]", text, maxsplit=1)[0]
    if host != text:
        return f"is a URL with a path; give its host alone ({host})"
    return None


def _bad_host(found: re.Match[str]) -> str | None:
    port = found["port"]
    if port is not None and not 1 <= int(port) <= 65535:
        return "has a port out of range (1 to 65535)"
    if found["wildcard"] and "." not in found["host"][2:]:
        return "would allow every host of a top-level domain"
    return None


def allowed(url: str, hosts: tuple[ImageHost, ...]) -> bool:
    """Whether the page may load `url` as an image: one of `hosts` allows it."""
    return any(host.allows(url) for host in hosts)
