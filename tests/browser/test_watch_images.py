"""A watch's generated images in a real browser: the thumbnail of an image whose host is in
`ui.image_hosts` really loads (the page's Content-Security-Policy allows it), without a
referrer and without JavaScript; an image of a host not listed is a link, never requested.

The images come from the loopback image server (`conftest.images`), under the listed name
`IMAGE_HOST` and the unlisted `OTHER_IMAGE_HOST`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from tests.browser.conftest import (
    IMAGE_HOST,
    OTHER_IMAGE_HOST,
    Dashboard,
    OpenContext,
    Shoot,
    expect,
    finished_with_images,
    sign_in,
)
from tests.browser.image_server import HEIGHT, WIDTH, ImageServer
from tests.e2e.harness import Upstream, wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Page, Request

pytestmark = pytest.mark.browser


def loaded_size(page: Page, selector: str) -> list[int]:
    """The image's natural size once the browser has it (0 x 0 if it failed to load)."""
    image = page.locator(selector)
    image.scroll_into_view_if_needed()
    page.wait_for_function("img => img.complete", arg=image.element_handle())
    size: list[int] = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    return size


def test_a_thumbnail_loads_from_a_listed_host_and_nothing_from_another(
    page: Page, dashboard: Dashboard, upstream: Upstream, images: ImageServer, shoot: Shoot
) -> None:
    """The listed host's image is a thumbnail the browser loads, sent without a Referer, inside
    a link to the full size that opens safely; the other host's image is a link only, and the
    browser asks that host for nothing."""
    watch_id, listed, other = finished_with_images(dashboard, upstream, images)
    asked: list[str] = []

    def record(request: Request) -> None:
        asked.append(request.url)

    page.on("request", record)
    sign_in(page, "images")
    page.goto(f"/ui/watches/{watch_id}")

    thumbnail = page.locator("#images img")
    expect(thumbnail).to_have_count(1)
    expect(thumbnail).to_have_attribute("src", listed)
    assert loaded_size(page, "#images img") == [WIDTH, HEIGHT]
    full_size = page.get_by_role("link", name=re.compile(r"^Image 1 of 2, full size"))
    expect(full_size).to_have_attribute("href", listed)
    expect(full_size).to_have_attribute("rel", "noopener noreferrer")
    expect(full_size).to_have_attribute("target", "_blank")
    expect(page.get_by_role("link", name=other)).to_have_attribute("href", other)
    [request] = [seen for seen in images.seen_by(IMAGE_HOST) if seen.path in listed]
    assert request.referer is None
    assert listed in asked
    assert images.seen_by(OTHER_IMAGE_HOST) == []
    assert not [url for url in asked if OTHER_IMAGE_HOST in url]
    shoot(page, "watch-images")


def test_a_thumbnail_loads_without_javascript(
    new_context: OpenContext, dashboard: Dashboard, upstream: Upstream, images: ImageServer
) -> None:
    """With JavaScript off the page is the same: the listed host's image loads, the other's
    is not requested."""
    watch_id, listed, _ = finished_with_images(dashboard, upstream, images)
    page = new_context(java_script_enabled=False).new_page()
    sign_in(page, "images")
    page.goto(f"/ui/watches/{watch_id}")

    expect(page.locator("#images img")).to_have_attribute("src", listed)
    wait_until(
        lambda: [seen for seen in images.seen_by(IMAGE_HOST) if seen.path in listed],
        what="the thumbnail to be requested",
    )
    assert images.seen_by(OTHER_IMAGE_HOST) == []
