"""Fixtures of the browser suite: the dashboard (`/ui/`) driven by Debian's Chromium.

The processes are those of the end-to-end suite (`tests/e2e/harness.py`): the upstream
simulator, the receiver and a bridge, started once for this package. The bridge has one token
per tenant in `TENANTS`, so each test signs in as a tenant of its own and sees only its own
watches (the counts at the top of the list are then the test's to predict).

Playwright drives `/usr/bin/chromium` (Debian's package; Playwright's own browser download is
never used). Without it or without the `playwright` package the tests skip, except under
CI=true, where they fail. The Playwright driver lives for the package only: its sync API marks
an event loop as running between calls, which the asyncio tests of other packages must not see.

Screenshots of the pages go to `docs/screenshots/` when BRIDGE_SCREENSHOTS=1, else to the
test's temporary directory (so a test run never changes the work tree).

Generated images come from a loopback image server (`image_server.py`) that Chromium reaches as
`IMAGE_HOST`, the one host of the bridge's `ui.image_hosts`, and as `OTHER_IMAGE_HOST`, a host
not listed. `axe_violations` runs axe-core (Deque's accessibility engine, bundled by the
axe-playwright-python package) on a page.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import httpx
import pytest

from tests.browser.image_server import ImageServer, running_image_server
from tests.e2e import harness
from tests.e2e.harness import Bridge, Receiver, Upstream, unique

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, Playwright

CHROMIUM = Path("/usr/bin/chromium")
# Names of the loopback image server: the bridge keeps loopback addresses out of image_urls.
IMAGE_HOST = "images.test"
OTHER_IMAGE_HOST = "elsewhere.test"
CHROMIUM_ARGS = [
    f"--host-resolver-rules=MAP {IMAGE_HOST} 127.0.0.1, MAP {OTHER_IMAGE_HOST} 127.0.0.1",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Every wait of a test (expect, clicks, navigations) ends by this deadline.
TIMEOUT_MS = 15_000
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 360, "height": 740}
# Simulator jobs (their `sim` settings): one that stays queued, one that ends at once.
ENDLESS: dict[str, Any] = {"queue_positions": 100_000}
AT_ONCE: dict[str, Any] = {"queue_positions": 0, "processing_s": 0}
SCREENSHOTS = harness.ROOT / "docs" / "screenshots"
COOKIE = "bridge_ui"
# One tenant per test (or per group of tests that share their watches); `other` is the tenant
# whose watches the others must never see.
TENANTS = (
    "login", "list", "live", "actions", "nojs", "csrf", "other", "phone", "images", "ops",
    "retry", "focus", "viewed", "subs", "trends", "search", "long", "upstreams-js",
    "upstreams-nojs", "upstreams-phone",
)  # fmt: skip
# The bridge's second upstream (the same simulator under another name): the pages show each
# watch's upstream and filter by it, as they do wherever several are configured.
SECOND_UPSTREAM = "studio"
# Viewer tokens (role viewer), each with the tenant whose watches it sees read-only.
VIEWERS = {"viewer": "viewed"}


def expect(target: Any) -> Any:
    """Playwright's `expect`, imported late: the package may be missing (the tests then skip)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def token(tenant: str) -> str:
    return f"{tenant}-ui-token"


# A failed test's report carries the output of the processes and where the page was.

PAGES: list[Page] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, Any]:
    report = yield
    if report.failed:
        for process in harness.PROCESSES:
            if process.running:
                report.sections.append((f"process {process.name}", process.tail()))
        for page in PAGES:
            try:
                html = page.content()
            except Exception as error:  # the page or the browser is gone
                html = f"(no content: {error})"
            report.sections.append((f"page {page.url}", html[-6000:]))
    return report


# Processes.


@pytest.fixture(scope="package")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    """The upstream simulator, accepting the key `bw_test_key`."""
    directory = tmp_path_factory.mktemp("ui-upstream")
    with harness.running_upstream("ui-upstream", directory, "--seed", "8") as started:
        yield started


@pytest.fixture(scope="package")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    """The webhook receiver, recording every request."""
    with harness.running_receiver("ui-receiver", tmp_path_factory.mktemp("ui-receiver")) as r:
        yield r


@pytest.fixture(scope="package")
def images() -> Iterator[ImageServer]:
    """The loopback image server (see the module docstring)."""
    with running_image_server() as server:
        yield server


@dataclass
class Dashboard:
    """The bridge under test: its URL and an API client per tenant."""

    bridge: Bridge
    apis: dict[str, httpx.Client]

    @property
    def url(self) -> str:
        return self.bridge.url

    def api(self, tenant: str) -> Bridge:
        """The harness's API helpers, acting as `tenant`."""
        return Bridge(self.bridge.process, self.bridge.url, self.bridge.db, self.apis[tenant])


