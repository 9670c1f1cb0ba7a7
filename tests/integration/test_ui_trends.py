"""The dashboard in process shows durations and trends: each watch's queue, processing and
delivery times on its page (and in the API's watch), and on the list the last day's outcomes and
times to deliver, from the store, drawn as inline SVG that screen readers get in words."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from service import config
from service.clock import FakeClock
from service.signing import new_secret
from service.store.base import (
    Attempt,
    AttemptOutcome,
    Completion,
    Delivery,
    NewDelivery,
    NewEvent,
    OutcomeBucket,
    Progress,
    Watch,
)
from service.ui import routes, trends
from tests.integration.test_ui import ACME, GLOBEX, TOKENS, Bridged, serve

OWNER = "test"
HOUR = 3600.0


@pytest.fixture
async def ui(tmp_path: Path) -> AsyncIterator[Bridged]:
    """A bridge with two tenants, acme and globex."""
    async for served in serve(tmp_path, BRIDGE_AUTH__TOKENS=TOKENS):
        yield served


async def held(ui: Bridged, at: float, tenant: str = "acme", **changes: Any) -> Watch:
    """A watch registered at `at`, polled by `OWNER` (the bridge leaves it alone)."""
    ui.clock.advance(0.01)  # the next id is newer
    watch = Watch(
        id=f"wch_{int(ui.clock.now() * 1000)}trend", tenant=tenant, job_id="job_t",
        callback_url="http://127.0.0.1:9/hooks", callback_method="POST", callback_headers={},
        metadata=None, events=("job.succeeded", "job.failed"), payload_format="envelope",
        secret=new_secret(), poll_interval_s=5, timeout_s=86400, upstream_api_key=None,
        created_at=at, updated_at=at, next_poll_at=at + 600,
    )  # fmt: skip
    return await ui.bridge.store.insert_watch(
        replace(watch, **changes), lease_owner=OWNER, lease_until=ui.clock.now() + 600
    )


async def processing(ui: Bridged, watch: Watch, at: float) -> None:
    """A poll at `at` saw the job processing."""
    body = orjson.dumps({"type": "job.processing"})
    event = NewEvent(f"evt_p{watch.id[4:]}", "job.processing", False, body, None)
    change = Progress(watch.id, 1, "processing", None, None, at + 600, [event])
    assert not (await ui.bridge.store.record_progress(OWNER, at, [change])).lost


async def ended(
    ui: Bridged,
    watch: Watch,
    at: float,
    event_type: str = "job.succeeded",
    error_code: str | None = None,
) -> Delivery:
    """A poll at `at` saw the job end: its callback delivery, held by `OWNER`."""
    body = orjson.dumps({"type": event_type, "error_code": error_code})
    final = NewDelivery(f"msg_{watch.id[4:]}", event_type, body, True)
    event = NewEvent(f"evt_{watch.id[4:]}", event_type, True, body, final, error_code)
    done = Completion(watch.id, 1, "succeeded", None, event)
    [delivery] = await ui.bridge.store.complete_watch(OWNER, at, done, ui.clock.now() + 600)
    return delivery


async def answered(
    ui: Bridged, delivery: Delivery, at: float, status_code: int = 200, took: float = 0.25
) -> None:
    """The receiver answered an attempt started at `at`, which ended the delivery."""
    outcome: AttemptOutcome = "succeeded" if status_code < 300 else "failed"
    error = None if status_code < 300 else f"HTTP {status_code}"
    attempt = Attempt(delivery.id, delivery.event_type, 1, at, took, status_code, error)
    await ui.bridge.store.record_attempt(OWNER, delivery, attempt, outcome, at + took)


def text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html)).strip()


def section(page: str, element_id: str) -> str:
    found = re.search(rf'<(\w+)[^>]* id="{element_id}"[^>]*>(.*?)</\1>', page, re.S)
    assert found is not None, element_id
    return found.group(2)


# A watch's durations.


async def test_a_watch_page_shows_how_long_each_step_took(ui: Bridged) -> None:
    """Registered, seen processing 12 s later, ended 90 s after that, accepted 1.5 s after the
    end: each step on the page, in words and in seconds; the API's watch says the same."""
    t0 = ui.clock.now() - 600
    watch = await held(ui, t0)
    await processing(ui, watch, t0 + 12)
    delivery = await ended(ui, watch, t0 + 102)
    await answered(ui, delivery, t0 + 103.25, took=0.25)
    await ui.sign_in()

    page = (await ui.client.get(f"/ui/watches/{watch.id}")).text
    durations = section(page, "durations")
    steps = dict(re.findall(r'<div data-step="(\w+)">.*?<data value="([\d.]+)">', durations, re.S))
    assert steps == {"queue": "12.000", "processing": "90.000", "delivery": "1.500"}
    words = re.findall(r'<data value="[\d.]+">(.*?)</data>', durations)
    assert words == ["12.0 s", "1 min 30 s", "1.5 s"]

    answer = await ui.client.get(f"/v1/watches/{watch.id}", headers=ACME)
    assert answer.json()["durations"] == {
        "queue_s": 12.0,
        "processing_s": 90.0,
        "delivery_s": pytest.approx(1.5),
    }


