"""How each subscription's recent attempts went: the statements both SQL backends run (`$1` the
tenant, `$2` the earliest start counted) and the reading of their rows."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from service.store.base import SubscriptionHealth

_ATTEMPTS = (
    " FROM attempts a JOIN deliveries d ON d.id = a.delivery_id"
    " WHERE d.tenant = $1 AND d.subscription_id IS NOT NULL AND a.started_at >= $2"
)
_OK = "a.status_code BETWEEN 200 AND 299"
# Per subscription: its attempts, and those that got a 2xx.
COUNTS = (
    "SELECT d.subscription_id, count(*),"
    f" sum(CASE WHEN {_OK} THEN 1 ELSE 0 END){_ATTEMPTS} GROUP BY d.subscription_id"
)
# Per subscription: its latest attempt that did not get a 2xx.
ERRORS = (
    "SELECT subscription_id, started_at, error, status_code FROM ("  # noqa: S608
    " SELECT d.subscription_id, a.started_at, a.error, a.status_code, row_number() OVER"
    " (PARTITION BY d.subscription_id ORDER BY a.started_at DESC) AS n"
    f"{_ATTEMPTS} AND (a.status_code IS NULL OR NOT {_OK})) latest WHERE n = 1"
)


def read(
    counts: Iterable[Sequence[Any]], errors: Iterable[Sequence[Any]]
) -> dict[str, SubscriptionHealth]:
    """The health per subscription id from the rows of `COUNTS` and `ERRORS`."""
    latest = {row[0]: row for row in errors}
    found = {}
    for subscription_id, attempts, succeeded in counts:
        error = latest.get(subscription_id)
        found[subscription_id] = SubscriptionHealth(
            int(attempts), int(succeeded),
            *((None, None, None) if error is None else (error[1], error[2], error[3])),
        )  # fmt: skip
    return found
