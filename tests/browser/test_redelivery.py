"""Redelivery in a real browser: the watch page's dialog (and its page without JavaScript) says
which endpoints get the final event again, a subscription that accepted it included when
ticked, and ticks those that did not; the new attempts are a series of their own; the page then
says how the redelivery went, in place of "Redelivery started", and the live region says it.
"Redeliver N failed" on a list filtered to failed deliveries confirms how many and where, then
sends them. axe-core finds no violation on the dialog, the confirmation pages and the watch
page once the redelivery went.

Tenants `redeliver`, `resend` and `recover` are this module's. A receiver path answers 404
(a final status of its watches) to fail at once, after `SLOW_S` so that the page is shown
before the redelivery's attempt ends."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser.conftest import (
    AT_ONCE,
    Dashboard,
    OpenContext,
    Shoot,
    axe_violations,
    expect,
    sign_in,
)
from tests.e2e.harness import Bridge, Receiver, Upstream, unique

if TYPE_CHECKING:
    from playwright.sync_api import Page, Request

pytestmark = pytest.mark.browser

SLOW_S = 1.5  # under the delivery timeout of the tests' bridge (3 s)


def subscribed(api: Bridge, receiver: Receiver, path: str) -> str:
    """A subscription of the tenant to the final events, at `path` of the receiver (200)."""
    created = api.client.post("/v1/subscriptions", json={"url": receiver.callback(path)})
    assert created.status_code == 201, created.text
    subscription_id: str = created.json()["id"]
    return subscription_id


def refused_once(
    api: Bridge, upstream: Upstream, receiver: Receiver, path: str, **respond: Any
) -> dict[str, Any]:
    """A watch whose callback at `path` answered its final event 404, a final status for it:
    `failed` (its subscriptions accepted it)."""
    watch = api.register(
        job_id=upstream.create_job(**AT_ONCE),
        callback_url=receiver.callback(path, **{"respond": "404", **respond}),
        final_statuses=[404],
    )
    api.wait_for_status(watch["id"], "failed")
    return watch


def test_the_dialog_offers_the_endpoints_and_the_page_says_how_the_redelivery_went(
    page: Page, dashboard: Dashboard, upstream: Upstream, receiver: Receiver, shoot: Shoot
) -> None:
    """Redeliver opens a dialog: the refused callback ticked, the subscription that accepted it
    not, saying it would get it a second time; going back sends nothing. Confirmed, the
    callback alone gets it again, as series 2; "Redelivery started" gives way to the 404 that
    ended it, said in the live region too."""
    api = dashboard.api("redeliver")
    hooks = unique("redeliver_sub")
    subscription = subscribed(api, receiver, hooks)
    path = unique("redeliver")
    watch = refused_once(api, upstream, receiver, path, delay_s=SLOW_S)
    receiver.wait_for(hooks, 1)
    sign_in(page, "redeliver")
    page.goto(f"/ui/watches/{watch['id']}")
    # The page a browser without the dialog gets (axe needs the page's JavaScript on).
    page.locator("form.redeliver").evaluate("form => form.submit()")
    expect(page.locator("h1")).to_contain_text("Redeliver the final event of job")
    assert axe_violations(page) == []
    page.go_back()
    posts: list[str] = []

    def record(request: Request) -> None:
        if request.method == "POST":
            posts.append(request.url)

    page.on("request", record)

    page.get_by_role("button", name="Redeliver…").click()
    dialog = page.get_by_role("dialog", name=re.compile("Redeliver the final event of job"))
    expect(dialog).to_be_visible()
    callback, accepted = (
        dialog.get_by_label(re.compile("^The callback")),
        dialog.get_by_label(re.compile(f"^Subscription {subscription}")),
    )
    expect(callback).to_be_checked()
    expect(accepted).not_to_be_checked()
    expect(dialog.locator(f"#redeliver-{subscription}-state")).to_contain_text(
        "It accepted it: ticked, it gets it a second time."
    )
    expect(dialog).to_contain_text("One that already accepted it gets it again too")
    assert axe_violations(page) == []
    shoot(page, "redeliver-dialog")
    dialog.get_by_role("button", name="No, go back").click()
    expect(dialog).to_be_hidden()
    assert posts == []

    page.get_by_role("button", name="Redeliver…").click()
    dialog.get_by_role("button", name="Redeliver to the ticked endpoints").click()

    expect(page).to_have_url(re.compile(f"/ui/watches/{watch['id']}$"))
    expect(page.locator("#flash")).to_have_text("Redelivery started to callback (series 2).")
    ended = "Retries stopped: 404 is a final status for this endpoint (final_statuses)."
    expect(page.locator("#redelivery")).to_have_text(f"Redelivery: callback: {ended}")
    expect(page.locator("#flash")).to_have_count(0)
    expect(page.locator("#announcer")).to_contain_text(f"Redelivery: callback: {ended}")
    expect(page.locator("#timeline li.attempt[data-series='2'] .title")).to_contain_text(
        "Series 2, attempt 1 of"
    )
    assert len(receiver.hooks(path)) == 2
    assert len(receiver.hooks(hooks)) == 1
    assert axe_violations(page) == []
    shoot(page, "redelivery-failed", full_page=True)


def test_without_javascript_the_choice_is_a_page_and_an_accepted_endpoint_can_be_chosen(
    new_context: OpenContext,
    dashboard: Dashboard,
    upstream: Upstream,
    receiver: Receiver,
    shoot: Shoot,
) -> None:
    """With JavaScript off, Redeliver leads to a page with the same choice; the subscription
    that accepted the event ticked too, both get it again with their webhook ids."""
    api = dashboard.api("resend")
    hooks = unique("resend_sub")
    subscription = subscribed(api, receiver, hooks)
    path = unique("resend")
    watch = refused_once(api, upstream, receiver, path)
    [first] = receiver.wait_for(hooks, 1)
    page = new_context(java_script_enabled=False).new_page()
    sign_in(page, "resend")
    page.goto(f"/ui/watches/{watch['id']}")

    page.get_by_role("button", name="Redeliver…").click()
    expect(page.locator("h1")).to_contain_text("Redeliver the final event of job")
    expect(page.get_by_label(re.compile("^The callback"))).to_be_checked()
    accepted = page.get_by_label(re.compile(f"^Subscription {subscription}"))
    expect(accepted).not_to_be_checked()
    shoot(page, "redeliver-confirm")
    accepted.check()
    page.get_by_role("button", name="Redeliver to the ticked endpoints").click()

    expect(page).to_have_url(re.compile(f"/ui/watches/{watch['id']}$"))
    expect(page.locator("#flash")).to_contain_text(f"(series 2), {subscription} (series 2).")
    again = receiver.wait_for(hooks, 2)
    assert again[1].webhook_id == first.webhook_id
    receiver.wait_for(path, 2)


def test_redeliver_n_failed_confirms_how_many_and_where_then_sends_them(
    page: Page, dashboard: Dashboard, upstream: Upstream, receiver: Receiver, shoot: Shoot
) -> None:
    """The list filtered to the failed deliveries since a time offers "Redeliver 3 failed"
    (an older failed one left out); its page says 3 watches, their callbacks; confirmed, each
    callback gets the event again (accepted this time), the list says so and, live, has no
    failed one left."""
    api = dashboard.api("recover")
    older = refused_once(api, upstream, receiver, unique("recover_old"))
    paths = [unique("recover") for _ in range(3)]
    watches = [refused_once(api, upstream, receiver, path, respond="404,200") for path in paths]
    sign_in(page, "recover")
    page.get_by_label("Delivery").select_option("failed")
    page.get_by_text("Metadata and time").click()
    page.get_by_label("Created from").fill(watches[0]["created_at"])
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#total")).to_have_text("3 watches match")
    expect(page.get_by_role("button", name="Redeliver 3 failed…")).to_be_visible()
    assert axe_violations(page) == []

    page.get_by_role("button", name="Redeliver 3 failed…").click()
    expect(page.locator("h1")).to_have_text("Redeliver the failed webhooks of 3 watches?")
    expect(page.locator('#recover-endpoints li[data-endpoint="callback"]')).to_have_text(
        "Its callback: 3 watches"
    )
    assert axe_violations(page) == []
    shoot(page, "recover-confirm")
    page.get_by_role("button", name="Redeliver 3").click()

    expect(page).to_have_url(re.compile(r"/ui/\?delivery=failed&created_from=[^&]+&limit=50$"))
    expect(page.locator("#flash")).to_have_text(
        "Redelivery started for 3 watches: to the callback of 3."
    )
    for watch in watches:
        api.wait_for_status(watch["id"], "delivered")
    expect(page.locator("#total")).to_have_text("0 watches match")
    expect(page.locator("#recover")).to_have_count(0)
    assert axe_violations(page) == []
    for path in paths:
        first, second = receiver.wait_for(path, 2)
        assert second.webhook_id == first.webhook_id
    assert api.watch(older["id"])["status"] == "failed"
