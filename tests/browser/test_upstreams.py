"""A bridge with two upstreams in Chromium: the list names each watch's upstream and is filtered
by it (with and without JavaScript, on a desktop and a phone), a watch's page names its
upstream, the health strip shows each upstream's circuit; axe-core finds nothing on any of
these pages."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from tests.browser.conftest import (
    ENDLESS,
    PHONE,
    SECOND_UPSTREAM,
    Dashboard,
    OpenContext,
    Shoot,
    axe_violations,
    expect,
    sign_in,
)
from tests.e2e.harness import Upstream

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser


def upstreams(page: Page) -> dict[str, str]:
    """Each row's upstream cell, by watch id."""
    found: dict[str, str] = page.locator("#watches tr[data-watch-id]").evaluate_all(
        "rows => Object.fromEntries(rows.map(row =>"
        " [row.dataset.watchId, row.querySelector('td.upstream').textContent]))"
    )
    return found


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_the_list_names_and_filters_by_upstream(
    new_context: OpenContext,
    dashboard: Dashboard,
    upstream: Upstream,
    shoot: Shoot,
    javascript: bool,
) -> None:
    """Each row names its upstream; choosing one in the Upstream field and pressing Filter
    lists its watches only, the choice kept in the URL and the field; the watch's page names
    its upstream. (axe-core runs in the page, so with JavaScript on only.)"""

    def no_violations() -> None:
        if javascript:
            assert axe_violations(page) == []

    tenant = f"upstreams-{'js' if javascript else 'nojs'}"
    api = dashboard.api(tenant)
    job = upstream.create_job(**ENDLESS)
    here = api.register(job_id=job)["id"]
    there = api.register(job_id=job, upstream=SECOND_UPSTREAM)["id"]
    page = new_context(java_script_enabled=javascript).new_page()
    sign_in(page, tenant)

    shown = upstreams(page)
    assert (shown[here], shown[there]) == ("default", SECOND_UPSTREAM)
    expect(page.get_by_role("columnheader", name="Upstream")).to_be_visible()
    circuits = page.locator('#health [data-health="circuits"]')
    expect(circuits.locator("dt")).to_have_text("Upstream circuits")
    expect(circuits.locator("dd")).to_have_text(f"default closed, {SECOND_UPSTREAM} closed")
    no_violations()

    page.get_by_text("Upstream, metadata and time").click()  # a <details>: no script needed
    page.get_by_label("Upstream").select_option(SECOND_UPSTREAM)
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(rf"[?&]upstream={SECOND_UPSTREAM}(&|$)"))
    expect(page.locator("#total")).to_have_text("1 watch matches")
    assert list(upstreams(page)) == [there]
    expect(page.get_by_label("Upstream")).to_have_value(SECOND_UPSTREAM)
    expect(page.locator("details.more")).to_have_attribute("open", "")
    shoot(page, f"list-{tenant}")
    no_violations()

    page.locator(f'tr[data-watch-id="{there}"] td.job a').click()
    expect(page.locator("#upstream")).to_have_text(SECOND_UPSTREAM)
    no_violations()


def test_the_upstream_column_on_a_phone(
    new_context: OpenContext, dashboard: Dashboard, upstream: Upstream, shoot: Shoot
) -> None:
    """On a phone the upstream is labelled in each card (the cells' headers are hidden there)."""
    api = dashboard.api("upstreams-phone")
    watch = api.register(job_id=upstream.create_job(**ENDLESS), upstream=SECOND_UPSTREAM)["id"]
    page = new_context(viewport=PHONE).new_page()
    sign_in(page, "upstreams-phone")

    cell = page.locator(f'tr[data-watch-id="{watch}"] td.upstream')
    expect(cell).to_have_text(SECOND_UPSTREAM)
    label = cell.evaluate("cell => getComputedStyle(cell, '::before').content")
    assert label == '"upstream "', label
    shoot(page, "list-upstream-phone")
    assert axe_violations(page) == []
