"""The dashboard in process answers an operator's first questions: how each job ended and what
became of its webhook (two things, listed, counted and filtered apart), when the next attempt is
and which of how many it will be, "Retry now", and why a delivery failed (the receiver's answer,
the error in words, retries stopped by a final status), with an attempt count that agrees with
the timeline."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.signing import new_secret
from service.store.base import (
    Attempt,
    AttemptOutcome,
    Completion,
    Delivery,
    NewDelivery,
    NewEvent,
    Progress,
    ResponseStart,
    Watch,
)
from service.ui.words import when
from tests.integration.test_ui import (
    ACME,
    DEADLINE_S,
    GLOBEX,
    TOKENS,
    Bridged,
    count,
    rows,
    serve,
)

OWNER = "test"
# The receiver's answer to the failed attempt: markup that must be shown as text.
ANSWER = '<script>alert("boom")</script> database down'


@pytest.fixture
async def ui(tmp_path: Path) -> AsyncIterator[Bridged]:
    """A bridge with two tenants, acme and globex."""
    async for served in serve(tmp_path, BRIDGE_AUTH__TOKENS=TOKENS):
        yield served


async def held(ui: Bridged, job_id: str, **changes: Any) -> Watch:
    """A watch of acme's calling back a closed loopback port, polled by `OWNER`."""
    now = ui.clock.now()
    ui.clock.advance(0.01)  # the next id is newer
    watch = Watch(
        id=f"wch_{int(now * 1000)}{job_id.replace('_', '')}", tenant="acme", job_id=job_id,
        callback_url="http://127.0.0.1:9/hooks", callback_method="POST", callback_headers={},
        metadata=None, events=("job.succeeded", "job.failed"), payload_format="envelope",
        secret=new_secret(), poll_interval_s=5, timeout_s=300, upstream_api_key=None,
        created_at=now, updated_at=now, next_poll_at=now + 600,
    )  # fmt: skip
    return await ui.bridge.store.insert_watch(
        replace(watch, **changes), lease_owner=OWNER, lease_until=now + 600
    )


async def queued(ui: Bridged, watch: Watch, position: int) -> None:
    """The upstream said the job is queued at `position`."""
    now = ui.clock.now()
    change = Progress(watch.id, 1, "queued", position, None, now + 600)
    assert not (await ui.bridge.store.record_progress(OWNER, now, [change])).lost


async def ended(ui: Bridged, watch: Watch, event_type: str, error_code: str | None) -> Delivery:
    """The job ended with the final event of `event_type` and `error_code`: its callback
    delivery, held by `OWNER`."""
    now, job_status = ui.clock.now(), "succeeded" if event_type == "job.succeeded" else "queued"
    body = orjson.dumps({"type": event_type, "error_code": error_code})
    final = NewDelivery(f"msg_{watch.id[4:]}", event_type, body, True)
    event = NewEvent(f"evt_{watch.id[4:]}", event_type, True, body, final, error_code)
    error = None if error_code is None else f"no terminal status within 300 s ({job_status})"
    done = Completion(watch.id, 1, job_status, error, event)
    [delivery] = await ui.bridge.store.complete_watch(OWNER, now, done, now + 600)
    return delivery


async def failed_once(ui: Bridged, delivery: Delivery, **changes: Any) -> Attempt:
    """The receiver answered the delivery's first attempt with a 500 and `ANSWER`; the next
    attempt is due in 5 minutes."""
    now = ui.clock.now()
    attempt = Attempt(
        delivery.id, delivery.event_type, 1, now, 0.02, 500, "HTTP 500", now + 300,
        verdict="retry", response=ResponseStart(ANSWER, len(ANSWER), False, "text/html"),
    )  # fmt: skip
    attempt = replace(attempt, **changes)
    outcome: AttemptOutcome = "retry" if attempt.verdict == "retry" else "failed"
    await ui.bridge.store.record_attempt(OWNER, delivery, attempt, outcome, now)
    return attempt


async def attempts_of(ui: Bridged, watch: Watch, n: int) -> list[Attempt]:
    """The watch's attempts once there are `n` of them (within DEADLINE_S)."""
    async with asyncio.timeout(DEADLINE_S):
        for _ in itertools.count():
            found = await ui.bridge.store.list_attempts("acme", watch.id)
            if len(found) >= n:
                break
            await asyncio.sleep(0.02)
    return found


def cell(page: str, watch_id: str, name: str) -> str:
    """The text of the `name` cell of the watch's row in the list (tags left out)."""
    row = re.search(rf'<tr data-watch-id="{watch_id}"[^>]*>(.*?)</tr>', page, re.S)
    assert row is not None
    found = re.search(rf'<td class="{name}"[^>]*>(.*?)</td>', row.group(1), re.S)
    assert found is not None
    return re.sub(r"<[^>]+>", "", found.group(1)).strip()


