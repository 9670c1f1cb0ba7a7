"""Pure: request-rate caps (token buckets) and fair admission of due work across API keys.

`TokenBucket` is the classic bucket: `rate` tokens a second accrue up to `burst`, and a request
takes one. `Throttle` queues due items per key (FIFO within a key) and admits them under a
global bucket and one bucket per key. Keys with queued work take turns (round robin), so under
the global cap every busy key gets the same share of requests whatever its number of jobs, and
a key out of its own tokens is set aside until its next token, never holding up the others.
A key the upstream rate-limited (429) can be held until its `Retry-After` the same way.

Time is always an argument (`now`, seconds); nothing here sleeps or reads a clock. A rate of 0
means no cap.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

# A token accrued to within float rounding is a whole token: otherwise `ready_at` could say
# "now" while `take` still refuses, and a caller would spin.
_WHOLE = 1.0 - 1e-9

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


def spread(rank: int, count: int, interval_s: float, rate: float) -> float:
    """Seconds to delay the `rank`-th (from 0) of `count` polls that are all due now.

    They are spread evenly over one poll interval, or over as long as a cap of `rate` requests a
    second needs for them when that is longer (rate 0: no cap), in order.
    """
    if count <= 0:
        return 0.0
    span = max(interval_s, count / rate if rate > 0 else 0.0)
    return span * rank / count


class TokenBucket:
    """`rate` tokens a second, at most `burst` held; full at `now` when created."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate < 0 or burst < 1:
            raise ValueError("a bucket needs a rate >= 0 and a burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._at = now

    @property
    def unlimited(self) -> bool:
        return self.rate == 0

    def _refill(self, now: float) -> None:
        # A clock that steps back adds nothing (and takes nothing away).
        elapsed = max(0.0, now - self._at)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._at = max(self._at, now)

    def tokens(self, now: float) -> float:
        """Tokens available at `now` (fractional while one accrues)."""
        if self.unlimited:
            return self.burst
        self._refill(now)
        return self._tokens

    def ready_at(self, now: float) -> float:
        """The earliest time, not before `now`, at which one token is available."""
        if self.unlimited:
            return now
        self._refill(now)
        if self._tokens >= _WHOLE:
            return now
        return now + (1.0 - self._tokens) / self.rate

    def take(self, now: float) -> bool:
        """Take one token if there is one at `now`."""
        if self.unlimited:
            return True
        self._refill(now)
        if self._tokens >= _WHOLE:
            self._tokens = max(0.0, self._tokens - 1.0)
            return True
        return False


class Throttle(Generic[K, T]):
    """Due items per key, admitted fairly under a global and a per-key rate cap.

    `push` queues an item; `pop` returns the next admitted one (taking a token from the global
    bucket and from its key's), or None when no token is available now; `ready_at` says when
    `pop` may next succeed. Items that are no longer wanted are dropped by `pop` without taking a
    token (`alive`).
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        per_key_rate: float,
        per_key_burst: float,
        now: float,
    ) -> None:
        self._global = TokenBucket(rate, burst, now)
        self._per_key_rate = per_key_rate
        self._per_key_burst = per_key_burst
        self._queues: dict[K, deque[T]] = {}
        self._buckets: dict[K, TokenBucket] = {}
        # Keys with queued work: taking turns, or set aside until their next token.
        self._turns: deque[K] = deque()
        self._parked: list[tuple[float, int, K]] = []
        self._holds: dict[K, float] = {}
        self._seq = 0
        self._size = 0

    def __len__(self) -> int:
        """Items queued (some may no longer be alive)."""
        return self._size

    def __iter__(self) -> Iterator[T]:
        for queue in self._queues.values():
            yield from queue

    def push(self, key: K, item: T) -> None:
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
            self._turns.append(key)
        queue.append(item)
        self._size += 1

    @property
    def holding(self) -> bool:
        """Whether some key is (or was until lately) held."""
        return bool(self._holds)

    def hold(self, key: K, until: float) -> None:
        """Admit nothing of `key` before `until` (the upstream asked it to wait)."""
        if until > self._holds.get(key, 0.0):
            self._holds[key] = until

    def _bucket(self, key: K, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self._per_key_rate, self._per_key_burst, now)
        return bucket

    def pop(self, now: float, alive: Callable[[T], bool] = lambda _: True) -> T | None:
        """The next admitted item, or None if none may go at `now`."""
        parked = self._parked
        while parked and parked[0][0] <= now:
            self._turns.append(heapq.heappop(parked)[2])
        if not self._turns or self._global.tokens(now) < _WHOLE:
            return None
        limited = self._per_key_rate > 0
        while self._turns:
            key = self._turns.popleft()
            queue = self._queues[key]
            while queue and not alive(queue[0]):
                queue.popleft()
                self._size -= 1
            if not queue:
                self._drop(key, now)
                continue
            held = self._holds.get(key)
            if held is not None:
                if held > now:
                    self._seq += 1
                    heapq.heappush(parked, (held, self._seq, key))
                    continue
                del self._holds[key]
            if limited:
                bucket = self._bucket(key, now)
                if not bucket.take(now):
                    self._seq += 1
                    heapq.heappush(parked, (bucket.ready_at(now), self._seq, key))
                    continue
            self._global.take(now)
            item = queue.popleft()
            self._size -= 1
            if queue:
                self._turns.append(key)  # to the back: the others go first
            else:
                self._drop(key, now)
            return item
        return None

    def _drop(self, key: K, now: float) -> None:
        del self._queues[key]
        # A bucket is kept only while it has something to remember: a refilled one is the same
        # as a new one.
        bucket = self._buckets.get(key)
        if bucket is not None and bucket.tokens(now) >= bucket.burst:
            del self._buckets[key]

    def ready_at(self, now: float) -> float | None:
        """When `pop` may next return an item (`now` or later); None when nothing is queued."""
        if self._turns:
            return self._global.ready_at(now)
        if self._parked:
            return max(self._parked[0][0], self._global.ready_at(now))
        return None
