"""The dashboard in a real browser: sign in, list and filter, a watch's page, live updates,
redeliver and cancel with their confirmations, CSRF, tenants kept apart, a phone's width.

Each test signs in as a tenant of its own (see `conftest.TENANTS`) and waits only through
Playwright's auto-waiting `expect` (deadline `conftest.TIMEOUT_MS`) or the harness's
`wait_until`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser.conftest import (
    AT_ONCE,
    COOKIE,
    ENDLESS,
    PHONE,
    Dashboard,
    OpenContext,
    Shoot,
    expect,
    sign_in,
    token,
)
from tests.e2e.harness import Receiver, Upstream, unique

if TYPE_CHECKING:
    from playwright.sync_api import Dialog, Page, Request

pytestmark = pytest.mark.browser

# A job that is still queued when every test has ended, and one that succeeds at its first poll.


def rows(page: Page) -> list[str]:
    """The watch ids of the list's table, top to bottom."""
    found: list[str] = page.locator("#watches tr[data-watch-id]").evaluate_all(
        "rows => rows.map(row => row.dataset.watchId)"
    )
    return found


def count_of(page: Page, kind: str, value: str) -> Any:
    """The count atop the list of the watches whose `kind` (outcome, delivery) is `value`."""
    return page.locator(f'#counts li[data-{kind}="{value}"] .count')


def stays_on_page(page: Page) -> None:
    """Mark the page's window: the mark is gone if the page is ever loaded again."""
    page.evaluate("window.__notReloaded = true")


def was_not_reloaded(page: Page) -> bool:
    return bool(page.evaluate("window.__notReloaded === true"))


def accept_next_confirm(page: Page, seen: list[str]) -> None:
    def accept(dialog: Dialog) -> None:
        seen.append(dialog.type)
        dialog.accept()

    page.once("dialog", accept)


# Signing in.


def test_sign_in_with_a_token_and_a_wrong_token_is_refused(
    page: Page, dashboard: Dashboard, shoot: Shoot
) -> None:
    """Every page sends a stranger to the login form; a wrong token gets the form again with an
    error (401) and no cookie; the right one lands on the list; signing out ends the session."""
    page.goto("/ui/")
    expect(page).to_have_url(re.compile(r"/ui/login$"))
    page.goto("/ui/watches/wch_0000000000000000")
    expect(page).to_have_url(re.compile(r"/ui/login$"))
    expect(page.get_by_label("API token")).to_be_visible()
    shoot(page, "login")

    page.get_by_label("API token").fill("not-a-token")
    with page.expect_response(lambda r: r.request.method == "POST") as refused:
        page.get_by_role("button", name="Sign in").click()
    assert refused.value.status == 401
    expect(page.get_by_role("alert")).to_be_visible()
    expect(page.get_by_label("API token")).to_be_visible()
    assert [c for c in page.context.cookies() if c["name"] == COOKIE] == []

    sign_in(page, "login")
    expect(page.locator("#watches")).to_be_visible()

    page.get_by_role("button", name=re.compile("sign out", re.I)).click()
    expect(page).to_have_url(re.compile(r"/ui/login$"))
    page.goto("/ui/")
    expect(page).to_have_url(re.compile(r"/ui/login$"))


def test_the_session_cookie_is_out_of_reach_of_scripts_and_other_sites(
    page: Page, dashboard: Dashboard
) -> None:
    """The session cookie is HttpOnly, SameSite=Strict, Secure and scoped to /ui, and it is not
    the API token itself."""
    sign_in(page, "login")
    [cookie] = [c for c in page.context.cookies() if c["name"] == COOKIE]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["secure"] is True
    assert cookie["path"] == "/ui"
    assert token("login") not in cookie["value"]
    assert COOKIE not in page.evaluate("document.cookie")


# The list.


@dataclass
class Listed:
    """The watches of tenant `list`, oldest first, and the status each one ends up in."""

    watches: list[tuple[dict[str, Any], str]]

    def of(self, status: str) -> list[dict[str, Any]]:
        return [watch for watch, reached in self.watches if reached == status]

    @property
    def ids_newest_first(self) -> list[str]:
        return [watch["id"] for watch, _ in reversed(self.watches)]


