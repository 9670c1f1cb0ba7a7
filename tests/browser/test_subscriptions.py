"""The subscriptions page in Chromium: reached from a watch's timeline, its health, and its
actions without JavaScript (test event, disable and enable, rotation showing the new secret
once); axe-core finds no violation on it, its confirmation or its secret page, light and dark.

The tests sign in as tenant `subs` (see `conftest.TENANTS`)."""

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
from tests.e2e.harness import Receiver, Upstream, unique

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def subscribed(dashboard: Dashboard, upstream: Upstream, receiver: Receiver) -> dict[str, Any]:
    """Two subscriptions of `subs`, one refusing with a final status, one accepting; a watch
    whose final event reached both."""
    api = dashboard.api("subs").client
    made: dict[str, Any] = {}
    for name, query in (("refusing", {"respond": "404"}), ("healthy", {})):
        path = unique(name)
        body = {"url": receiver.callback(path, **query), "final_statuses": [404]}
        created = api.post("/v1/subscriptions", json=body)
        assert created.status_code == 201, created.text
        made[name] = {**created.json(), "path": path}
    watch = dashboard.api("subs").register(job_id=upstream.create_job(**AT_ONCE))
    dashboard.api("subs").wait_for_status(watch["id"], "completed")
    receiver.wait_for(made["refusing"]["path"])
    receiver.wait_for(made["healthy"]["path"])
    made["watch"] = watch
    return made


def test_an_operator_follows_a_subscription_from_the_timeline_and_acts_without_javascript(
    new_context: OpenContext,
    subscribed: dict[str, Any],
    receiver: Receiver,
    shoot: Shoot,
) -> None:
    """The watch's timeline links the refusing subscription to its place on the page, which
    shows its failed attempt; Send test event reaches the receiver; Disable (confirmed) and
    Enable change its status; Rotate secret shows a new secret once."""
    refusing, healthy = subscribed["refusing"], subscribed["healthy"]
    page: Page = new_context(java_script_enabled=False).new_page()
    sign_in(page, "subs")
    page.goto(f"/ui/watches/{subscribed['watch']['id']}")

    page.locator("#deliveries").get_by_role("link", name=refusing["id"]).click()

    expect(page).to_have_url(re.compile(f"/ui/subscriptions#{refusing['id']}$"))
    section = page.locator(f"section#{refusing['id']}")
    expect(section.locator(".health")).to_contain_text("0 % succeeded: 0 of 1 attempt in")
    expect(section.locator(".last-error")).to_contain_text("HTTP 404")
    expect(page.locator(f"section#{healthy['id']} .health")).to_contain_text("100 % succeeded")
    shoot(page, "subscriptions", full_page=True)

    section.get_by_role("button", name=re.compile("^Send test event")).click()
    expect(page.locator("#flash")).to_contain_text("the receiver answered 404")
    [*_, test] = receiver.wait_for(refusing["path"], 2)
    assert test.verify(refusing["secret"])["type"] == "webhook.test"

    section = page.locator(f"section#{refusing['id']}")
    section.get_by_role("button", name=re.compile("^Disable")).click()
    expect(page.locator("h1")).to_contain_text(f"Disable subscription {refusing['id']}?")
    page.get_by_role("button", name="Disable").click()
    expect(page.locator("#flash")).to_contain_text("disabled: it gets no new deliveries")
    section = page.locator(f"section#{refusing['id']}")
    expect(section).to_have_attribute("data-status", "disabled")
    section.get_by_role("button", name=re.compile("^Enable")).click()
    expect(page.locator(f"section#{refusing['id']}")).to_have_attribute("data-status", "active")

    section = page.locator(f"section#{healthy['id']}")
    section.get_by_role("button", name=re.compile("^Rotate secret")).click()
    page.get_by_role("button", name="Rotate the secret").click()
    secret = page.locator("#secret").inner_text()
    assert secret.startswith("whsec_")
    assert secret != healthy["secret"]
    page.get_by_role("link", name="Back to the subscriptions").click()
    expect(page.locator(f"section#{healthy['id']}")).to_contain_text(
        "The secret before also signs until"
    )
    assert secret not in page.content()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_subscription_pages_have_no_axe_violations(
    new_context: OpenContext, subscribed: dict[str, Any], scheme: str
) -> None:
    """The list with its health, a confirmation and the new-secret page: no violation of any
    rule axe-core runs by default."""
    page = new_context(color_scheme=scheme).new_page()
    sign_in(page, "subs")
    found: dict[str, list[str]] = {}

    page.goto("/ui/subscriptions")
    expect(page.locator("section.subscription")).to_have_count(2)
    found["subscriptions"] = axe_violations(page)
    section = page.locator(f"section#{subscribed['healthy']['id']}")
    section.get_by_role("button", name=re.compile("^Rotate secret")).click()
    expect(page.locator("form.confirm-rotate")).to_be_visible()
    found["confirm rotation"] = axe_violations(page)
    page.get_by_role("button", name="Rotate the secret").click()
    expect(page.locator("#secret")).to_be_visible()
    found["new secret"] = axe_violations(page)

    assert {name: lines for name, lines in found.items() if lines} == {}
