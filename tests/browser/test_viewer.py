"""A viewer token in a real browser: the dashboard of its tenant, said to be read-only, without
any action button; an action sent anyway is refused; axe-core finds no violation on its pages.

The viewer (`conftest.VIEWERS`) sees tenant `viewed`, whose watches only this module makes."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser.conftest import (
    AT_ONCE,
    ENDLESS,
    Dashboard,
    OpenContext,
    Shoot,
    axe_violations,
    sign_in,
)
from tests.e2e.harness import Receiver, Upstream, unique

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_a_viewer_sees_everything_read_only_and_cannot_act(
    new_context: OpenContext,
    dashboard: Dashboard,
    upstream: Upstream,
    receiver: Receiver,
    shoot: Shoot,
    scheme: str,
) -> None:
    """Signed in with the viewer token: the list of `viewed`'s watches says it is read-only;
    the delivered watch's page shows its timeline and payload without Redeliver, the active
    one's no Cancel; a cancel posted with the page's own CSRF token is a 403 page and the watch
    stays active. axe-core finds nothing on the list, the watch pages and the 403 page."""
    api = dashboard.api("viewed")
    active = api.register(job_id=upstream.create_job(**ENDLESS))
    done = api.register(
        job_id=upstream.create_job(**AT_ONCE), callback_url=receiver.callback(unique("viewed"))
    )
    api.wait_for_status(done["id"], "delivered")
    page: Page = new_context(color_scheme=scheme).new_page()
    found: dict[str, list[str]] = {}

    sign_in(page, "viewer")
    expect(page.locator(f'#watches tr[data-watch-id="{active["id"]}"]')).to_be_visible()
    expect(page.locator(f'#watches tr[data-watch-id="{done["id"]}"]')).to_be_visible()
    expect(page.locator("#read-only")).to_contain_text("Read-only")
    expect(page.get_by_role("navigation", name="Account")).to_contain_text("(read-only)")
    found["list"] = axe_violations(page)

    page.goto(f"/ui/watches/{done['id']}")
    expect(page.locator("#watch-status")).to_have_attribute("data-status", "delivered")
    expect(page.locator("#payload")).to_be_visible()
    expect(page.locator("#read-only")).to_be_visible()
    expect(page.locator("form.redeliver, form.cancel")).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile("redeliver|cancel", re.I))).to_have_count(0)
    found["delivered watch"] = axe_violations(page)
    if scheme == "light":
        shoot(page, "viewer")

    page.goto(f"/ui/watches/{active['id']}")
    expect(page.locator("#watch-status")).to_have_attribute("data-status", "active")
    expect(page.locator("form.redeliver, form.cancel")).to_have_count(0)
    found["active watch"] = axe_violations(page)

    # A cancel form made in the page, with the sign-out form's CSRF token (a viewer's pages
    # have no other form), sent by the browser itself.
    with page.expect_navigation() as sent:
        page.evaluate(
            """watchId => {
                const form = document.createElement("form");
                form.method = "post";
                form.action = `/ui/watches/${watchId}/cancel`;
                for (const [name, value] of [["confirm", "yes"], ["csrf",
                        document.querySelector("form.logout input[name=csrf]").value]]) {
                    const field = document.createElement("input");
                    Object.assign(field, {type: "hidden", name, value});
                    form.appendChild(field);
                }
                document.body.appendChild(form);
                form.submit();
            }""",
            active["id"],
        )
    answer = sent.value
    assert answer is not None
    assert answer.status == 403
    expect(page.get_by_role("heading", level=1)).to_have_text("Read-only sign-in")
    expect(page.locator("#error-text")).to_contain_text("viewer token")
    found["refused action"] = axe_violations(page)
    assert api.watch(active["id"])["status"] == "active"

    assert {name: lines for name, lines in found.items() if lines} == {}