async def test_steps_not_seen_or_not_reached_say_why(ui: Bridged) -> None:
    """A job seen only when already finished, not delivered yet: its page says why each step
    has no time, and the API answers null for them."""
    t0 = ui.clock.now() - 60
    watch = await held(ui, t0)
    await ended(ui, watch, t0 + 5)
    await ui.sign_in()

    durations = text(section((await ui.client.get(f"/ui/watches/{watch.id}")).text, "durations"))
    assert durations.count("Not seen: no poll saw the job processing") == 2
    assert "Time to deliver (final status seen → webhook accepted) Not yet" in durations
    answer = await ui.client.get(f"/v1/watches/{watch.id}", headers=ACME)
    assert answer.json()["durations"] == {"queue_s": None, "processing_s": None, "delivery_s": None}


# The list's trends.


async def the_day(ui: Bridged) -> None:
    """acme's last day: at 3 hours ago two jobs succeeded (delivered in 1 s and 3 s) and one
    timed out (its webhook failed); at 1 hour ago one failed (delivered in 2 s). globex: one
    success."""
    now = ui.clock.now()
    for took, outcome in ((1.0, None), (3.0, None), (0.5, "timeout")):
        watch = await held(ui, now - 3 * HOUR - 60)
        kind = "job.failed" if outcome else "job.succeeded"
        delivery = await ended(ui, watch, now - 3 * HOUR + 10, kind, outcome)
        await answered(ui, delivery, now - 3 * HOUR + 10 + took - 0.25, 500 if outcome else 200)
    watch = await held(ui, now - HOUR - 60)
    delivery = await ended(ui, watch, now - HOUR, "job.failed", "generation_failed")
    await answered(ui, delivery, now - HOUR + 1.75)
    theirs = await held(ui, now - 60, tenant="globex")
    await answered(ui, await ended(ui, theirs, now - 30), now - 29)


async def test_the_list_shows_the_last_day_counted_once_per_watch(ui: Bridged) -> None:
    """The totals, each chart's description and the table of each hour give the tenant's own
    figures: jobs by outcome, webhooks delivered or not, p50 and p90 of the time to deliver."""
    await the_day(ui)
    await ui.sign_in()

    page = (await ui.client.get("/ui/")).text
    assert text(section(page, "trend-totals")).startswith(
        "4 jobs ended (2 succeeded, 1 failed, 1 timed out); 4 webhooks to callbacks ended "
        "(3 delivered, 1 failed)."
    )
    descriptions = dict(re.findall(r'<desc id="(trend-\w+)-desc">(.*?)</desc>', page))
    assert descriptions["trend-jobs"].startswith(
        "In the last 24 hours: 2 succeeded, 1 failed, 1 timed out."
    )
    assert descriptions["trend-webhooks"].startswith("In the last 24 hours: 3 delivered, 1 failed.")
    assert "p90 3.0 s" in descriptions["trend-latency"]
    hours = {
        cells[0]: cells[1:]
        for row in re.findall(r"<tr>(.*?)</tr>", section(page, "trend-table"), re.S)
        if (cells := [text(c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)])
    }
    now = ui.clock.now()
    assert hours[trends.hour_label(now - 3 * HOUR)] == ["2", "0", "1", "2", "1", "1.0 s", "3.0 s"]
    assert hours[trends.hour_label(now - HOUR)] == ["0", "1", "0", "1", "0", "2.0 s", "2.0 s"]
    assert hours[trends.hour_label(now)] == ["0", "0", "0", "0", "0", "—", "—"]
    assert len(hours) == 24 + 1  # every hour, and the header

    await ui.client.post("/ui/logout", data={"csrf": await ui.csrf()})
    await ui.sign_in("globex-token")
    theirs = text(section((await ui.client.get("/ui/")).text, "trend-totals"))
    assert theirs.startswith("1 jobs ended (1 succeeded, 0 failed, 0 timed out)")


