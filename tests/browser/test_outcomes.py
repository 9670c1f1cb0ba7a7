"""An operator's first questions, in Chromium: which jobs failed (apart from which webhooks
did), when a failing delivery is tried next and "Retry now" (without JavaScript too), and why a
delivery failed (the receiver's answer, a refused connection in words, retries stopped by a
final status). axe-core finds no violation on these pages, in light and dark.

Each test signs in as a tenant of its own (see `conftest.TENANTS`)."""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser.conftest import (
    AT_ONCE,
    ENDLESS,
    Dashboard,
    OpenContext,
    Shoot,
    axe_violations,
    expect,
    sign_in,
)
from tests.e2e.harness import Receiver, Upstream, unique, wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@dataclass
class Jobs:
    """Watches of tenant `ops` whose jobs and webhooks went different ways."""

    generation_failed: dict[str, Any]  # the job failed; its webhook was delivered
    webhook_failed: dict[str, Any]  # the job succeeded; the receiver refused (a final status)
    timed_out: dict[str, Any]  # the job stayed queued past the watch's timeout


@pytest.fixture(scope="module")
def jobs(dashboard: Dashboard, upstream: Upstream, receiver: Receiver) -> Jobs:
    api = dashboard.api("ops")
    made = Jobs(
        generation_failed=api.register(
            job_id=upstream.create_job(outcome="failed", **AT_ONCE),
            callback_url=receiver.callback(unique("ops")),
        ),
        webhook_failed=api.register(
            job_id=upstream.create_job(**AT_ONCE),
            callback_url=receiver.callback(unique("ops"), respond="404"),
            final_statuses=[404],
        ),
        timed_out=api.register(
            job_id=upstream.create_job(**ENDLESS),
            callback_url=receiver.callback(unique("ops")),
            timeout_s=1,
        ),
    )
    api.wait_for_status(made.generation_failed["id"], "delivered")
    api.wait_for_status(made.webhook_failed["id"], "failed")
    api.wait_for_status(made.timed_out["id"], "delivered")
    return made


def row(page: Page, watch: dict[str, Any]) -> Any:
    return page.locator(f'#watches tr[data-watch-id="{watch["id"]}"]')


def test_failed_jobs_and_failed_webhooks_are_told_apart(
    new_context: OpenContext, jobs: Jobs, shoot: Shoot
) -> None:
    """A failed generation whose webhook was delivered shows Failed / Delivered, a refused
    webhook of a good job Succeeded / Failed, a job that timed out while queued Timed out with
    no queue status left; each filter (without JavaScript) finds its own."""
    page = new_context(java_script_enabled=False).new_page()
    sign_in(page, "ops")
    for watch, job, delivery in (
        (jobs.generation_failed, "Failed", "Delivered"),
        (jobs.webhook_failed, "Succeeded", "Failed"),
        (jobs.timed_out, "Timed out", "Delivered"),
    ):
        expect(row(page, watch).locator("td.outcome")).to_have_text(job)
        expect(row(page, watch).locator("td.delivery")).to_have_text(delivery)
    expect(page.locator('#outcome-counts li[data-outcome="failed"] .count')).to_have_text("1")
    expect(page.locator('#delivery-counts li[data-delivery="failed"] .count')).to_have_text("1")
    # The list itself, below the charts of the last day (see test_trends).
    page.get_by_role("search").evaluate("form => form.scrollIntoView()")
    shoot(page, "list-outcomes")

    for label, value, expected in (
        ("Job outcome", "failed", jobs.generation_failed),
        ("Job outcome", "timed_out", jobs.timed_out),
        ("Delivery", "failed", jobs.webhook_failed),
    ):
        page.goto("/ui/")
        page.get_by_label(label, exact=True).select_option(value)
        page.get_by_role("button", name="Filter").click()
        expect(page.locator("#watches tr[data-watch-id]")).to_have_count(1)
        expect(row(page, expected)).to_be_visible()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_pages_of_outcomes_and_retries_have_no_axe_violations(
    new_context: OpenContext,
    dashboard: Dashboard,
    upstream: Upstream,
    receiver: Receiver,
    jobs: Jobs,
    scheme: str,
) -> None:
    """The list filtered by outcome, a watch whose delivery waits for its next attempt (Retry
    now, the receiver's answer) and one whose retries a final status stopped: no violation of
    any rule axe-core runs by default."""
    api = dashboard.api("ops")
    waiting = api.register(
        job_id=upstream.create_job(**AT_ONCE),
        callback_url=receiver.callback(unique("axe"), respond="503", retry_after=3600),
    )
    wait_until(lambda: api.deliveries(waiting["id"]), 30, what="the first attempt")
    page = new_context(color_scheme=scheme).new_page()
    sign_in(page, "ops")
    found: dict[str, list[str]] = {}

    page.goto("/ui/?outcome=failed&delivery=delivered")
    expect(page.locator("#watches tr[data-watch-id]")).to_have_count(1)
    found["filtered list"] = axe_violations(page)
    page.goto(f"/ui/watches/{waiting['id']}")
    expect(page.locator("#deliveries form.retry")).to_have_count(1)
    found["waiting watch"] = axe_violations(page)
    page.goto(f"/ui/watches/{jobs.webhook_failed['id']}")
    expect(page.locator("#timeline .verdict")).to_have_count(1)
    found["stopped watch"] = axe_violations(page)

    assert {name: lines for name, lines in found.items() if lines} == {}
    api.client.delete(f"/v1/watches/{waiting['id']}")