@pytest.fixture(scope="module")
def listed(dashboard: Dashboard, upstream: Upstream, receiver: Receiver) -> Listed:
    """Two active watches, one completed (no callback), one delivered, one failed (its receiver
    answers 400, one of its final statuses)."""
    api = dashboard.api("list")
    made = [
        (api.register(job_id=upstream.create_job(**ENDLESS)), "active"),
        (api.register(job_id=upstream.create_job(**AT_ONCE)), "completed"),
        (
            api.register(
                job_id=upstream.create_job(**AT_ONCE),
                callback_url=receiver.callback(unique("listed")),
            ),
            "delivered",
        ),
        (
            api.register(
                job_id=upstream.create_job(**AT_ONCE),
                callback_url=receiver.callback(unique("listed"), respond="400"),
                final_statuses=[400],
            ),
            "failed",
        ),
        (api.register(job_id=upstream.create_job(**ENDLESS)), "active"),
    ]
    for watch, status in made:
        api.wait_for_status(watch["id"], status)
    return Listed(made)


# What the list shows of a watch in each status it reaches: its job's outcome and its delivery.
SHOWN = {
    "active": ("In progress", "None"), "completed": ("Succeeded", "None"),
    "delivered": ("Succeeded", "Delivered"), "failed": ("Succeeded", "Failed"),
}  # fmt: skip


def test_the_list_shows_watches_newest_first_with_counts(
    page: Page, listed: Listed, shoot: Shoot
) -> None:
    """The list has the tenant's watches, newest first, each linking to its page with its
    job's outcome and its delivery's state apart, and the count of each at the top (zeros too);
    the health strip is there."""
    sign_in(page, "list")
    expect(page.locator("#watches tr[data-watch-id]")).to_have_count(5)
    assert rows(page) == listed.ids_newest_first
    outcomes = {"in_progress": 2, "succeeded": 3, "failed": 0, "cancelled": 0}
    for outcome, count in outcomes.items():
        expect(count_of(page, "outcome", outcome)).to_have_text(str(count))
    deliveries = {"none": 3, "delivered": 1, "failed": 1, "pending": 0}
    for state, count in deliveries.items():
        expect(count_of(page, "delivery", state)).to_have_text(str(count))
    for watch, status in listed.watches:
        row = page.locator(f'tr[data-watch-id="{watch["id"]}"]')
        job, delivery = SHOWN[status]
        expect(row.locator("td.outcome")).to_contain_text(job)
        expect(row.locator("td.delivery")).to_have_text(delivery)
        expect(row.get_by_role("link", name=watch["job_id"])).to_have_attribute(
            "href", re.compile(f"/ui/watches/{watch['id']}$")
        )
    expect(page.locator("#health")).to_be_visible()
    expect(page.locator("#watches th[scope=col]").first).to_be_visible()
    # The list itself, below the charts of the last day (see test_trends).
    page.get_by_role("search").evaluate("form => form.scrollIntoView()")
    shoot(page, "list")


def test_the_list_filters_by_outcome_delivery_and_job_id_without_javascript(
    new_context: OpenContext, listed: Listed
) -> None:
    """The filter is a plain GET form: it works with JavaScript off, by job outcome, by
    delivery state (the two together), and by job id."""
    page = new_context(java_script_enabled=False).new_page()
    sign_in(page, "list")
    expect(page.locator("#watches tr[data-watch-id]")).to_have_count(5)

    page.get_by_label("Job outcome").select_option("in_progress")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"[?&]outcome=in_progress"))
    expect(page.locator("#watches tr[data-watch-id]")).to_have_count(2)
    assert rows(page) == [watch["id"] for watch in reversed(listed.of("active"))]

    page.goto("/ui/")
    page.get_by_label("Job outcome").select_option("succeeded")
    page.get_by_label("Delivery", exact=True).select_option("failed")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#watches tr[data-watch-id]")).to_have_count(1)
    assert rows(page) == [watch["id"] for watch in listed.of("failed")]

    page.goto("/ui/")
    [failed] = listed.of("failed")
    page.get_by_label("Job id").fill(failed["job_id"])
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"[?&]job_id="))
    expect(page.locator("#watches tr[data-watch-id]")).to_have_count(1)
    assert rows(page) == [failed["id"]]


