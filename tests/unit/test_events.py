"""The webhook bodies."""

from __future__ import annotations

import orjson
import pytest

from service import events
from service.answers import read_answer

SUBJECT = events.Subject("wch_1", "job_abc123def", {"order": 7}, "envelope", "default")
RAW = events.Subject("wch_1", "job_abc123def", None, "raw", "default")
SUCCEEDED_BODY = (
    b'{"id": "job_abc123def", "status": "succeeded", "output": {"images": '
    b'[{"url": "https://images.betterwaifu.com/abc123/xyz789.webp", "id": "xK9mP2nQ4vR7tY1w"}],'
    b' "seed": 1234567890}}'
)
EVENT_ID = "evt_01jq0000000000000000000000"
ENVELOPE_KEYS = {
    "id", "type", "timestamp", "watch_id", "job_id", "upstream", "status", "image_urls", "error",
    "error_code", "metadata", "data",
}  # fmt: skip


def test_succeeded_envelope() -> None:
    """A succeeded job's envelope carries the image URLs, metadata and the upstream body."""
    event = events.terminal_event(read_answer(200, {}, SUCCEEDED_BODY))
    body = orjson.loads(events.render(SUBJECT, event, 1_767_225_600.5, EVENT_ID))
    assert body == {
        "id": EVENT_ID,
        "type": "job.succeeded",
        "timestamp": "2026-01-01T00:00:00.500Z",
        "watch_id": "wch_1",
        "job_id": "job_abc123def",
        "upstream": "default",
        "status": "succeeded",
        "image_urls": ["https://images.betterwaifu.com/abc123/xyz789.webp"],
        "error": None,
        "error_code": None,
        "metadata": {"order": 7},
        "data": orjson.loads(SUCCEEDED_BODY),
    }


def test_the_event_id_comes_first() -> None:
    """The envelope opens with the event's id, so a receiver reading it sees that first."""
    event = events.bridge_failure("timeout", "no terminal status within 300 s", None)
    assert events.render(SUBJECT, event, 0.0, EVENT_ID).startswith(
        b'{"id":"%s",' % EVENT_ID.encode()
    )


def test_the_envelope_of_a_raw_watch_is_an_envelope() -> None:
    """Subscriptions and the event API get the envelope even of a watch whose own callback gets
    the upstream body."""
    event = events.terminal_event(read_answer(200, {}, SUCCEEDED_BODY))
    body = orjson.loads(events.envelope(RAW, event, 0.0, EVENT_ID))
    assert set(body) == ENVELOPE_KEYS
    assert (body["id"], body["job_id"], body["data"]) == (
        EVENT_ID, "job_abc123def", orjson.loads(SUCCEEDED_BODY),
    )  # fmt: skip


def test_every_key_present_on_a_bridge_failure() -> None:
    """A failure the bridge decides has every envelope key, null where empty."""
    event = events.bridge_failure("timeout", "no terminal status within 300 s", "queued")
    body = orjson.loads(events.render(SUBJECT, event, 0.0, EVENT_ID))
    assert set(body) == ENVELOPE_KEYS
    assert (body["type"], body["status"], body["error_code"]) == ("job.failed", "failed", "timeout")
    assert body["image_urls"] is None
    assert body["data"] is None


def test_upstream_failure_carries_its_message() -> None:
    """An upstream `failed` becomes generation_failed with the upstream's error text."""
    raw = b'{"id": "j", "status": "failed", "error": "Generation failed due to an internal error"}'
    event = events.terminal_event(read_answer(200, {}, raw))
    body = orjson.loads(events.render(SUBJECT, event, 0.0, EVENT_ID))
    assert body["error_code"] == "generation_failed"
    assert body["error"] == "Generation failed due to an internal error"


def test_raw_format_is_the_upstream_body_byte_for_byte() -> None:
    """`raw` sends exactly what the upstream sent, whitespace and key order included."""
    event = events.terminal_event(read_answer(200, {}, SUCCEEDED_BODY))
    assert events.render(RAW, event, 0.0, EVENT_ID) == SUCCEEDED_BODY


def test_raw_bridge_failure_looks_like_an_upstream_failure() -> None:
    """In `raw` format, a bridge-decided failure is shaped like the upstream's failed answer."""
    event = events.bridge_failure("unauthorized", "the upstream refused the API key (401)", None)
    assert orjson.loads(events.render(RAW, event, 0.0, EVENT_ID)) == {
        "id": "job_abc123def",
        "status": "failed",
        "error": "the upstream refused the API key (401)",
        "error_code": "unauthorized",
    }


def test_image_urls_ignores_malformed_entries() -> None:
    """Odd output shapes give the URLs that are there, or None, never a crash."""
    images = [{"url": "https://cdn.example/u.webp"}, {"id": 1}, "x", {"url": 7}]

    def image_urls(output: object) -> list[str] | None:
        answer = orjson.dumps({"status": "succeeded", "output": output})
        return events.image_urls(read_answer(200, {}, answer).outputs)

    assert image_urls({"images": images}) == ["https://cdn.example/u.webp"]
    assert image_urls({"images": "nope"}) is None
    assert events.image_urls(None) is None


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("https://images.betterwaifu.com/abc123/xyz789.webp", True),
        ("http://cdn.example:8080/a.png?sig=1#f", True),
        ("HTTPS://CDN.example/a.png", True),  # the scheme is case-insensitive
        ("https://93.184.215.14/a.png", True),  # a public address
        ("https://[2606:4700::1111]/a.png", True),
        ("https://user:pw@cdn.example/a.png", True),
        # Not an http(s) URL a receiver may fetch.
        ("javascript:alert(1)", False),
        ("data:image/png;base64,iVBORw0KGgo=", False),
        ("file:///etc/passwd", False),
        ("ftp://cdn.example/a.png", False),
        ("//cdn.example/a.png", False),  # no scheme
        ("/images/a.png", False),  # relative
        ("https:///a.png", False),  # no host
        ("https://cdn.example/a b.png", False),  # whitespace
        ("https://cdn.example/a.png\r\nX-Injected: 1", False),
        ("https://[::1/a.png", False),  # unclosed IPv6 bracket
        # Hosts written as non-public addresses, however spelt, or as localhost.
        ("http://169.254.169.254/latest/meta-data/", False),  # link-local, cloud metadata
        ("http://127.0.0.1/a.png", False),  # loopback
        ("http://2130706433/a.png", False),  # loopback, as one decimal number
        ("http://0x7f.1/a.png", False),  # loopback, hex and short
        ("http://10.0.0.5/a.png", False),  # private
        ("http://192.168.1.1./a.png", False),  # private, with a trailing dot
        ("http://[::1]/a.png", False),
        ("http://[fe80::1%25eth0]/a.png", False),  # link-local with a zone id
        ("http://[::ffff:10.0.0.5]/a.png", False),  # IPv4-mapped private
        ("http://localhost/a.png", False),
        ("http://api.localhost./a.png", False),
    ],
)
def test_image_urls_keep_only_what_a_receiver_may_fetch(url: str, kept: bool) -> None:
    """image_urls keeps absolute http(s) URLs of a host not written as a non-public address;
    `data` keeps every URL as the upstream sent it."""
    raw = orjson.dumps({"status": "succeeded", "output": {"images": [{"url": url}]}})
    event = events.terminal_event(read_answer(200, {}, raw))
    body = orjson.loads(events.render(SUBJECT, event, 0.0, EVENT_ID))
    assert body["image_urls"] == ([url] if kept else None)
    assert body["data"]["output"]["images"] == [{"url": url}]
