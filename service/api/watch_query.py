"""The filters of a listing of watches, read from a query string. The API's `GET /v1/watches`
and the dashboard's list take the same ones and say the same thing of a bad value: one message
per parameter, so that a form can show each next to its field."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TypeVar

from service.answers import JOB_ID, JOB_ID_RULE
from service.config import UPSTREAM_NAME, UPSTREAM_NAME_RULE
from service.store.base import DELIVERY_STATES, JOB_OUTCOMES, WATCH_STATUSES, WatchFilter

# The parameters, in the order a form shows them.
FIELDS = (
    "outcome", "delivery", "upstream", "status", "job_id", "job_id_prefix", "metadata_key",
    "metadata_value", "created_from", "created_to",
)  # fmt: skip
# A metadata key a search may name (`WatchFilter.metadata`): printable, and no quote or
# backslash, which no key a client means to search by holds.
METADATA_KEY = re.compile(r'[^"\\\x00-\x1f\x7f]{1,100}')
METADATA_KEY_RULE = "1 to 100 characters, without double quotes, backslashes or control characters"
MAX_METADATA_VALUE = 200
INSTANT_RULE = (
    "a date and time such as 2026-01-31T13:05:00Z (ISO 8601; without an offset it is UTC)"
)
JOB_ID_PREFIX_RULE = (
    f"the start of a job id ({JOB_ID_RULE}); an order number or a customer is searched by "
    "its metadata key and value"
)

C = TypeVar("C", bound=str)


def instant(raw: str) -> float | None:
    """Seconds since the epoch of an ISO 8601 date or date and time (UTC without an offset);
    None when it is not one."""
    try:
        parsed = datetime.fromisoformat(raw.strip().upper())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def parse(
    query: Mapping[str, str], prefix_name: str = "job_id_prefix"
) -> tuple[WatchFilter, dict[str, str]]:
    """The filters in `query` and, per parameter whose value is wrong, what to fix (the
    filters then leave it out). `prefix_name`: the parameter holding a job id's start."""
    errors: dict[str, str] = {}

    def text(name: str) -> str | None:
        return (query.get(name) or "").strip() or None

    def choice(name: str, choices: tuple[C, ...]) -> C | None:
        raw = text(name)
        for option in choices:
            if option == raw:
                return option
        if raw is not None:
            errors[name] = f"must be one of {', '.join(choices)}"
        return None

    def matching(name: str, rule: re.Pattern[str], message: str) -> str | None:
        raw = text(name)
        if raw is not None and not rule.fullmatch(raw):
            errors[name] = message
            return None
        return raw

    def time(name: str) -> float | None:
        raw = text(name)
        at = None if raw is None else instant(raw)
        if raw is not None and at is None:
            errors[name] = f"must be {INSTANT_RULE}"
        return at

    job_id = None
    if prefix_name != "job_id":
        job_id = matching("job_id", JOB_ID, f"must be {JOB_ID_RULE}")
    prefix = matching(prefix_name, JOB_ID, f"must be {JOB_ID_PREFIX_RULE}")
    upstream = matching(
        "upstream", UPSTREAM_NAME, f"must be an upstream's name: {UPSTREAM_NAME_RULE}"
    )
    key = matching("metadata_key", METADATA_KEY, f"must be {METADATA_KEY_RULE}")
    value = text("metadata_value")
    if value is not None and len(value) > MAX_METADATA_VALUE:
        errors["metadata_value"] = f"must be at most {MAX_METADATA_VALUE} characters"
        value = None
    elif value is not None and "\x00" in value:  # PostgreSQL cannot compare it
        errors["metadata_value"] = "must not contain NUL (U+0000) characters"
        value = None
    if key is not None and value is None and "metadata_value" not in errors:
        errors["metadata_value"] = "must be given too: the value to find under the metadata key"
    if value is not None and key is None and "metadata_key" not in errors:
        errors["metadata_key"] = "must be given too: the metadata key to look in"
    created_from, created_to = time("created_from"), time("created_to")
    if created_from is not None and created_to is not None and created_to <= created_from:
        errors["created_to"] = "must be later than the start of the range (created_from)"
        created_to = None
    filters = WatchFilter(
        status=choice("status", WATCH_STATUSES), job_id=job_id,
        outcome=choice("outcome", JOB_OUTCOMES), delivery=choice("delivery", DELIVERY_STATES),
        job_id_prefix=prefix,
        metadata=(key, value) if key is not None and value is not None else None,
        created_from=created_from, created_to=created_to, upstream=upstream,
    )  # fmt: skip
    return filters, errors
