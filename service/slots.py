"""The per-host and per-tenant delivery limits' bookkeeping: how many attempts run per host
and per tenant, and which wait for a slot. Pure: no I/O, no clock.

An item (a delivery, or a request in the sender process) has a host and a tenant. It runs when
both have a slot free, taking one of each; otherwise it waits in the line of its host when the
host has none, else in its tenant's. When an item ends, each of its two slots goes to the first
item in that key's line that can run: one that still lacks a slot of its other key moves to
the front of that key's line (it has waited longest), holding nothing meanwhile, so a host
busy with one tenant never holds up another tenant's other hosts, nor the reverse.

A line holds at most `line` times its key's limit; an item that would go past that is handed
back (`release`). A key is only known here while it has items running or waiting, so memory
follows what is held, not how many hosts or tenants exist.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

T = TypeVar("T")
Admission = Literal["run", "wait", "release"]


@dataclass(slots=True)
class _Key(Generic[T]):
    running: int = 0
    waiting: deque[T] = field(default_factory=deque)


class Limit(Generic[T]):
    """One limit: at most `per_key` items running per key (a host, or a tenant), and at most
    `line * per_key` more waiting in its line (`line` None: no bound). `Slots` moves the items
    through it."""

    def __init__(self, per_key: int, line: int | None) -> None:
        self.per_key = per_key
        self.capacity = (1 + line) * per_key if line is not None else sys.maxsize
        self._keys: dict[str, _Key[T]] = {}

    def free(self, key: str) -> bool:
        entry = self._keys.get(key)
        return entry is None or entry.running < self.per_key

    def running(self, key: str) -> int:
        entry = self._keys.get(key)
        return entry.running if entry else 0

    def waiting(self, key: str | None = None) -> list[T]:
        """The items in line, of one key or of all."""
        if key is not None:
            entry = self._keys.get(key)
            return list(entry.waiting) if entry else []
        return [item for entry in self._keys.values() for item in entry.waiting]

    def room(self, key: str) -> int:
        """How many more items `key` may take, running or waiting."""
        entry = self._keys.get(key)
        if entry is None:
            return self.capacity
        return max(0, self.capacity - entry.running - len(entry.waiting))

    def limits(self) -> dict[str, int]:
        """The room of every key known here (busy ones); others have `capacity`."""
        return {key: self.room(key) for key in self._keys}

    def take(self, key: str) -> None:
        entry = self._keys.get(key)
        if entry is None:
            entry = self._keys[key] = _Key()
        entry.running += 1

    def give(self, key: str) -> None:
        entry = self._keys[key]
        entry.running -= 1
        self._forget_idle(key, entry)

    def line_up(self, key: str, item: T, *, first: bool = False) -> bool:
        """Put `item` in `key`'s line (at its front when `first`, whatever its length); False
        when the line is full."""
        entry = self._keys[key]  # only a key without a free slot has a line
        if first:
            entry.waiting.appendleft(item)
            return True
        if entry.running + len(entry.waiting) >= self.capacity:
            return False
        entry.waiting.append(item)
        return True

    def pop(self, key: str) -> T | None:
        entry = self._keys.get(key)
        if entry is None or not entry.waiting:
            return None
        item = entry.waiting.popleft()
        self._forget_idle(key, entry)
        return item

    def drop_waiting(self, unwanted: Callable[[T], bool]) -> list[T]:
        dropped = []
        for key, entry in list(self._keys.items()):
            dropped += [item for item in entry.waiting if unwanted(item)]
            entry.waiting = deque(item for item in entry.waiting if not unwanted(item))
            self._forget_idle(key, entry)
        return dropped

    def _forget_idle(self, key: str, entry: _Key[T]) -> None:
        if entry.running <= 0 and not entry.waiting:
            del self._keys[key]


class Slots(Generic[T]):
    """The two limits an item must fit: `hosts` and `tenants`; `keys` gives an item's (host,
    tenant)."""

    def __init__(
        self,
        keys: Callable[[T], tuple[str, str]],
        per_host: int,
        per_tenant: int,
        line: int | None,
    ) -> None:
        self._keys = keys
        self.hosts: Limit[T] = Limit(per_host, line)
        self.tenants: Limit[T] = Limit(per_tenant, line)

    def admit(self, item: T) -> Admission:
        """Take `item`: `run` it now (its slots are taken), `wait` (kept in line), or `release`
        it (the line it would join is full; give it back)."""
        host, tenant = self._keys(item)
        for limit, key in ((self.hosts, host), (self.tenants, tenant)):
            if not limit.free(key):
                return "wait" if limit.line_up(key, item) else "release"
        self.hosts.take(host)
        self.tenants.take(tenant)
        return "run"

    def done(self, item: T) -> list[T]:
        """`item` ended: the items that run now in its place (their slots taken), if any."""
        host, tenant = self._keys(item)
        self.hosts.give(host)
        self.tenants.give(tenant)
        return [*self._serve(self.hosts, host), *self._serve(self.tenants, tenant)]

    def pass_on(self, item: T, start: Callable[[T], None]) -> T | None:
        """`item` ended: the first item that runs now in its place, for `item`'s runner to carry
        on with; `start` is given each other one. None when none runs."""
        passed = self.done(item)
        if not passed:
            return None
        first = passed.pop(0)
        for other in passed:
            start(other)
        return first

    def _serve(self, limit: Limit[T], key: str) -> list[T]:
        """Hand `key`'s free slots to its line, first come first; the items whose other key has
        no slot go to the front of that key's line, in the order they waited."""
        started, moved = [], []
        while limit.free(key) and (item := limit.pop(key)) is not None:
            host, tenant = self._keys(item)
            other, other_key = (self.tenants, tenant) if limit is self.hosts else (self.hosts, host)
            if not other.free(other_key):
                moved.append((other, other_key, item))
                continue
            self.hosts.take(host)
            self.tenants.take(tenant)
            started.append(item)
        for other, other_key, item in reversed(moved):
            other.line_up(other_key, item, first=True)
        return started

    def waiting(self) -> list[T]:
        """Every item in line."""
        return [*self.hosts.waiting(), *self.tenants.waiting()]

    def drop(self, unwanted: Callable[[T], bool]) -> list[T]:
        """Take the waiting items that are `unwanted` out of line and return them."""
        return [*self.hosts.drop_waiting(unwanted), *self.tenants.drop_waiting(unwanted)]

    def clear_waiting(self) -> list[T]:
        """Forget every waiting item (a shutdown) and return them."""
        return self.drop(lambda _: True)