def test_a_waiting_delivery_says_when_and_retry_now_sends_it_without_javascript(
    new_context: OpenContext,
    dashboard: Dashboard,
    upstream: Upstream,
    receiver: Receiver,
    shoot: Shoot,
) -> None:
    """The receiver answered 503 and asked for an hour: the watch page says the next attempt
    is attempt 2 of the series at that time, shows the receiver's answer; Retry now (a plain form)
    sends it at once, and the delivery and the attempt counter say so."""
    api = dashboard.api("retry")
    path = unique("retry")
    watch = api.register(
        job_id=upstream.create_job(**AT_ONCE),
        callback_url=receiver.callback(path, respond="503,200", retry_after=3600),
    )
    [first] = wait_until(lambda: api.deliveries(watch["id"]), 30, what="the first attempt")
    page = new_context(java_script_enabled=False).new_page()
    sign_in(page, "retry")
    page.goto(f"/ui/watches/{watch['id']}")

    most = first["max_attempts"]  # the first, and one per wait of the bridge's retry schedule
    line = page.locator(f'#deliveries tr[data-delivery-id="{first["webhook_id"]}"]')
    expect(line.locator("td.attempts")).to_have_text(f"1 of {most}")
    expect(line.locator("td.next")).to_contain_text(f"(attempt 2 of {most})")
    expect(line.locator("td.next time")).to_have_attribute("datetime", first["next_attempt_at"])
    answer = page.locator("#timeline li.attempt .answer pre")
    assert json.loads(answer.inner_text()) == {"error": "scripted 503"}
    expect(page.locator("#timeline li.attempt .answer-note")).to_contain_text("application/json")
    expect(page.locator("#timeline li.attempt .verdict")).to_contain_text(
        f"Retry scheduled at {first['next_attempt_at'][:19].replace('T', ' ')} UTC"
    )
    shoot(page, "watch-retry", full_page=True)

    line.get_by_role("button", name=re.compile("^Retry now")).click()

    expect(page).to_have_url(re.compile(f"/ui/watches/{watch['id']}$"))
    expect(page.locator("#flash")).to_contain_text(f"Retry started: attempt 2 of {most}")
    api.wait_for_status(watch["id"], "delivered", timeout=15)
    assert len(receiver.wait_for(path, 2)) == 2
    page.reload()
    expect(line.locator("td.attempts")).to_have_text(f"2 of {most}")
    expect(line).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#deliveries form.retry")).to_have_count(0)
    expect(page.locator("#attempt-count")).to_have_text("2")
    expect(page.locator("#timeline li.attempt")).to_have_count(2)


def test_why_a_delivery_failed_is_said_in_words(
    page: Page, dashboard: Dashboard, upstream: Upstream, jobs: Jobs, shoot: Shoot
) -> None:
    """A 404 the endpoint lists as final: the page says retries stopped for that reason. A
    callback whose port is closed: the attempt says "connection refused"."""
    api = dashboard.api("ops")
    refused = api.register(
        job_id=upstream.create_job(**AT_ONCE),
        callback_url=f"http://127.0.0.1:{closed_port()}/hooks",
    )
    wait_until(lambda: api.deliveries(refused["id"]), 30, what="the first attempt")
    sign_in(page, "ops")

    page.goto(f"/ui/watches/{jobs.webhook_failed['id']}")
    stopped = "Retries stopped: 404 is a final status for this endpoint (final_statuses)."
    expect(page.locator("#timeline .verdict")).to_have_text(stopped)
    expect(page.locator("#deliveries .why")).to_have_text(stopped)
    expect(page.locator("#delivery-state")).to_have_text("Failed")
    expect(page.locator("#job-outcome")).to_have_text("Succeeded")

    page.goto(f"/ui/watches/{refused['id']}")
    expect(page.locator("#timeline li.attempt dd.error").first).to_have_text("connection refused")
    shoot(page, "watch-refused", full_page=True)
    api.client.delete(f"/v1/watches/{refused['id']}")
