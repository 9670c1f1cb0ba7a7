"""The list's filters, read from its query: for the list, its live updates and the redelivery of
the failed webhooks it shows. The same parameters as the API's listing (`watch_query`), whose
job id box finds the job ids that start with it, with a cursor and a page size."""

from __future__ import annotations

from starlette.requests import Request

from service.api import watch_query
from service.api.handlers import WATCH_ID
from service.api.state import State
from service.store.base import WatchFilter
from service.ui.dashboard import PAGE_SIZES


class BadFilters(Exception):
    """The list's query holds bad values: what to fix, per parameter."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors


def shown(request: Request[State]) -> dict[str, str]:
    """The list's filters as they were sent (trimmed, cut short), to fill the form in again."""
    query = request.query_params
    return {name: (query.get(name) or "").strip()[:200] for name in (*watch_query.FIELDS, "limit")}


def read(request: Request[State]) -> tuple[WatchFilter, str | None, int | None]:
    """The list's filters (`status` too, which links may still carry; the job id box finds
    job ids that start with it), its cursor and its page size. Raises `BadFilters`."""
    query = request.query_params
    chosen, errors = watch_query.parse(query, prefix_name="job_id")
    cursor = query.get("cursor") or None
    if cursor is not None and not WATCH_ID.fullmatch(cursor):
        errors["cursor"] = "That page link is not valid; start again from the newest watches."
    size = None
    raw = (query.get("limit") or "").strip()
    if raw:
        sizes = {str(choice): choice for choice in PAGE_SIZES}
        size = sizes.get(raw)
        if size is None:
            errors["limit"] = f"must be one of {', '.join(sizes)}"
    if errors:
        raise BadFilters(errors)
    return chosen, cursor, size