async def test_the_charts_are_inline_svg_with_their_words(ui: Bridged) -> None:
    """Each chart is an SVG image named by its title and description, a bar per hour and
    outcome with its own words; nothing is loaded from elsewhere and the page's policy is the
    same as every page's."""
    await the_day(ui)
    await ui.sign_in()

    response = await ui.client.get("/ui/")
    page = response.text
    charts = re.findall(r"<svg [^>]*>.*?</svg>", page, re.S)
    assert len(charts) == 3
    for chart in charts:
        assert 'role="img"' in chart
        assert re.search(r'aria-labelledby="(trend-\w+)-title \1-desc"', chart)
        assert not re.search(r"href|style=|<script|url\(", chart)
    tips = re.findall(r"<rect [^>]*><title>(.*?)</title>", charts[0])
    label = trends.hour_label(ui.clock.now() - 3 * HOUR)
    assert {f"{label}: 2 succeeded", f"{label}: 1 timed out"} <= set(tips)
    expected = routes.security_headers(ui.bridge.settings.ui.image_sources)
    assert response.headers["content-security-policy"] == expected["Content-Security-Policy"]


async def test_nothing_ended_says_so(ui: Bridged) -> None:
    """A day with no ending (a job still running): a sentence, no chart, no table."""
    await held(ui, ui.clock.now() - 60)
    await ui.sign_in()

    page = (await ui.client.get("/ui/")).text
    assert "Nothing ended in the last 24 hours: no job, no webhook." in page
    assert "<svg" not in page
    assert 'id="trend-table"' not in page


async def test_live_updates_leave_the_trends_out(ui: Bridged) -> None:
    """The list's live fragment (fetched at every change) does not read or draw the trends."""
    await the_day(ui)
    await ui.sign_in()

    fragment = (await ui.client.get("/ui/?fragment=1")).text
    assert 'id="watches"' in fragment
    assert 'id="trends"' not in fragment


def test_the_chart_template_escapes_what_it_draws() -> None:
    """Every word of a chart goes through the template's escaping: markup in a title, a
    description, a bar's words or a label is shown as text."""
    evil = '<script>alert("x")</script>'
    day = trends.trends(
        [OutcomeBucket(1_767_225_600.0 + i * HOUR, i, 0, 1, i, 0, 0.5, 2.0) for i in range(24)]
    )
    jobs = replace(
        day.charts[0], title=evil, summary=evil,
        bars=tuple(replace(bar, tip=evil) for bar in day.charts[0].bars),
        hours=tuple(replace(mark, label=evil) for mark in day.charts[0].hours),
    )  # fmt: skip
    day = replace(day, charts=(jobs, day.charts[1], day.charts[2]))
    settings = config.load(environ={"BRIDGE_UPSTREAM__BASE_URL": "http://127.0.0.1:9"})
    template = routes.Pages(settings, FakeClock()).templates.get_template("_trends.html")
    html = template.render(trend=day)

    assert "<script>" not in html
    assert html.count("&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") >= 4


async def test_a_watch_of_another_tenant_shows_no_durations(ui: Bridged) -> None:
    """The API's watch stays tenant-scoped: another tenant's watch is not found."""
    watch = await held(ui, ui.clock.now() - 60)
    assert (await ui.client.get(f"/v1/watches/{watch.id}", headers=GLOBEX)).status_code == 404