@pytest.fixture(scope="package")
def dashboard(
    tmp_path_factory: pytest.TempPathFactory,
    upstream: Upstream,
    receiver: Receiver,
    images: ImageServer,
) -> Iterator[Dashboard]:
    """A bridge with a token per tenant of `TENANTS` and the viewer tokens of `VIEWERS` (the
    dashboard is on by default), whose pages may load images from `IMAGE_HOST` over plain
    http, and with two upstreams (`SECOND_UPSTREAM` besides the default one)."""
    directory = tmp_path_factory.mktemp("ui-bridge")
    viewers = [
        {"name": name, "tenant": tenant, "role": "viewer", "token": token(name)}
        for name, tenant in VIEWERS.items()
    ]
    tokens = json.dumps([{"name": tenant, "token": token(tenant)} for tenant in TENANTS] + viewers)
    started = harness.launch_bridge(
        "ui-bridge", directory, upstream.url, directory / "bridge.db",
        BRIDGE_AUTH__TOKENS=tokens,
        BRIDGE_UI__IMAGE_HOSTS=json.dumps([f"http://{IMAGE_HOST}:{images.port}"]),
        **{f"BRIDGE_UPSTREAMS__{SECOND_UPSTREAM.upper()}__BASE_URL": upstream.url,
           f"BRIDGE_UPSTREAMS__{SECOND_UPSTREAM.upper()}__API_KEY": harness.API_KEY},
    )  # fmt: skip
    apis = {
        tenant: httpx.Client(
            base_url=started.url, headers={"Authorization": f"Bearer {token(tenant)}"}, timeout=10
        )
        for tenant in TENANTS
    }
    try:
        yield Dashboard(started, apis)
    finally:
        for api in apis.values():
            api.close()
        harness.close_bridge(started)


# The browser.


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"the browser tests must run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (make test installs the dev lock)")
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as started:
        yield started


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Headless Chromium; each test gets a context of its own (fresh cookies and storage)."""
    launched = playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
    )
    try:
        yield launched
    finally:
        launched.close()


OpenContext = Callable[..., "BrowserContext"]


@pytest.fixture
def new_context(browser: Browser, dashboard: Dashboard) -> Iterator[OpenContext]:
    """`new_context(**options)`: a fresh browser context on the dashboard (desktop size unless
    `viewport` says otherwise; `java_script_enabled=False` for the no-JS pages)."""
    opened: list[BrowserContext] = []

    def open_context(**options: Any) -> BrowserContext:
        context = browser.new_context(base_url=dashboard.url, **{"viewport": DESKTOP, **options})
        context.set_default_timeout(TIMEOUT_MS)
        context.on("page", lambda page: PAGES.append(page))
        opened.append(context)
        return context

    try:
        yield open_context
    finally:
        PAGES.clear()
        for context in opened:
            context.close()


@pytest.fixture
def page(new_context: OpenContext) -> Page:
    """A page in a fresh desktop-sized context, not signed in."""
    return new_context().new_page()


def sign_in(page: Page, tenant: str) -> None:
    """Sign in through the login form with the token of `tenant` (or of a viewer of
    `VIEWERS`); lands on the list."""
    page.goto("/ui/login")
    page.get_by_label("API token").fill(token(tenant))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/ui/")


def finished_with_images(
    dashboard: Dashboard, upstream: Upstream, images: ImageServer
) -> tuple[str, str, str]:
    """A completed watch of tenant `images` whose job made two images, one on each host; its
    id and the two URLs (unique paths: no browser cache has seen them)."""
    listed = f"http://{IMAGE_HOST}:{images.port}/{unique('listed')}.png"
    other = f"http://{OTHER_IMAGE_HOST}:{images.port}/{unique('other')}.png"
    api = dashboard.api("images")
    job = upstream.create_job(queue_positions=0, processing_s=0, image_urls=[listed, other])
    watch = api.register(job_id=job)
    api.wait_for_status(watch["id"], "completed")
    return watch["id"], listed, other


class Shoot(Protocol):
    def __call__(self, page: Page, name: str, *, full_page: bool = False) -> Path: ...


@pytest.fixture
def shoot(tmp_path: Path) -> Shoot:
    """`shoot(page, name)`: a screenshot of the page's viewport, or of all of it with
    `full_page=True` (where it goes: see the module docstring)."""

    def screenshot(page: Page, name: str, *, full_page: bool = False) -> Path:
        keep = os.environ.get("BRIDGE_SCREENSHOTS") == "1"
        path = (SCREENSHOTS if keep else tmp_path) / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path), full_page=full_page, animations="disabled", caret="hide")
        assert path.stat().st_size > 0
        return path

    return screenshot


def axe_violations(page: Page) -> list[str]:
    """axe-core's violations on the page as it is now (every rule axe runs by default), one
    line each: the rule, its impact and the elements it found."""
    from axe_playwright_python.sync_playwright import Axe

    found = Axe().run(page).response["violations"]
    return [
        f"{rule['id']} ({rule['impact']}): {rule['help']}: "
        + ", ".join(" ".join(node["target"]) for node in rule["nodes"])
        for rule in found
    ]
