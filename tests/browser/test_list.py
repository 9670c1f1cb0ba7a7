"""The list of watches in Chromium as an operator uses it: searched by a job id's start and a
metadata value, a bad value answered in place; a long list at 390 and 1280 px (rows on the
first screen, the page size kept in the URL), the pager reached through its skip link in a few
Tab presses, and relative times with the exact UTC time on hover and focus. axe-core finds
nothing on any of these pages."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from tests.browser.conftest import (
    DESKTOP,
    ENDLESS,
    Dashboard,
    OpenContext,
    Shoot,
    axe_violations,
    expect,
    sign_in,
)
from tests.e2e.harness import Upstream, unique

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser

PHONE_390 = {"width": 390, "height": 844}


def rows(page: Page) -> list[str]:
    found: list[str] = page.locator("#watches tr[data-watch-id]").evaluate_all(
        "rows => rows.map(row => row.dataset.watchId)"
    )
    return found


def rows_on_first_screen(page: Page) -> int:
    """How many rows of the list are wholly inside the viewport, scrolled to the top."""
    page.evaluate("window.scrollTo(0, 0)")
    seen: int = page.locator("#watches tr[data-watch-id]").evaluate_all(
        "rows => rows.filter(row => { const box = row.getBoundingClientRect();"
        " return box.top >= 0 && box.bottom <= window.innerHeight; }).length"
    )
    return seen


def test_search_by_job_id_start_and_metadata_and_a_bad_value_in_place(
    new_context: OpenContext, dashboard: Dashboard, upstream: Upstream, shoot: Shoot
) -> None:
    """The job id box finds ids by their start, the metadata fields an order; an order number
    typed in the job id box gets a message next to the box, every filter still filled in."""
    api = dashboard.api("search")
    stem = unique("ord")
    made = []
    for n, order in enumerate(["A-1", "A-2", "B-7"]):
        job = upstream.create_job(job_id=f"{stem}-{n}", **ENDLESS)
        made.append(api.register(job_id=job, metadata={"order_id": order, "shop": "eu"})["id"])
    other = api.register(job_id=upstream.create_job(**ENDLESS), metadata={"order_id": "A-1"})
    page = new_context().new_page()
    sign_in(page, "search")

    page.get_by_label("Job id, or its start").fill(f"{stem}-")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#total")).to_have_text("3 watches match")
    assert rows(page) == made[::-1]
    expect(page.locator(f'tr[data-watch-id="{made[0]}"] .meta')).to_have_text(
        "order_id: A-1, shop: eu"
    )

    page.get_by_label("Job id, or its start").fill("")
    page.locator("details.more summary").click()
    page.get_by_label("Metadata key").fill("order_id")
    page.get_by_label("Its value").fill("A-1")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#total")).to_have_text("2 watches match")
    assert rows(page) == [other["id"], made[0]]
    expect(page.locator("details.more")).to_have_attribute("open", "")
    shoot(page, "list-search")
    assert axe_violations(page) == []

    page.get_by_label("Job id, or its start").fill("#1234")
    page.get_by_role("button", name="Filter").click()
    box = page.get_by_label("Job id, or its start")
    expect(box).to_have_attribute("aria-invalid", "true")
    expect(box).to_have_accessible_description(re.compile("metadata key and value"))
    expect(box).to_have_value("#1234")
    expect(page.get_by_label("Metadata key")).to_have_value("order_id")
    expect(page.get_by_label("Its value")).to_have_value("A-1")
    expect(page.get_by_role("heading", name="Fix the filters")).to_be_visible()
    shoot(page, "list-search-error")
    assert axe_violations(page) == []


def test_a_long_list_on_a_phone_and_by_keyboard(
    new_context: OpenContext, dashboard: Dashboard, upstream: Upstream, shoot: Shoot
) -> None:
    """60 watches: at 390 px a compact card per row puts several on the first screen; a page
    size of 20 is kept in the Older link; from the top of the page, the skip link reaches the
    pager in 3 Tab presses; times are relative, the exact UTC time on hover and focus."""
    api = dashboard.api("long")
    made = [
        api.register(job_id=upstream.create_job(**ENDLESS), metadata={"order_id": n})["id"]
        for n in range(60)
    ]
    phone = new_context(viewport=PHONE_390).new_page()
    sign_in(phone, "long")
    expect(phone.locator("#total")).to_have_text("60 watches")
    assert rows(phone) == made[::-1][:50]
    shoot(phone, "list-phone")
    on_phone = rows_on_first_screen(phone)
    assert on_phone >= 4, on_phone
    assert axe_violations(phone) == []

    phone.get_by_label("Per page").select_option("20")
    phone.get_by_role("button", name="Filter").click()
    assert rows(phone) == made[::-1][:20]
    older = phone.get_by_role("link", name="Older", exact=True)
    expect(older).to_have_attribute("href", re.compile(r"limit=20"))
    older.click()
    assert rows(phone) == made[::-1][20:40]
    expect(phone).to_have_url(re.compile(r"limit=20"))
    expect(phone.get_by_label("Per page")).to_have_value("20")

    desk = new_context(viewport=DESKTOP).new_page()
    sign_in(desk, "long")
    on_desk = rows_on_first_screen(desk)
    assert on_desk >= 3, on_desk  # below the day's trends, the filters and the counts
    # Tab from the top of the page: the skip links come first.
    desk.locator("body").focus()
    presses = 0
    while presses < 10:
        desk.keyboard.press("Tab")
        presses += 1
        if desk.evaluate("document.activeElement.textContent").startswith("Skip to the pages"):
            break
    desk.keyboard.press("Enter")
    desk.keyboard.press("Tab")
    presses += 1
    expect(desk.locator(":focus")).to_have_text("Older")
    assert presses == 3, presses

    first = desk.locator("#watches tr[data-watch-id] td.created time").first
    expect(first).to_have_text(re.compile(r"^(just now|\d+ s ago|\d+ min ago)$"))
    expect(first).to_have_attribute("title", re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$"))
    expect(first).to_have_attribute("datetime", re.compile(r"^\d{4}-\d\d-\d\dT"))
    desk.locator("#watches tr[data-watch-id] td.job a").first.focus()
    shown = first.evaluate("time => getComputedStyle(time, '::after').content")
    assert re.fullmatch(r'" \(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)"', shown), shown
    assert axe_violations(desk) == []
