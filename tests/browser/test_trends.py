"""Durations and trends in a real browser: the list's charts of the last day (drawn as inline
SVG, named for screen readers, their figures in a table), a watch's durations, and no axe-core
violation on either, at a desktop's and a phone's width, in both colour schemes."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from tests.browser.conftest import (
    PHONE,
    Dashboard,
    OpenContext,
    Shoot,
    axe_violations,
    expect,
    sign_in,
)
from tests.e2e.harness import Receiver, Upstream

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser
TENANT = "trends"


@pytest.fixture(scope="module")
def the_day(dashboard: Dashboard, upstream: Upstream, receiver: Receiver) -> str:
    """Four watches of tenant `trends`, ended: a job seen queued, processing and succeeded, its
    webhook delivered (its id is returned); a failed job; a job that timed out; a job whose
    webhook failed (the receiver answered 404, a final status)."""
    api = dashboard.api(TENANT)
    slow = upstream.create_job(queue_positions=1, seconds_per_position=1, processing_s=1.5)
    watches = [
        api.register(job_id=slow, callback_url=receiver.callback("trends-ok")),
        api.register(
            job_id=upstream.create_job(queue_positions=0, processing_s=0.3, outcome="failed"),
            callback_url=receiver.callback("trends-failed-job"),
        ),
        api.register(
            job_id=upstream.create_job(queue_positions=100_000), timeout_s=1,
            callback_url=receiver.callback("trends-timed-out"),
        ),
        api.register(
            job_id=upstream.create_job(queue_positions=0, processing_s=0),
            callback_url=receiver.callback("trends-refused", respond="404"), final_statuses=[404],
        ),
    ]  # fmt: skip
    ids = [watch["id"] for watch in watches]
    api.wait_all(ids[:3], "delivered")
    api.wait_all(ids[3:], "failed")
    first: str = ids[0]
    return first


def column_sums(page: Page) -> list[int]:
    """The table of each hour, summed per column (the counts: jobs succeeded, failed, timed
    out, webhooks delivered, failed)."""
    rows: list[list[str]] = page.locator("#trend-table tbody tr").evaluate_all(
        "rows => rows.map(row => [...row.querySelectorAll('td')].map(td => td.textContent))"
    )
    assert len(rows) == 24
    return [sum(int(row[i]) for row in rows) for i in range(5)]


def test_the_list_charts_the_last_day(new_context: OpenContext, the_day: str, shoot: Shoot) -> None:
    """The totals count each watch once; each chart is an image named by its title and what it
    shows; the figures of each hour open in a table whose columns add up to the totals."""
    page = new_context().new_page()
    sign_in(page, TENANT)

    expect(page.locator("#trend-totals")).to_contain_text(
        "4 jobs ended (2 succeeded, 1 failed, 1 timed out); 4 webhooks to callbacks ended "
        "(3 delivered, 1 failed)."
    )
    jobs = page.get_by_role("img", name=re.compile(r"^Jobs that ended, per hour In the last"))
    expect(jobs).to_be_visible()
    expect(jobs).to_have_accessible_name(re.compile("2 succeeded, 1 failed, 1 timed out"))
    expect(page.get_by_role("img", name=re.compile("^Webhooks that ended"))).to_be_visible()
    expect(page.get_by_role("img", name=re.compile("^Time to deliver"))).to_be_visible()
    expect(page.locator("#trend-table")).to_be_hidden()

    page.get_by_text("The figures of each hour").click()
    expect(page.locator("#trend-table")).to_be_visible()
    assert column_sums(page) == [2, 1, 1, 3, 1]
    shoot(page, "trends")


def test_a_watch_page_shows_its_durations(
    new_context: OpenContext, the_day: str, shoot: Shoot
) -> None:
    """The watch seen queued, then processing, then delivered: a time for each step."""
    page = new_context().new_page()
    sign_in(page, TENANT)
    page.goto(f"/ui/watches/{the_day}")
    page.locator("#durations-title").evaluate("title => title.scrollIntoView()")
    shoot(page, "watch-durations")

    for step in ("queue", "processing", "delivery"):
        value = page.locator(f'#durations [data-step="{step}"] data').get_attribute("value")
        assert value is not None
        assert float(value) >= 0, step
    processing = page.locator('#durations [data-step="processing"] data').get_attribute("value")
    assert float(processing or 0) >= 1.0  # the job processed for 1.5 s


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_the_charts_and_durations_have_no_axe_violations(
    new_context: OpenContext, the_day: str, scheme: str, viewport: str
) -> None:
    """The list with its charts and its table of figures open, and a watch's page with its
    durations: no violation of any rule axe-core runs, at 1280 and 360 px wide."""
    size = {"viewport": PHONE} if viewport == "phone" else {}
    page = new_context(color_scheme=scheme, **size).new_page()
    sign_in(page, TENANT)
    page.get_by_text("The figures of each hour").click()
    expect(page.locator("#trend-table")).to_be_visible()
    found = {"list": axe_violations(page)}
    page.goto(f"/ui/watches/{the_day}")
    expect(page.locator("#durations")).to_be_visible()
    found["watch"] = axe_violations(page)

    assert {name: lines for name, lines in found.items() if lines} == {}
