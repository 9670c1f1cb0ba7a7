"""What the dashboard calls things: the labels of watch statuses, job outcomes and delivery
states, an attempt's place in its series, its verdict and answer in a sentence each."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar, get_args

import orjson

from service.events import iso8601
from service.store import rules
from service.store.base import (
    DELIVERY_STATES,
    JOB_OUTCOMES,
    WATCH_STATUSES,
    Attempt,
    DeliveryState,
    DeliveryStatus,
    ResponseStart,
    Watch,
)

Word = TypeVar("Word", bound=str)


def _labels(words: Iterable[Word], **exceptions: str) -> dict[Word, str]:
    """What the pages call each of `words`: itself, capitalized, `_` a space, but `exceptions`."""
    return {word: exceptions.get(word) or word.replace("_", " ").capitalize() for word in words}


STATUS_LABELS = _labels(WATCH_STATUSES)
OUTCOME_LABELS = _labels(JOB_OUTCOMES, unauthorized="Key refused")
DELIVERY_LABELS = _labels(DELIVERY_STATES)
# A delivery's own status (one event to one endpoint).
DELIVERY_STATUS_LABELS = _labels(get_args(DeliveryStatus), succeeded="Delivered", gone="Gone (410)")
# The colour of a badge, by what it says: fine, waiting, wrong, or nothing to say.
TONES = {
    "succeeded": "ok", "delivered": "ok", "in_progress": "wait", "pending": "wait",
    "failed": "bad", "timed_out": "bad", "not_found": "bad", "unauthorized": "bad",
    "bad_request": "bad", "cancelled": "off", "none": "off", "unknown": "off", "gone": "bad",
}  # fmt: skip


def delivery_of(watch: Watch) -> DeliveryState:
    """What became of the watch's delivery (`rules.delivery_state`)."""
    return rules.delivery_state(watch.status, watch.outcome)


def metadata_line(metadata: dict[str, Any] | None, limit: int = 80) -> str:
    """A watch's metadata on one line for the list, `key: value` pairs cut at `limit`
    characters (its page shows it all)."""
    if not metadata:
        return ""
    text = ", ".join(
        f"{key}: {value if isinstance(value, str) else orjson.dumps(value).decode()}"
        for key, value in metadata.items()
    )
    return text if len(text) <= limit else text[: limit - 1] + "…"


def ago(value: float, now: float) -> str:
    """How long before `now` a time was, as a person says it (`static/times.js` says the same
    in the browser): `just now`, `12 s ago`, `3 min ago`, `5 h ago`, `2 days ago`, then the
    date; a time after `now` (another clock) is `just now` within a minute, else the date."""
    seconds = now - value
    if -60 < seconds < 10:
        return "just now"
    if seconds < 0 or seconds >= 30 * 86400:
        return iso8601(value)[:10]
    for unit, size in (("s", 1), ("min", 60), ("h", 3600)):
        if seconds < size * (60 if unit != "h" else 24):
            return f"{int(seconds // size)} {unit} ago"
    days = int(seconds // 86400)
    return f"{days} day{'s' if days > 1 else ''} ago"


def said(watch: Watch) -> str:
    """What a live update says when the watch's state changed (app.js): its job's outcome and
    its delivery's state (when it has one), as the page shows them."""
    words = f"Job {watch.job_id}: {OUTCOME_LABELS[watch.outcome].lower()}"
    delivery = delivery_of(watch)
    return words if delivery == "none" else f"{words}, delivery {DELIVERY_LABELS[delivery].lower()}"


def when(value: float) -> str:
    """A time as people read it: `2026-01-02 13:04:05 UTC`."""
    return iso8601(value)[:19].replace("T", " ") + " UTC"


def place(series: int, number: int, max_attempts: int) -> str:
    """Where an attempt stands: `attempt 2 of 10`, and its series once a redelivery started
    one (`series 2, attempt 1 of 10`): each series numbers its attempts from 1."""
    attempt = f"attempt {number} of {max_attempts}"
    return attempt if series == 1 else f"series {series}, {attempt}"


def verdict(attempt: Attempt, max_attempts: int) -> str | None:
    """What the attempt meant for its delivery, in a sentence; None when it was not kept."""
    code = attempt.status_code
    match attempt.verdict:
        case "succeeded":
            return "Accepted."
        case "retry" if attempt.next_attempt_at is not None:
            following = min(attempt.number + 1, max_attempts)
            return (
                f"Retry scheduled at {when(attempt.next_attempt_at)} "
                f"({place(attempt.series, following, max_attempts)})."
            )
        case "gone":
            return "Retries stopped: the receiver answered 410 Gone, so nothing more is sent there."
        case "final_status":
            return f"Retries stopped: {code} is a final status for this endpoint (final_statuses)."
        case "exhausted":
            return f"Retries stopped: the schedule ran out after attempt {attempt.number}."
    return None


def response_note(kept: ResponseStart) -> str:
    """What is shown of an answer besides its text: its size, type and whether it was cut."""
    kind = kept.content_type or "no Content-Type"
    if kept.size == 0:
        return f"Empty body ({kind})."
    if kept.body is None:
        return f"{kept.size} bytes, not UTF-8 text ({kind}): not shown."
    cut = f"The first {kept.size} bytes" if kept.truncated else f"{kept.size} bytes"
    return f"{cut} of the body ({kind})."