def summary(page: str, term: str) -> str:
    found = re.search(rf"<dt>{term}</dt><dd[^>]*>(.*?)</dd>", page, re.S)
    assert found is not None, term
    return re.sub(r"<[^>]+>", "", found.group(1)).strip()


# The job's outcome and the delivery's state, apart.


async def test_a_timed_out_job_is_shown_timed_out_not_queued(ui: Bridged) -> None:
    """A job the upstream left queued until the watch's timeout shows as timed out, in the list
    and on its page, with no job status or queue position left over; while it was queued, both
    showed."""
    watch = await held(ui, "job_slow")
    await queued(ui, watch, 5)
    await ui.sign_in()
    listing = await ui.client.get("/ui/")
    assert cell(listing.text, watch.id, "outcome") == "In progress queued (#5 in queue)"

    await ended(ui, watch, "job.failed", "timeout")

    listing = await ui.client.get("/ui/")
    assert cell(listing.text, watch.id, "outcome") == "Timed out"
    assert cell(listing.text, watch.id, "delivery") == "Pending"
    page = (await ui.client.get(f"/ui/watches/{watch.id}")).text
    assert summary(page, "Job") == "Timed out"
    assert summary(page, "Delivery") == "Pending"
    assert "in queue" not in page


async def test_a_watch_cancelled_while_queued_keeps_no_queue_position(ui: Bridged) -> None:
    """Cancelled while its job was fifth in the queue, the watch shows the outcome cancelled,
    no delivery, and no queue position (in the API either)."""
    watch = await held(ui, "job_queued")
    await queued(ui, watch, 5)
    await ui.sign_in()

    answer = await ui.client.delete(f"/v1/watches/{watch.id}", headers=ACME)

    assert answer.json()["queue_position"] is None
    assert (answer.json()["outcome"], answer.json()["delivery"]) == ("cancelled", "none")
    listing = await ui.client.get("/ui/")
    assert cell(listing.text, watch.id, "outcome") == "Cancelled"
    assert cell(listing.text, watch.id, "delivery") == "None"
    assert "in queue" not in (await ui.client.get(f"/ui/watches/{watch.id}")).text


async def test_the_list_counts_and_filters_jobs_and_deliveries_apart(ui: Bridged) -> None:
    """A failed generation whose webhook was delivered counts as a failed job and a delivered
    webhook; each filter finds it by its own half, and the two together narrow the list."""
    generation_failed = await held(ui, "job_bad")
    delivery = await ended(ui, generation_failed, "job.failed", "generation_failed")
    now = ui.clock.now()
    accepted = Attempt(delivery.id, delivery.event_type, 1, now, 0.01, 204, None, None,
                       verdict="succeeded")  # fmt: skip
    await ui.bridge.store.record_attempt(OWNER, delivery, accepted, "succeeded", now)
    succeeded = await held(ui, "job_good")
    await ended(ui, succeeded, "job.succeeded", None)
    polling = await held(ui, "job_running")
    await ui.register(GLOBEX, job_id="job_theirs")
    await ui.sign_in()

    page = await ui.client.get("/ui/")

    assert [count(page, "outcome", o) for o in ("failed", "succeeded", "in_progress")] == [1, 1, 1]
    states = ("delivered", "pending", "none", "failed", "cancelled")
    assert [count(page, "delivery", d) for d in states] == [1, 1, 1, 0, 0]
    assert 'data-outcome="unknown"' not in page.text  # shown only when some are
    assert rows(await ui.client.get("/ui/?outcome=failed")) == [generation_failed.id]
    assert rows(await ui.client.get("/ui/?delivery=delivered")) == [generation_failed.id]
    assert rows(await ui.client.get("/ui/?delivery=none")) == [polling.id]
    both = await ui.client.get("/ui/?outcome=succeeded&delivery=delivered")
    assert rows(both) == []
    assert "No watches match this filter." in both.text
    assert '<option value="delivered" selected>' in both.text


# When the next attempt is, and "Retry now".


async def test_the_watch_page_says_when_the_next_attempt_is_and_which(ui: Bridged) -> None:
    """A delivery that failed once and waits lists its attempts, the next one's time and its
    place in the schedule, with a Retry now button; the timeline's attempt says so too."""
    watch = await held(ui, "job_retry")
    failure = await failed_once(ui, await ended(ui, watch, "job.succeeded", None))
    await ui.sign_in()

    page = (await ui.client.get(f"/ui/watches/{watch.id}")).text

    most = 1 + len(ui.bridge.settings.delivery.retry_schedule_s)
    row = re.search(rf'<tr data-delivery-id="{failure.delivery_id}".*?</tr>', page, re.S)
    assert row is not None
    assert f">1 of {most}</td>" in row.group(0)
    assert failure.next_attempt_at is not None
    due = when(failure.next_attempt_at)
    assert f">{due}</time> (attempt 2 of {most})" in row.group(0)
    assert f"/ui/watches/{watch.id}/deliveries/{failure.delivery_id}/retry" in row.group(0)
    assert "Retry now" in row.group(0)
    assert f"Attempt 1 of {most}: job.succeeded" in page
    assert f"Retry scheduled at {due} (attempt 2 of {most})." in page


