"""`ui.image_hosts` entries: what is accepted as which CSP source, what is refused and why, and
which image URLs each entry allows (as a browser applying that source would)."""

from __future__ import annotations

import pytest

from service import image_hosts


@pytest.mark.parametrize(
    ("entry", "source"),
    [
        ("images.example.com", "https://images.example.com"),  # https only by default
        ("Images.Example.COM", "https://images.example.com"),  # names are case-insensitive
        ("https://images.example.com", "https://images.example.com"),  # the default, written
        ("https://images.example.com/", "https://images.example.com"),  # an origin as shown
        ("http://images.internal:8081", "http://images.internal:8081"),  # plain http, asked
        ("cdn.example.com:8443", "https://cdn.example.com:8443"),
        ("*.example.com", "https://*.example.com"),
        ("203.0.113.7", "https://203.0.113.7"),
        ("[2001:db8::1]:8443", "https://[2001:db8::1]:8443"),
        ("  images.example.com ", "https://images.example.com"),
    ],
)
def test_accepted_entries_and_their_sources(entry: str, source: str) -> None:
    """Each accepted form, as the policy's img-src writes it."""
    assert image_hosts.parse(entry).source == source


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("https:", "is a scheme, not a host"),  # would allow every https image
        ("https://", "is a scheme, not a host"),
        ("data:", "is a scheme, not a host"),
        ("ftp://images.example.com", "has a scheme other than http:// or https://"),
        ("https://images.example.com/cats", "is a URL with a path; give its host alone"),
        ("images.example.com?size=s", "is a URL with a path; give its host alone"),
        ("*", "would allow every host"),
        ("*.com", "would allow every host of a top-level domain"),
        ("'self'", "is not a host"),  # policy keywords are not hosts
        ("images.example.com; script-src *", "is not a host"),  # nor is policy text
        ("user@images.example.com", "is not a host"),
        ("img.*.example.com", "is not a host"),
        ("images.example.com:0", "has a port out of range"),
        ("images.example.com:70000", "has a port out of range"),
        ("", "an empty entry is not a host"),
    ],
)
def test_refused_entries_say_why_and_what_to_write(entry: str, problem: str) -> None:
    """Every refusal names the slip, then the forms an entry may take."""
    with pytest.raises(ValueError, match="an entry is a host such as") as refused:
        image_hosts.parse(entry)
    assert problem in str(refused.value)


@pytest.mark.parametrize(
    ("entry", "url", "allowed"),
    [
        ("images.example.com", "https://images.example.com/a.webp", True),
        ("images.example.com", "https://IMAGES.example.com/a.webp", True),
        ("images.example.com", "https://images.example.com:443/a.webp", True),  # default port
        ("images.example.com", "http://images.example.com/a.webp", False),  # https only
        ("images.example.com", "https://images.example.com:8443/a.webp", False),
        ("images.example.com", "https://other.example.com/a.webp", False),
        ("images.example.com", "https://images.example.com.evil.example/a.webp", False),
        ("images.example.com", "javascript://images.example.com/%0aalert(1)", False),
        ("http://images.internal:8081", "http://images.internal:8081/a.png", True),
        ("http://images.internal:8081", "https://images.internal:8081/a.png", True),  # upgrade
        ("http://images.internal:8081", "http://images.internal/a.png", False),
        ("http://images.internal", "https://images.internal/a.png", True),  # 443 for https
        ("*.example.com", "https://a.example.com/x.png", True),
        ("*.example.com", "https://a.b.example.com/x.png", True),
        ("*.example.com", "https://example.com/x.png", False),  # not the domain itself
        ("*.example.com", "https://badexample.com/x.png", False),
        ("[2001:db8::1]", "https://[2001:db8::1]/x.png", True),
        ("images.example.com", "https://images.example.com:bad/x.png", False),
    ],
)
def test_which_urls_an_entry_allows(entry: str, url: str, allowed: bool) -> None:
    """Scheme, host and port as CSP Level 3 matches a URL against the entry's source."""
    assert image_hosts.parse(entry).allows(url) is allowed