def test_the_list_updates_live(page: Page, dashboard: Dashboard, upstream: Upstream) -> None:
    """A watch registered while the list is open appears on top, and its count goes up,
    without reloading the page."""
    sign_in(page, "live")
    expect(page.locator("#watches")).to_be_visible()
    before = len(rows(page))
    active = int(count_of(page, "outcome", "in_progress").inner_text())
    stays_on_page(page)

    watch = dashboard.api("live").register(job_id=upstream.create_job(**ENDLESS))
    expect(page.locator(f'#watches tr[data-watch-id="{watch["id"]}"]')).to_be_visible()
    assert rows(page)[0] == watch["id"]
    assert len(rows(page)) == before + 1
    expect(count_of(page, "outcome", "in_progress")).to_have_text(str(active + 1))
    assert was_not_reloaded(page)


# A watch's page.


def test_a_watch_page_follows_its_job_live(
    page: Page, dashboard: Dashboard, upstream: Upstream, receiver: Receiver, shoot: Shoot
) -> None:
    """Opened from the list while the job runs, the page shows the watch `active`; when the
    simulator finishes the job the status becomes `delivered` and the timeline gains the
    delivery attempt (200) without a reload; the payload shown is the body the receiver got."""
    api = dashboard.api("live")
    # Long enough to open the page while the job still runs on a loaded machine (about 1 s on
    # a quiet one), short enough to wait for.
    job = upstream.create_job(queue_positions=0, processing_s=8)
    path = unique("live")
    watch = api.register(job_id=job, callback_url=receiver.callback(path))
    sign_in(page, "live")
    page.get_by_role("link", name=job).click()
    expect(page).to_have_url(re.compile(f"/ui/watches/{watch['id']}$"))
    expect(page.locator("#watch-status")).to_have_attribute("data-status", "active")
    expect(page.locator("#timeline li").first).to_contain_text(re.compile("registered", re.I))
    attempts = page.locator("#timeline li.attempt")
    assert attempts.count() == 0
    expect(page.locator("form.redeliver")).to_have_count(0)
    stays_on_page(page)

    expect(page.locator("#watch-status")).to_have_attribute(
        "data-status", "delivered", timeout=30_000
    )
    expect(attempts).to_have_count(1)
    expect(attempts.first).to_contain_text("200")
    expect(page.locator("#timeline")).to_contain_text(re.compile("succeeded", re.I))
    assert was_not_reloaded(page)

    # The final event's body as the receiver got it (the live update need not bring it).
    [hook] = receiver.wait_for(path, 1)
    page.reload()
    assert json.loads(page.locator("#payload").inner_text()) == hook.json()
    shoot(page, "watch", full_page=True)


