"""Live updates in a real browser keep the reader's place: the keyboard focus stays on the same
element (found again by its id or its watch), opened sections stay open, and each status change
is said in the page's polite live region; axe-core finds no violation once they happened.

Tenant `focus` is this module's. A test first waits for the update to reach the page (a
status only the new part shows), then checks what the swap kept."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser.conftest import ENDLESS, Dashboard, axe_violations, sign_in
from tests.e2e.harness import Receiver, Upstream, unique

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def focused_row(page: Page) -> str | None:
    """The watch id of the list row holding the focus, if any."""
    found: str | None = page.evaluate(
        "document.activeElement.closest('tr[data-watch-id]')?.dataset.watchId ?? null"
    )
    return found


def test_the_watch_page_keeps_focus_and_open_sections_and_says_delivered(
    page: Page, dashboard: Dashboard, upstream: Upstream, receiver: Receiver
) -> None:
    """The Metadata section opened from the keyboard, its summary focused: when the job ends and
    the webhook is delivered, the page's live part is swapped, and the summary still has the
    focus, the section is open, and the live region says the watch was delivered."""
    api = dashboard.api("focus")
    # Long enough to open the page while the job runs on a loaded machine, short to wait for.
    job = upstream.create_job(queue_positions=0, processing_s=10)
    watch = api.register(
        job_id=job, callback_url=receiver.callback(unique("focus")), metadata={"order": "A-17"}
    )
    sign_in(page, "focus")
    page.goto(f"/ui/watches/{watch['id']}")
    announcer = page.locator("#announcer")
    expect(announcer).to_have_attribute("aria-live", "polite")
    expect(announcer).to_have_text("")
    summary = page.locator("#metadata-section summary")
    summary.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#metadata-section")).to_have_attribute("open", "")
    expect(page.locator("#metadata")).to_contain_text("A-17")
    assert page.locator("#watch-status").get_attribute("data-status") == "active", (
        "the job ended before the test could focus the page; give it longer"
    )

    expect(page.locator("#watch-status")).to_have_attribute(
        "data-status", "delivered", timeout=30_000
    )
    expect(page.locator("#live-region")).to_have_attribute("data-updated", re.compile(r"\d+"))
    expect(summary).to_be_focused()
    expect(page.locator("#metadata-section")).to_have_attribute("open", "")
    expect(announcer).to_have_text(f"Job {job}: succeeded, delivery delivered.")
    assert axe_violations(page) == []


def test_focus_on_a_button_that_goes_away_moves_to_the_main_part(
    page: Page, dashboard: Dashboard, upstream: Upstream
) -> None:
    """The focused Cancel button disappears when the watch is cancelled elsewhere: the focus
    goes to the main part (not to the top of the page) and the change is said."""
    api = dashboard.api("focus")
    watch = api.register(job_id=upstream.create_job(**ENDLESS))
    sign_in(page, "focus")
    page.goto(f"/ui/watches/{watch['id']}")
    cancel = page.locator("form.cancel button")
    cancel.focus()
    expect(cancel).to_be_focused()

    api.client.delete(f"/v1/watches/{watch['id']}").raise_for_status()
    expect(page.locator("#watch-status")).to_have_attribute("data-status", "cancelled")
    expect(cancel).to_have_count(0)
    expect(page.locator("#main")).to_be_focused()
    expect(page.locator("#announcer")).to_have_text(f"Job {watch['job_id']}: cancelled.")


def test_the_list_keeps_focus_on_its_row_as_rows_come_and_change(
    page: Page, dashboard: Dashboard, upstream: Upstream
) -> None:
    """A row's link has the focus: a watch registered meanwhile comes on top (every row moves
    down) and another is cancelled; after each update the same watch's link has the focus,
    and the live region names the new watch, then the cancelled one."""
    api = dashboard.api("focus")
    kept = api.register(job_id=upstream.create_job(**ENDLESS))
    other = api.register(job_id=upstream.create_job(**ENDLESS))
    sign_in(page, "focus")
    link = page.locator(f'tr[data-watch-id="{kept["id"]}"] a')
    link.focus()
    expect(link).to_be_focused()
    announcer = page.locator("#announcer")

    new = api.register(job_id=upstream.create_job(**ENDLESS))
    expect(page.locator("#watches tr[data-watch-id]").first).to_have_attribute(
        "data-watch-id", new["id"]
    )
    expect(announcer).to_have_text(f"Job {new['job_id']}: in progress.")
    expect(link).to_be_focused()
    assert focused_row(page) == kept["id"]

    api.client.delete(f"/v1/watches/{other['id']}").raise_for_status()
    expect(announcer).to_have_text(f"Job {other['job_id']}: cancelled.")
    expect(link).to_be_focused()
    assert focused_row(page) == kept["id"]
    assert axe_violations(page) == []
