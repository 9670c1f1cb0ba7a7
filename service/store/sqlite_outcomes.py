"""Recording many delivery attempts in SQLite with a few statements instead of three per attempt.

Why: Python's sqlite3 lets go of the GIL around every step of every statement and takes it back
afterwards. The store's thread then has to win the interpreter back from the event loop once per
statement, and each of those hand-overs interrupts the loop that is sending the webhooks. Three
statements per attempt made the store's thread the loop's busiest interrupter; a statement per
group of attempts (each a single step when no lease was lost) keeps it out of the loop's way.

Every attempt is written here with its delivery, its attempt row and its watch's counters (and,
for the final event of a watch's own callback, its status; see `rules.effect`). A `gone` also
cascades (it ends a watch or a subscription and cancels deliveries): it is written as a group of
its own, in its place in the order, followed by its `cascade`, so the records still apply in
order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from sqlite3 import Connection

from service.store import rules
from service.store.base import AttemptRecord

# Attempts per group of statements. A statement's text depends on its number of rows, so each
# size up to this has texts of its own, which the connection keeps prepared (`STATEMENTS` in
# service/store/sqlite.py): a group of any size is then one statement per table.
MOST = 64
# An attempt to record, with what it does.
_Pair = tuple[AttemptRecord, rules.Effect]
# An attempt's row, as `_attempt_row` gives it.
_ATTEMPT_COLUMNS = (
    "delivery_id, number, event_type, started_at, duration_s, status_code, error,"
    " next_attempt_at, verdict, response_body, response_size, response_truncated, response_type,"
    " series"
)
_ATTEMPT_WIDTH = 14


def record_attempts(
    db: Connection,
    owner: str,
    records: Sequence[AttemptRecord],
    cascade: Callable[[Connection, AttemptRecord, rules.Effect], None],
) -> set[str]:
    """Apply `records` in order (see `Store.record_attempts`); the ids of those whose lease
    was lost. `cascade` applies what a record that `cascades` changes besides."""
    lost: set[str] = set()
    group: list[_Pair] = []

    def flush() -> set[str]:
        found = _record_group(db, owner, group) if group else set()
        lost.update(found)
        group.clear()
        return found

    for record in records:
        effect = rules.effect(record)
        if len(group) == MOST or effect.cascades:
            flush()
        group.append((record, effect))
        if effect.cascades and record.delivery.id not in flush():
            cascade(db, record, effect)
    flush()
    return lost


def _values(rows: int, columns: int) -> str:
    row = f"({', '.join('?' * columns)})"
    return ", ".join([row] * rows)


def _record_group(db: Connection, owner: str, group: list[_Pair]) -> set[str]:
    lost = {
        row[0]
        for row in db.execute(
            f"SELECT v.column1 FROM (VALUES {_values(len(group), 2)}) AS v"  # noqa: S608
            " WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.id = v.column1"
            " AND d.lease_owner = ? AND d.lease_token = v.column2 AND d.status = 'pending')",
            [*(x for r, _ in group for x in (r.delivery.id, r.delivery.lease_token)), owner],
        )
    }
    if lost:  # rare: the others as a group of their own
        held = [pair for pair in group if pair[0].delivery.id not in lost]
        return lost | (_record_group(db, owner, held) if held else set())
    db.execute(
        "UPDATE deliveries SET attempts = deliveries.attempts + 1, status = v.column2,"  # noqa: S608
        " next_attempt_at = v.column3, ended_at = v.column4, lease_owner = NULL,"
        f" lease_expires_at = NULL FROM (VALUES {_values(len(group), 4)}) AS v"
        " WHERE deliveries.id = v.column1",
        [x for pair in group for x in _delivery_row(*pair)],
    )
    db.execute(
        f"INSERT INTO attempts ({_ATTEMPT_COLUMNS})"  # noqa: S608
        f" VALUES {_values(len(group), _ATTEMPT_WIDTH)}",
        [x for r, _ in group for x in _attempt_row(r)],
    )
    # Every attempt counts in its watch; several of a group may be of one watch (its callback's
    # and its subscriptions' deliveries), so each watch is counted once, by how many it had.
    counted = Counter(r.delivery.watch_id for r, _ in group)
    latest = {r.delivery.watch_id: r.now for r, _ in sorted(group, key=lambda p: p[0].now)}
    watches = [(watch_id, n, latest[watch_id]) for watch_id, n in counted.items()]
    db.execute(
        "UPDATE watches SET attempts = watches.attempts + v.column2,"  # noqa: S608
        f" updated_at = v.column3 FROM (VALUES {_values(len(watches), 3)}) AS v"
        " WHERE watches.id = v.column1",
        [x for row in watches for x in row],
    )
    # A watch has one final delivery to its callback (a redelivery sends it again), so no two
    # records of a group change the same watch's status.
    finals = [pair for pair in group if pair[1].counted]
    if finals:
        db.execute(
            "UPDATE watches SET"  # noqa: S608
            " last_error = COALESCE(v.column2, watches.last_error),"
            " status = COALESCE(v.column3, watches.status), completed_at = v.column4"
            f" FROM (VALUES {_values(len(finals), 4)}) AS v"
            " WHERE watches.id = v.column1 AND watches.status = 'delivering'",
            [x for pair in finals for x in _watch_row(*pair)],
        )
    return set()


def _delivery_row(r: AttemptRecord, effect: rules.Effect) -> tuple[object, ...]:
    return (r.delivery.id, effect.status, r.attempt.next_attempt_at, effect.ended_at)


def _attempt_row(r: AttemptRecord) -> tuple[object, ...]:
    """The values of `_ATTEMPT_COLUMNS` of the attempt of `r`, in its claimed delivery's series
    (its lease, checked first, keeps it the delivery's current one)."""
    a, answer = r.attempt, r.attempt.response
    return (
        r.delivery.id, a.number, a.event_type, a.started_at, a.duration_s, a.status_code,
        a.error, a.next_attempt_at, a.verdict,
        *((None,) * 4 if answer is None else (
            answer.body, answer.size, int(answer.truncated), answer.content_type
        )),
        r.delivery.series,
    )  # fmt: skip


def _watch_row(r: AttemptRecord, effect: rules.Effect) -> tuple[object, ...]:
    return (r.delivery.watch_id, r.attempt.error, effect.watch_status, effect.ended_at)