def test_redeliver_after_a_confirmation_sends_the_same_event_again(
    page: Page, dashboard: Dashboard, upstream: Upstream, receiver: Receiver
) -> None:
    """Redeliver asks first in a dialog (going back sends nothing); with the callback, which
    accepted the event, ticked, it comes back to the watch page with a flash, and a second
    attempt of the same webhook appears. Secrets sent with the delivery are not shown."""
    api = dashboard.api("actions")
    path = unique("redeliver")
    secret_header = f"Bearer {unique('receiver-secret')}"
    watch = api.register(
        job_id=upstream.create_job(**AT_ONCE),
        callback_url=receiver.callback(path),
        callback_headers={"Authorization": secret_header, "X-Team": "blue"},
    )
    api.wait_for_status(watch["id"], "delivered")
    [first] = receiver.wait_for(path, 1)

    sign_in(page, "actions")
    page.goto(f"/ui/watches/{watch['id']}")
    attempts = page.locator("#timeline li.attempt")
    expect(attempts).to_have_count(1)
    expect(page.locator("form.cancel")).to_have_count(0)
    assert json.loads(page.locator("#payload").inner_text()) == first.json()
    html = page.content()
    assert "Authorization" in html
    assert secret_header not in html
    assert watch["secret"] not in html

    posts: list[str] = []

    def record(request: Request) -> None:
        if request.method == "POST":
            posts.append(request.url)

    page.on("request", record)
    page.locator("form.redeliver").get_by_role("button").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("button", name="No, go back").click()
    expect(dialog).to_be_hidden()
    assert posts == []
    expect(page.locator("#flash")).to_have_count(0)

    page.locator("form.redeliver").get_by_role("button").click()
    callback = dialog.get_by_label(re.compile("^The callback"))
    expect(callback).not_to_be_checked()  # it accepted the event
    callback.check()
    dialog.get_by_role("button", name="Redeliver to the ticked endpoints").click()
    expect(page.locator("#flash")).to_be_visible()
    expect(page).to_have_url(re.compile(f"/ui/watches/{watch['id']}$"))
    expect(attempts).to_have_count(2)
    expect(page.locator("#watch-status")).to_have_attribute("data-status", "delivered")

    again = receiver.wait_for(path, 2)
    assert again[1].webhook_id == first.webhook_id
    assert again[1].body == first.body


def test_cancel_an_active_watch_after_a_confirmation(
    page: Page, dashboard: Dashboard, upstream: Upstream
) -> None:
    """An active watch offers Cancel (not Redeliver); accepted, the watch is cancelled and the
    button goes away."""
    api = dashboard.api("actions")
    watch = api.register(job_id=upstream.create_job(**ENDLESS))
    sign_in(page, "actions")
    page.goto(f"/ui/watches/{watch['id']}")
    expect(page.locator("#watch-status")).to_have_attribute("data-status", "active")
    expect(page.locator("form.redeliver")).to_have_count(0)

    dialogs: list[str] = []
    accept_next_confirm(page, dialogs)
    page.locator("form.cancel").get_by_role("button").click()
    expect(page.locator("#flash")).to_be_visible()
    assert dialogs == ["confirm"]
    expect(page.locator("#watch-status")).to_have_attribute("data-status", "cancelled")
    expect(page.locator("form.cancel")).to_have_count(0)
    assert api.watch(watch["id"])["status"] == "cancelled"


def test_cancel_without_javascript_confirms_on_a_page_of_its_own(
    new_context: OpenContext, dashboard: Dashboard, upstream: Upstream
) -> None:
    """With JavaScript off, Cancel leads to a confirmation page; confirming there cancels."""
    api = dashboard.api("nojs")
    watch = api.register(job_id=upstream.create_job(**ENDLESS))
    page = new_context(java_script_enabled=False).new_page()
    sign_in(page, "nojs")
    page.goto(f"/ui/watches/{watch['id']}")
    page.locator("form.cancel").get_by_role("button").click()
    confirm = page.get_by_role("button", name=re.compile("confirm", re.I))
    expect(confirm).to_be_visible()
    assert api.watch(watch["id"])["status"] == "active"

    confirm.click()
    expect(page).to_have_url(re.compile(f"/ui/watches/{watch['id']}$"))
    expect(page.locator("#flash")).to_be_visible()
    expect(page.locator("#watch-status")).to_have_attribute("data-status", "cancelled")
    assert api.watch(watch["id"])["status"] == "cancelled"


