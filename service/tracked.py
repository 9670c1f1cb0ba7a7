"""The watches this process holds, as the poller keeps them: only what polling and its events
need, grouped by *target* (one job, one API key: polled with one request).

The rest of a watch (callback, headers, secret) stays in the store, which hands it to the
delivery at completion. Polling rules and event sets repeat across watches, so held watches
share one instance of each.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, field
from typing import Any

from service import events, polling
from service.config import PollSettings
from service.ids import new_id
from service.store.base import NewDelivery, NewEvent, Progress, Watch

TargetKey = tuple[str, str | None]  # (job id, API key)
# Distinct polling rules and event sets shared between held watches; past this many (an odd
# registration pattern), the least recently made are no longer shared rather than the cache grow
# without bound (held watches keep theirs).
SHARED_CACHE_SIZE = 1_024


@dataclass(slots=True)
class Tracked:
    """A held watch."""

    watch_id: str
    job_id: str
    metadata: dict[str, Any] | None
    payload_format: str
    upstream: str
    # The event types its own callback gets (shared instances); empty: it has no callback.
    callback_events: frozenset[str]
    token: int
    state: polling.State
    rules: polling.Rules  # shared by every watch with the same interval and timeout
    next_poll_at: float

    def subject(self) -> events.Subject:
        return events.Subject(
            self.watch_id, self.job_id, self.metadata, self.payload_format, self.upstream
        )

    def event(self, event: events.Event, now: float) -> NewEvent:
        """`event` to record: its envelope, and its callback delivery if the watch wants it."""
        subject, event_id = self.subject(), new_id("evt", now)
        body = events.envelope(subject, event, now, event_id)
        final = event.type in events.FINAL_EVENTS
        callback = None
        if event.type in self.callback_events:
            sent = (
                body
                if self.payload_format != "raw"
                else events.render(subject, event, now, event_id)
            )
            callback = NewDelivery(new_id("msg", now), event.type, sent, final)
        return NewEvent(event_id, event.type, final, body, callback, event.error_code)

    def progress(self, recorded: tuple[NewEvent, ...]) -> Progress:
        """Its state as a change to write, with the events `recorded` since the last write."""
        state = self.state
        return Progress(
            watch_id=self.watch_id,
            lease_token=self.token,
            job_status=state.job_status,
            queue_position=state.queue_position,
            last_error=state.last_error,
            next_poll_at=self.next_poll_at,
            events=recorded,
        )


@dataclass(slots=True)
class Target:
    key: TargetKey
    watches: dict[str, Tracked] = field(default_factory=dict)
    due: float = 0.0
    # Raised at each rescheduling: heap and queue entries of an older generation are stale.
    generation: int = 0
    polling: bool = False

    def next_poll_at(self) -> float:
        return min(t.next_poll_at for t in self.watches.values())


class Holdings:
    """The held watches by target and by id."""

    def __init__(self, poll: PollSettings) -> None:
        self._poll = poll
        self.targets: dict[TargetKey, Target] = {}
        self._by_watch: dict[str, TargetKey] = {}

    def __len__(self) -> int:
        return len(self._by_watch)

    def __contains__(self, watch_id: str) -> bool:
        return watch_id in self._by_watch

    def add(self, watch: Watch, key: TargetKey, due: float) -> Target:
        """Hold `watch` (lease token in it), polled with `key`, first at `due`; its target."""
        state = polling.State(
            created_at=watch.created_at,
            job_status=_intern(watch.job_status),
            queue_position=watch.queue_position,
            last_error=watch.last_error,
        )
        poll = self._poll
        rules = _shared_rules(
            interval_s=watch.poll_interval_s, min_interval_s=poll.min_interval_s,
            timeout_s=watch.timeout_s, jitter=poll.jitter, max_backoff_s=poll.max_backoff_s,
            not_found_grace_s=poll.not_found_grace_s,
        )  # fmt: skip
        tracked = Tracked(
            watch.id, watch.job_id, watch.metadata, sys.intern(watch.payload_format),
            sys.intern(watch.upstream), _shared_events(watch.events if watch.callback_url else ()),
            watch.lease_token, state, rules, due,
        )  # fmt: skip
        target = self.targets.get(key)
        if target is None:
            target = self.targets[key] = Target(key)
        target.watches[watch.id] = tracked
        self._by_watch[watch.id] = key
        return target

    def remove(self, watch_id: str) -> Target | None:
        """Let go of a watch; its target when that is left without watches (now stale)."""
        key = self._by_watch.pop(watch_id, None)
        if key is None:
            return None
        target = self.targets[key]
        target.watches.pop(watch_id, None)
        if target.watches:
            return None
        del self.targets[key]
        target.generation += 1
        return target

    def leases(self) -> list[tuple[str, int]]:
        """(id, lease token) of every held watch."""
        return [
            (watch_id, tracked.token)
            for target in self.targets.values()
            for watch_id, tracked in target.watches.items()
        ]


_shared_rules = functools.lru_cache(maxsize=SHARED_CACHE_SIZE)(polling.Rules)


@functools.lru_cache(maxsize=SHARED_CACHE_SIZE)
def _shared_events(names: tuple[str, ...]) -> frozenset[str]:
    return frozenset(sys.intern(name) for name in names)


def _intern(text: str | None) -> str | None:
    # Statuses repeat across every held watch: one string each instead of one per watch.
    return None if text is None else sys.intern(text)
