"""The watch page's generated images, in process: thumbnails only from the hosts of
`ui.image_hosts`, which the pages' Content-Security-Policy allows and nothing else; links
otherwise; every URL escaped and opened without a referrer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import orjson
import pytest

from service import events
from service.answers import read_answer
from service.store.base import Completion, NewEvent, Watch
from tests.integration.test_ui import TOKENS, Bridged, serve

HOSTS = ["images.example.com", "http://cdn.example.org:8081", "*.pics.example"]
IMAGES = ["https://images.example.com/a/1.webp", "https://images.example.com/a/2.webp"]


class Images(HTMLParser):
    """The links and images inside the page's `#images` section, attributes unescaped."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.inside = False
        self.links: list[dict[str, str | None]] = []
        self.images: list[dict[str, str | None]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "section":
            self.inside = found.get("id") == "images"
        elif self.inside and tag == "a":
            self.links.append(found)
        elif self.inside and tag == "img":
            self.images.append(found)

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self.inside = False

    @property
    def thumbnails(self) -> list[str | None]:
        return [image["src"] for image in self.images]

    @property
    def hrefs(self) -> list[str | None]:
        return [link["href"] for link in self.links]


def img_src(policy: str) -> list[str]:
    """The sources of the policy's img-src directive."""
    [directive] = [d.split() for d in policy.split(";") if d.split()[0] == "img-src"]
    return directive[1:]


async def finished(ui: Bridged, urls: list[str], envelope: bytes | None = None) -> Watch:
    """A watch of acme (no callback) whose job succeeded with images at `urls`: its final event
    built by the bridge's own `events.envelope`, or `envelope` as stored."""
    store, now = ui.bridge.store, ui.clock.now()
    watch = await store.insert_watch(
        Watch(
            id=f"wch_{int(now * 1000)}im", tenant="acme", job_id="job_pictures",
            callback_url=None, callback_method="POST", callback_headers={}, metadata=None,
            events=("job.succeeded", "job.failed"), payload_format="envelope", secret="whsec_x",
            poll_interval_s=5, timeout_s=600, upstream_api_key=None, created_at=now,
            updated_at=now, next_poll_at=now + 600,
        ),
        lease_owner="test", lease_until=now + 600,
    )  # fmt: skip
    answer = {"id": "job_pictures", "status": "succeeded",
              "output": {"images": [{"url": url} for url in urls]}}  # fmt: skip
    if envelope is None:
        subject = events.Subject(watch.id, watch.job_id, None, "envelope", watch.upstream)
        succeeded = events.terminal_event(read_answer(200, {}, orjson.dumps(answer)))
        envelope = events.envelope(subject, succeeded, now, "evt_1im")
    event = NewEvent("evt_1im", "job.succeeded", True, envelope, None)
    await store.complete_watch(
        "test", now, Completion(watch.id, 1, "succeeded", None, event), now + 600
    )
    ui.clock.advance(0.01)
    return watch


@pytest.fixture
async def plain(tmp_path: Path) -> AsyncIterator[Bridged]:
    """A bridge with the default settings: no image hosts."""
    async for served in serve(tmp_path, BRIDGE_AUTH__TOKENS=TOKENS):
        await served.sign_in()
        yield served


@pytest.fixture
async def allowing(tmp_path: Path) -> AsyncIterator[Bridged]:
    """A bridge whose dashboard may load images from `HOSTS`."""
    async for served in serve(
        tmp_path, BRIDGE_AUTH__TOKENS=TOKENS, BRIDGE_UI__IMAGE_HOSTS=json.dumps(HOSTS)
    ):
        await served.sign_in()
        yield served


async def test_without_image_hosts_images_are_links_and_nothing_else_may_load(
    plain: Bridged,
) -> None:
    """By default the policy allows the bridge's own images only, and the page shows each image
    as a link to it (no <img>), opened without a referrer, with a note saying why."""
    watch = await finished(plain, IMAGES)

    page = await plain.client.get(f"/ui/watches/{watch.id}")

    assert img_src(page.headers["content-security-policy"]) == ["'self'"]
    shown = Images(page.text)
    assert shown.hrefs == IMAGES
    assert shown.thumbnails == []
    assert "<img" not in page.text
    for link in shown.links:
        assert link["rel"] == "noopener noreferrer"
        assert link["referrerpolicy"] == "no-referrer"
    assert "ui.image_hosts" in page.text


async def test_every_page_allows_exactly_the_listed_image_hosts(allowing: Bridged) -> None:
    """Each entry becomes one img-src source, https unless written http://; no other directive
    changes."""
    default = (await allowing.client.get("/ui/")).headers["content-security-policy"]
    for path in ("/ui/", "/ui/watches/wch_0123456789", "/ui/nowhere", "/ui/static/nothing"):
        policy = (await allowing.client.get(path)).headers["content-security-policy"]
        assert img_src(policy) == [
            "'self'", "https://images.example.com", "http://cdn.example.org:8081",
            "https://*.pics.example",
        ]  # fmt: skip
        assert policy == default
    assert "default-src 'none'" in default
    assert "script-src 'self';" in default


async def test_only_images_of_listed_hosts_are_thumbnails(allowing: Bridged) -> None:
    """A URL gets a thumbnail when an entry allows its scheme, host and port (as the policy
    does); any other is a link only, and the page says why. The live fragment shows the same."""
    thumbnails = [
        "https://images.example.com/1.webp",
        "https://images.example.com:443/2.webp",  # the default port, written out
        "http://cdn.example.org:8081/3.png",
        "https://cdn.example.org:8081/4.png",  # http:// allows https too, as CSP does
        "https://a.b.pics.example/5.png",  # any depth of subdomain
    ]
    links = [
        "http://images.example.com/6.webp",  # a bare host is https only
        "https://images.example.com:8443/7.webp",  # another port
        "https://pics.example/8.png",  # *. is for subdomains, not the domain itself
        "https://images.example.com.evil.example/9.png",
        "https://elsewhere.example/10.png",
    ]
    watch = await finished(allowing, thumbnails + links)

    for path in (f"/ui/watches/{watch.id}", f"/ui/watches/{watch.id}?fragment=1"):
        page = await allowing.client.get(path)
        shown = Images(page.text)
        assert shown.thumbnails == thumbnails
        assert shown.hrefs == thumbnails + links
        assert len(shown.images) == page.text.count("<img")
        for image in shown.images:
            assert image["referrerpolicy"] == "no-referrer"
            assert image["alt"]
        assert "ui.image_hosts" in page.text


async def test_a_watch_whose_images_are_all_listed_has_no_note(allowing: Bridged) -> None:
    """Every image a thumbnail: each alt text numbers it, and no note about hosts."""
    watch = await finished(allowing, IMAGES)

    page = await allowing.client.get(f"/ui/watches/{watch.id}")

    shown = Images(page.text)
    assert shown.thumbnails == IMAGES
    assert [image["alt"] for image in shown.images] == [
        "Image 1 of 2, full size",
        "Image 2 of 2, full size",
    ]
    assert "ui.image_hosts" not in page.text


async def test_image_urls_are_escaped(allowing: Bridged) -> None:
    """Quotes and markup in an image URL stay inside its attributes, the same URL once
    unescaped."""
    hostile = "https://images.example.com/x.png?a=1&b=\"><script>alert(1)</script>'<b>"
    watch = await finished(allowing, [hostile])

    page = await allowing.client.get(f"/ui/watches/{watch.id}")

    assert "<script>alert" not in page.text
    assert "<b>" not in page.text
    shown = Images(page.text)
    assert shown.thumbnails == [hostile]
    assert shown.hrefs == [hostile]


async def test_urls_of_other_schemes_in_a_stored_event_are_not_shown(allowing: Bridged) -> None:
    """A stored event whose image_urls hold what the bridge would not write today (another
    scheme, a loopback host) shows the rest only."""
    urls: list[Any] = [
        "javascript:alert(1)", "data:image/png;base64,AAAA", "https://127.0.0.1/a.png", 42,
        "https://images.example.com/ok.png",
    ]  # fmt: skip
    envelope = orjson.dumps({"type": "job.succeeded", "image_urls": urls})
    watch = await finished(allowing, [], envelope=envelope)

    page = await allowing.client.get(f"/ui/watches/{watch.id}")

    shown = Images(page.text)
    assert shown.hrefs == ["https://images.example.com/ok.png"]
    assert '="javascript:' not in page.text  # in no attribute (the payload shows it as text)
    assert '="data:' not in page.text


async def test_a_watch_without_images_has_no_images_section(allowing: Bridged) -> None:
    """No image URLs (an active watch): no section, no note."""
    watch_id = await allowing.register()

    page = await allowing.client.get(f"/ui/watches/{watch_id}")

    assert 'id="images"' not in page.text
    assert "ui.image_hosts" not in page.text