def test_a_post_without_the_csrf_field_or_from_another_origin_is_refused(
    page: Page, dashboard: Dashboard, upstream: Upstream
) -> None:
    """Cancel without the form's csrf field, with a wrong one, or from another origin: 403, and
    the watch stays active; the form's own fields from the page's origin work."""
    api = dashboard.api("csrf")
    watch = api.register(job_id=upstream.create_job(**ENDLESS))
    sign_in(page, "csrf")
    page.goto(f"/ui/watches/{watch['id']}")
    form = page.locator("form.cancel")
    target = form.evaluate("form => form.action")
    csrf = form.locator('input[name="csrf"]').get_attribute("value")
    assert csrf

    refusals: list[tuple[dict[str, str | float | bool], dict[str, str]]] = [
        ({"confirm": "yes"}, {"Origin": dashboard.url}),
        ({"confirm": "yes", "csrf": csrf[::-1]}, {"Origin": dashboard.url}),
        ({"confirm": "yes", "csrf": csrf}, {"Origin": "https://elsewhere.example"}),
        ({"confirm": "yes", "csrf": csrf}, {"Sec-Fetch-Site": "cross-site"}),
    ]
    for fields, headers in refusals:
        refused = page.request.post(target, form=fields, headers=headers, max_redirects=0)
        assert refused.status == 403, (fields, headers, refused.status)
        assert api.watch(watch["id"])["status"] == "active"

    done = page.request.post(
        target, form={"confirm": "yes", "csrf": csrf}, headers={"Origin": dashboard.url},
        max_redirects=0,
    )  # fmt: skip
    assert done.status == 303
    assert api.watch(watch["id"])["status"] == "cancelled"


def test_another_tenants_watch_is_neither_listed_nor_reachable(
    page: Page, dashboard: Dashboard, upstream: Upstream
) -> None:
    """A watch of tenant `other` is not in the list, its page is a 404 page, its live stream
    and its actions answer 404, and it stays active."""
    theirs = dashboard.api("other").register(job_id=upstream.create_job(**ENDLESS))
    mine = dashboard.api("login").register(job_id=upstream.create_job(**ENDLESS))
    sign_in(page, "login")
    expect(page.locator(f'tr[data-watch-id="{mine["id"]}"]')).to_be_visible()
    expect(page.locator(f'tr[data-watch-id="{theirs["id"]}"]')).to_have_count(0)
    page.get_by_label("Job id").fill(theirs["job_id"])
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#watches tr[data-watch-id]")).to_have_count(0)

    response = page.goto(f"/ui/watches/{theirs['id']}")
    assert response is not None
    assert response.status == 404
    expect(page.locator("body")).not_to_contain_text(theirs["job_id"])

    live = page.request.get(f"/ui/live?watch_id={theirs['id']}")
    assert live.status == 404

    # Their watch through my own form (my session's csrf, their id in the action).
    page.goto(f"/ui/watches/{mine['id']}")
    form = page.locator("form.cancel")
    action = form.evaluate("form => form.action").replace(mine["id"], theirs["id"])
    csrf = form.locator('input[name="csrf"]').get_attribute("value") or ""
    assert theirs["id"] in action
    answer = page.request.post(
        action,
        form={"confirm": "yes", "csrf": csrf},
        headers={"Origin": dashboard.url},
        max_redirects=0,
    )
    assert answer.status == 404
    assert dashboard.api("other").watch(theirs["id"])["status"] == "active"


def test_a_phone_width_needs_no_horizontal_scrolling(
    new_context: OpenContext, dashboard: Dashboard, upstream: Upstream, receiver: Receiver
) -> None:
    """At 360 px wide (a phone's layout viewport, so the pages have a viewport meta tag) the
    login page, the list and a watch page fit the width."""
    api = dashboard.api("phone")
    path = unique("phone")
    watch = api.register(
        job_id=upstream.create_job(**AT_ONCE), callback_url=receiver.callback(path)
    )
    api.register(job_id=upstream.create_job(**ENDLESS))
    api.wait_for_status(watch["id"], "delivered")
    page = new_context(viewport=PHONE, is_mobile=True, has_touch=True).new_page()

    def fits() -> bool:
        root = "document.documentElement"
        return bool(
            page.evaluate(f"{root}.clientWidth <= 360 && {root}.scrollWidth <= {root}.clientWidth")
        )

    page.goto("/ui/login")
    assert fits(), "login page"
    sign_in(page, "phone")
    expect(page.locator("#watches tr[data-watch-id]")).to_have_count(2)
    assert fits(), "list"
    page.goto(f"/ui/watches/{watch['id']}")
    expect(page.locator("#payload")).to_be_visible()
    assert fits(), "watch page"