async def test_retry_now_makes_the_next_attempt_at_once(ui: Bridged) -> None:
    """Retry now brings the waiting attempt forward: it is made at once (to a closed port,
    so it fails again, worded "connection refused"), and the page flashes which attempt."""
    watch = await held(ui, "job_now")
    failure = await failed_once(ui, await ended(ui, watch, "job.succeeded", None))
    await ui.sign_in()
    csrf = await ui.csrf(f"/ui/watches/{watch.id}")
    action = f"/ui/watches/{watch.id}/deliveries/{failure.delivery_id}/retry"

    done = await ui.client.post(action, data={"csrf": csrf})

    assert (done.status_code, done.headers["location"]) == (303, f"/ui/watches/{watch.id}")
    most = 1 + len(ui.bridge.settings.delivery.retry_schedule_s)
    page = (await ui.client.get(f"/ui/watches/{watch.id}")).text
    assert f'id="flash">Retry started: attempt 2 of {most} of {failure.delivery_id}' in page
    attempts = await attempts_of(ui, watch, 2)
    assert attempts[1].started_at == ui.clock.now()  # not five minutes later
    assert (attempts[1].number, attempts[1].error) == (2, "connection refused")
    page = (await ui.client.get(f"/ui/watches/{watch.id}")).text
    assert summary(page, "Delivery attempts") == "2"
    assert len(re.findall(r'data-kind="attempt"', page)) == 2


async def test_retry_now_is_refused_with_a_reason_when_nothing_is_pending(ui: Bridged) -> None:
    """A delivery that ended offers no Retry now; a retry sent anyway is flashed back with the
    reason. Another tenant's watch is a 404, and a form without its CSRF token a 403."""
    watch = await held(ui, "job_done")
    failure = await failed_once(
        ui, await ended(ui, watch, "job.succeeded", None), status_code=404, error="HTTP 404",
        next_attempt_at=None, verdict="final_status",
    )  # fmt: skip
    theirs = await ui.register(GLOBEX, job_id="job_theirs")
    await ui.sign_in()
    page = (await ui.client.get(f"/ui/watches/{watch.id}")).text
    assert "Retry now" not in page
    csrf = await ui.csrf(f"/ui/watches/{watch.id}")
    action = f"/ui/watches/{watch.id}/deliveries/{failure.delivery_id}/retry"

    refused = await ui.client.post(action, data={"csrf": csrf})

    assert refused.status_code == 303
    page = (await ui.client.get(f"/ui/watches/{watch.id}")).text
    assert re.search(r'id="flash">Not done: delivery msg_\w+ is failed, not pending', page)
    other = f"/ui/watches/{theirs}/deliveries/{failure.delivery_id}/retry"
    assert (await ui.client.post(other, data={"csrf": csrf})).status_code == 404
    assert (await ui.client.post(action, data={})).status_code == 403


# Why a delivery failed.


async def test_the_receivers_answer_is_shown_escaped_with_its_type(ui: Bridged) -> None:
    """A failed attempt shows the start of the receiver's answer as text in a <pre> (its markup
    escaped), with its size and Content-Type."""
    watch = await held(ui, "job_answer")
    await failed_once(ui, await ended(ui, watch, "job.succeeded", None))
    await ui.sign_in()

    page = (await ui.client.get(f"/ui/watches/{watch.id}")).text

    assert f"{len(ANSWER)} bytes of the body (text/html)." in page
    shown = re.search(r'<div class="answer">.*?<pre [^>]*>(.*?)</pre>', page, re.S)
    assert shown is not None
    assert shown.group(1) == ("&lt;script&gt;alert(&#34;boom&#34;)&lt;/script&gt; database down")
    assert "<script>alert" not in page


async def test_retries_stopped_by_a_final_status_say_so(ui: Bridged) -> None:
    """A 404 the endpoint lists as final ends the delivery at its first attempt, and the
    page says that is why retries stopped, on the attempt, on the delivery and where a
    redelivery offers its endpoint."""
    watch = await held(ui, "job_final", final_statuses=(404,))
    await failed_once(
        ui, await ended(ui, watch, "job.succeeded", None), status_code=404, error="HTTP 404",
        next_attempt_at=None, verdict="final_status",
    )  # fmt: skip
    await ui.sign_in()

    page = (await ui.client.get(f"/ui/watches/{watch.id}")).text

    sentence = "Retries stopped: 404 is a final status for this endpoint (final_statuses)."
    assert page.count(sentence) == 3
    assert summary(page, "Delivery") == "Failed"
    assert summary(page, "Job") == "Succeeded"
