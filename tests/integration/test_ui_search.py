"""The dashboard's list searched as an operator would (in process): by the start of a job id,
by a metadata value, by creation time, with the total of what matches and each watch's
metadata shown; a bad value answered with the form still filled in and a message next to its
field."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from service.events import iso8601
from tests.integration.test_ui import TOKENS, Bridged, rows, serve


@pytest.fixture
async def ui(tmp_path: Path) -> AsyncIterator[Bridged]:
    async for served in serve(tmp_path, BRIDGE_AUTH__TOKENS=TOKENS):
        yield served


def total(page: httpx.Response) -> str:
    found = re.search(r'<p id="total">([^<]*)</p>', page.text)
    assert found is not None
    return found.group(1)


def field_value(page: httpx.Response, name: str) -> str:
    found = re.search(rf'<input id="{name}" name="{name}" value="([^"]*)"', page.text)
    assert found is not None, name
    return html.unescape(found.group(1))


async def test_the_list_finds_a_job_id_start_a_metadata_value_and_a_time_range(
    ui: Bridged,
) -> None:
    """Each search narrows the rows, the total counts every match, and the form keeps it."""
    first = await ui.register(job_id="ord-1001", metadata={"order_id": "A-77", "n": 5})
    created = ui.clock.now()
    ui.clock.advance(60)
    second = await ui.register(job_id="ord-1002", metadata={"order_id": 1234})
    third = await ui.register(job_id="img-9", metadata={"order_id": "1234"})
    await ui.sign_in()

    everything = await ui.client.get("/ui/")
    assert total(everything) == "3 watches"
    prefix = await ui.client.get("/ui/?job_id=ord-100")
    assert (rows(prefix), total(prefix)) == ([second, first], "2 watches match")
    assert field_value(prefix, "job_id") == "ord-100"
    order = await ui.client.get("/ui/?metadata_key=order_id&metadata_value=1234")
    assert (rows(order), total(order)) == ([third, second], "2 watches match")
    assert (field_value(order, "metadata_key"), field_value(order, "metadata_value")) == (
        "order_id", "1234",
    )  # fmt: skip
    both = await ui.client.get("/ui/?job_id=ord&metadata_key=order_id&metadata_value=1234")
    assert (rows(both), total(both)) == ([second], "1 watch matches")
    since = iso8601(created + 30)[:19].replace("T", " ")
    later = await ui.client.get("/ui/", params={"created_from": since})
    assert rows(later) == [third, second]
    assert field_value(later, "created_from") == since
    earlier = await ui.client.get("/ui/", params={"created_to": since})
    assert rows(earlier) == [first]


async def test_metadata_is_shown_in_the_list_escaped(ui: Bridged) -> None:
    """A watch's metadata is a short line under its job id, its markup shown as text."""
    watch = await ui.register(metadata={"customer": "<b>Ann</b>", "order": 7})
    await ui.register(metadata={"note": "x" * 200})
    await ui.sign_in()

    page = await ui.client.get("/ui/")
    row = page.text[page.text.index(f'data-watch-id="{watch}"') :]
    assert '<span class="meta">customer: &lt;b&gt;Ann&lt;/b&gt;, order: 7</span>' in row
    assert "<b>Ann</b>" not in page.text
    assert re.search(r'<span class="meta">note: x{73}…</span>', page.text)


@pytest.mark.parametrize(
    ("query", "field", "words"),
    [
        # An order number typed in the job id box: said where to look instead.
        ({"job_id": "#1234"}, "job_id", "searched by its metadata key and value"),
        ({"metadata_key": "order_id", "metadata_value": ""}, "metadata_value", "must be given too"),
        ({"metadata_key": "", "metadata_value": "1234"}, "metadata_key", "must be given too"),
        ({"created_from": "last tuesday"}, "created_from", "ISO 8601"),
        ({"created_from": "2026-02-01", "created_to": "2026-01-01"}, "created_to", "later"),
        ({"outcome": "lost"}, "outcome", "must be one of"),
    ],
)
async def test_a_bad_filter_keeps_the_form_and_says_what_to_fix_next_to_its_field(
    ui: Bridged, query: dict[str, str], field: str, words: str
) -> None:
    """A 400 page with every filter still filled in, the field marked invalid and described
    by its message, and the message in a summary linking to the field."""
    await ui.register()
    await ui.sign_in()
    sent = {"job_id": "ord", "delivery": "none", "metadata_key": "k", "metadata_value": "v"}
    sent.update(query)

    page = await ui.client.get("/ui/", params=sent)

    assert page.status_code == 400
    assert "<h1>Bad request</h1>" not in page.text
    assert "<h1>Watches</h1>" in page.text
    assert rows(page) == []
    message = re.search(rf'<p id="error-{field}" class="field-error">([^<]*)</p>', page.text)
    assert message is not None
    assert words in html.unescape(message.group(1))
    assert f'aria-describedby="error-{field}"' in page.text
    assert f'<a href="#{field}">' in page.text
    for name, value in sent.items():
        if name in ("outcome", "delivery"):
            assert f'<option value="{value}" selected>' in page.text or name == field
        else:
            assert field_value(page, name) == value


async def test_the_page_size_is_chosen_and_kept_in_the_page_links(ui: Bridged) -> None:
    """limit=20 shows 20 rows and its Older link keeps it; another size is a 400 form that
    says which sizes there are; the skip link leads to the pager."""
    made = [await ui.register(job_id=f"job_{n}") for n in range(25)]
    await ui.sign_in()

    page = await ui.client.get("/ui/?limit=20")
    assert rows(page) == made[::-1][:20]
    assert total(page) == "25 watches"
    assert '<option value="20" selected>' in page.text
    older = re.search(r'<a href="([^"]+)" rel="next" class="older">', page.text)
    assert older is not None
    second = await ui.client.get(html.unescape(older.group(1)))
    assert rows(second) == made[::-1][20:]
    assert "limit=20" in older.group(1)
    assert '<a class="skip" href="#pages">' in page.text
    assert '<nav class="pages" id="pages" aria-label="Pages" tabindex="-1">' in page.text
    assert rows(await ui.client.get("/ui/")) == made[::-1]  # 50 by default

    wrong = await ui.client.get("/ui/?limit=7")
    assert wrong.status_code == 400
    assert "must be one of 20, 50, 100" in wrong.text


async def test_times_are_relative_to_the_request_with_the_utc_time_in_the_title(
    ui: Bridged,
) -> None:
    """Without any script: "N min ago" said against the request's time, the exact UTC time
    in the title and the datetime attribute."""
    watch = await ui.register()
    created = ui.clock.now() - 0.01
    ui.clock.advance(180)
    await ui.sign_in()

    page = await ui.client.get("/ui/")
    row = page.text[page.text.index(f'data-watch-id="{watch}"') :]
    stamp = iso8601(created)
    exact = stamp[:19].replace("T", " ") + " UTC"
    assert f'<time datetime="{stamp}" title="{exact}">3 min ago</time>' in row
