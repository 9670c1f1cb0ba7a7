"""axe-core finds no accessibility violation on the dashboard's pages: the sign-in form, the
list, a watch's page with its generated images (a thumbnail and a link), and an error page;
in the light and the dark colour scheme, since the colours differ."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.browser.conftest import (
    Dashboard,
    OpenContext,
    axe_violations,
    expect,
    finished_with_images,
    sign_in,
)
from tests.browser.image_server import ImageServer
from tests.e2e.harness import Upstream

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_pages_have_no_axe_violations(
    new_context: OpenContext,
    dashboard: Dashboard,
    upstream: Upstream,
    images: ImageServer,
    scheme: str,
) -> None:
    """Each page, scanned once it shows what it is about (the watch page once its thumbnail
    loaded), has no violation of any rule axe-core runs by default."""
    watch_id, _, _ = finished_with_images(dashboard, upstream, images)
    page: Page = new_context(color_scheme=scheme).new_page()
    found: dict[str, list[str]] = {}

    page.goto("/ui/login")
    found["sign-in"] = axe_violations(page)
    sign_in(page, "images")
    expect(page.locator("#watches tr[data-watch-id]").first).to_be_visible()
    found["list"] = axe_violations(page)
    page.goto(f"/ui/watches/{watch_id}")
    thumbnail = page.locator("#images img")
    expect(page.locator("#images li.link-only")).to_have_count(1)
    page.wait_for_function("img => img.complete", arg=thumbnail.element_handle())
    found["watch with images"] = axe_violations(page)
    page.goto("/ui/watches/wch_0000000000000000")
    found["not found"] = axe_violations(page)

    assert {name: lines for name, lines in found.items() if lines} == {}
