"""The dashboard and the bridge's upstreams (in process): with one upstream the list has no
upstream column and no upstream field; with several, each watch's upstream is a column, the
list is filtered by it, and the health strip shows each upstream's circuit. A watch's page
always names its upstream, and says when the settings no longer do."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.integration.test_ui import DEADLINE_S, TOKENS, Bridged, rows, serve
from tests.integration.test_ui_search import total

# A second upstream, as closed a port as the default one: polls fail at once.
RUNWAY = {"BRIDGE_UPSTREAMS__RUNWAY__BASE_URL": "http://127.0.0.1:9"}


@pytest.fixture
async def one(tmp_path: Path) -> AsyncIterator[Bridged]:
    async for served in serve(tmp_path, BRIDGE_AUTH__TOKENS=TOKENS):
        yield served


@pytest.fixture
async def two(tmp_path: Path) -> AsyncIterator[Bridged]:
    async for served in serve(tmp_path, BRIDGE_AUTH__TOKENS=TOKENS, **RUNWAY):
        yield served


def upstream_cells(page: httpx.Response) -> list[str]:
    """Each row's upstream cell, in order."""
    return re.findall(
        r'<td class="upstream" data-label="Upstream" data-upstream="([^"]+)">', page.text
    )


def options(page: httpx.Response) -> list[tuple[str, bool]]:
    """The upstream field's options: each value, and whether it is marked selected (none is
    when the first, Any, is chosen)."""
    field = re.search(r'<select id="upstream" name="upstream"[^>]*>(.*?)</select>', page.text, re.S)
    assert field is not None, "no upstream field"
    found = re.findall(r'<option value="([^"]*)"( selected)?>', field.group(1))
    return [(value, bool(selected)) for value, selected in found]


def shown_upstream(page: httpx.Response) -> str:
    found = re.search(r'<dt>Upstream</dt><dd id="upstream">([^<]*)</dd>', page.text)
    assert found is not None
    return html.unescape(found.group(1))


async def test_one_upstream_has_no_column_and_no_field(one: Bridged) -> None:
    """With only the default upstream, the list stays as it was: no column, no field; the
    watch's page names it all the same."""
    watch = await one.register()
    await one.sign_in()

    page = await one.client.get("/ui/")
    assert rows(page) == [watch]
    assert upstream_cells(page) == []
    assert '<th scope="col">Upstream</th>' not in page.text
    assert 'id="upstream"' not in page.text
    assert shown_upstream(await one.client.get(f"/ui/watches/{watch}")) == "default"


async def test_several_upstreams_are_a_column_and_a_filter(two: Bridged) -> None:
    """Each row names its watch's upstream; the field offers each configured upstream and
    narrows the list (the same job id on the other upstream left out), the caption and total
    saying so; the watch's page names its upstream."""
    here = await two.register(job_id="job_7")
    there = await two.register(job_id="job_7", upstream="runway")
    await two.sign_in()

    page = await two.client.get("/ui/")
    assert rows(page) == [there, here]
    assert upstream_cells(page) == ["runway", "default"]
    assert '<th scope="col">Upstream</th>' in page.text
    assert options(page) == [("", False), ("default", False), ("runway", False)]

    runway = await two.client.get("/ui/", params={"upstream": "runway"})
    assert (rows(runway), total(runway)) == ([there], "1 watch matches")
    assert options(runway) == [("", False), ("default", False), ("runway", True)]
    assert ", upstream runway, newest first</caption>" in runway.text
    both = await two.client.get("/ui/", params={"upstream": "default", "job_id": "job_7"})
    assert rows(both) == [here]
    none = await two.client.get("/ui/", params={"upstream": "runway", "outcome": "succeeded"})
    assert rows(none) == []
    assert '<td colspan="7">No watches match this filter.</td>' in none.text

    assert shown_upstream(await two.client.get(f"/ui/watches/{there}")) == "runway"
    live = await two.client.get("/ui/live", params={"upstream": "nope!"})
    assert live.status_code == 400
    assert "upstream: must be an upstream's name" in live.text


async def test_a_bad_upstream_filter_is_said_next_to_its_field(two: Bridged) -> None:
    """A name no upstream could have is a 400 page with the message next to the field and the
    value kept in it."""
    await two.register()
    await two.sign_in()

    page = await two.client.get("/ui/", params={"upstream": "Runway!"})

    assert page.status_code == 400
    message = re.search(r'<p id="error-upstream" class="field-error">([^<]*)</p>', page.text)
    assert message is not None
    assert "lower-case letters" in html.unescape(message.group(1))
    assert '<a href="#upstream">Upstream</a>' in page.text
    assert ("Runway!", True) in options(page)


async def test_a_watch_of_an_upstream_no_longer_configured_is_shown_as_such(
    tmp_path: Path,
) -> None:
    """Restarted without the upstream a watch names, the bridge lists the watch with its
    upstream (the column shows for it) and its page says the upstream is not configured and
    the watch not polled; the filter still finds it, the field keeping the name."""
    async for before in serve(tmp_path, BRIDGE_AUTH__TOKENS=TOKENS, **RUNWAY):
        there = await before.register(upstream="runway")
    async for after in serve(tmp_path, BRIDGE_AUTH__TOKENS=TOKENS):
        after.clock.advance(60)  # its clock starts where the first one's did
        here = await after.register()
        await after.sign_in()

        page = await after.client.get("/ui/")
        assert rows(page) == [here, there]
        assert upstream_cells(page) == ["default", "runway"]
        assert 'id="upstream"' not in page.text.split("</form>")[0]  # one upstream: no field
        filtered = await after.client.get("/ui/", params={"upstream": "runway"})
        assert rows(filtered) == [there]
        assert options(filtered) == [("", False), ("default", False), ("runway", True)]
        assert "runway (not configured)</option>" in filtered.text
        shown = shown_upstream(await after.client.get(f"/ui/watches/{there}"))
        assert shown == "runway (not configured: not polled until it is)"


async def test_the_health_strip_shows_each_upstreams_circuit(tmp_path: Path) -> None:
    """With several upstreams, each one's circuit is shown by name: one upstream failing opens
    its own circuit, the other's stays closed."""
    async for ui in serve(
        tmp_path,
        BRIDGE_AUTH__TOKENS=TOKENS,
        BRIDGE_UPSTREAMS__RUNWAY__CIRCUIT_CONSECUTIVE_FAILURES="1",
        **RUNWAY,
    ):
        await ui.sign_in()
        page = await ui.client.get("/ui/")
        assert circuits(page) == {"default": "closed", "runway": "closed"}

        await ui.register(upstream="runway")  # its first poll fails: the circuit opens
        async with asyncio.timeout(DEADLINE_S):
            while circuits(page)["runway"] != "open (paused)":
                await asyncio.sleep(0.05)
                page = await ui.client.get("/ui/")
        assert circuits(page) == {"default": "closed", "runway": "open (paused)"}
        assert '<span data-upstream="runway" class="circuit-open">' in page.text


def circuits(page: httpx.Response) -> dict[str, str]:
    """The health strip's circuits, by upstream: each one's state in words."""
    strip = re.search(
        r'<div data-health="circuits">\s*<dt>Upstream circuits</dt>\s*<dd>(.*?)</dd>', page.text
    )
    assert strip is not None, "no line of circuits"
    found = re.findall(
        r'<span data-upstream="([^"]+)" class="circuit-[a-z_]+">\1 ([^<]+)</span>', strip.group(1)
    )
    return dict(found)
