"""Pure: the circuit breaker that pauses upstream polling while the upstream is failing.

```
closed --(failure ratio >= threshold over the rolling window, enough requests;
          or that many failures in a row)--> open
open   --(cool-down over)--> half_open: one probe request
half_open --(probe succeeds)--> closed      (the cool-down starts again from its base)
half_open --(probe fails)--> open           (the cool-down doubles, up to its cap)
```

A failure is an upstream 5xx or a request that got no answer (timeout, connection error);
refusals (4xx) and rate limiting (429) are answers, not failures: the upstream is up. Outcomes
of requests started before the latest change of state are ignored, so a request sent before the
circuit opened cannot close it, nor a slow one re-open it. A probe that never reports (its watch
ended without a request, say) is replaced after `probe_timeout_s`.

Time is always an argument; the window is counted in `WINDOW_SLICES` slices of
`window_s / WINDOW_SLICES`, so its memory is fixed whatever the request rate.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

from service.observation import Observation

State = Literal["closed", "open", "half_open"]
STATES: tuple[State, ...] = ("closed", "half_open", "open")  # the gauge's values: 0, 1, 2
WINDOW_SLICES = 10


def is_failure(seen: Observation) -> bool:
    """Whether an observation says the upstream is failing (5xx or no answer)."""
    if seen.kind != "transient":
        return False
    return seen.http_status is None or seen.http_status >= 500


class Outcomes:
    """Requests and failures of the last `window_s`, counted in `slices` slices of time, so that
    memory is fixed whatever the rate. A clock that steps back counts in the latest slice."""

    def __init__(self, window_s: float, slices: int) -> None:
        self._slice_s = window_s / slices
        self._slices = slices
        # [slice number, requests, failures], oldest first, and their sums.
        self._buckets: deque[list[int]] = deque()
        self._requests = self._failures = 0

    def record(self, now: float, failed: bool) -> tuple[int, int]:
        """Count one request; (requests, failures) within the window, this one included."""
        current = self._drop_old(now)
        if not self._buckets or self._buckets[-1][0] < current:
            self._buckets.append([current, 0, 0])
        self._buckets[-1][1] += 1
        self._buckets[-1][2] += failed
        self._requests += 1
        self._failures += failed
        return self._requests, self._failures

    def counts(self, now: float) -> tuple[int, int]:
        """(requests, failures) within the window ending at `now`, the slice of `now` included."""
        self._drop_old(now)
        return self._requests, self._failures

    def clear(self) -> None:
        self._buckets.clear()
        self._requests = self._failures = 0

    def _drop_old(self, now: float) -> int:
        current = int(now // self._slice_s)
        while self._buckets and self._buckets[0][0] <= current - self._slices:
            _, requests, failures = self._buckets.popleft()
            self._requests -= requests
            self._failures -= failures
        return current


@dataclass(frozen=True, slots=True)
class Rules:
    """When the circuit opens and for how long: an upstream's `circuit_*` settings (config.py
    holds their defaults)."""

    window_s: float
    min_requests: int
    # A sudden outage trips at once, not once failures outweigh the window's earlier successes.
    consecutive_failures: int
    failure_ratio: float
    cooldown_s: float
    max_cooldown_s: float
    probe_timeout_s: float


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of state, with why (for the logs and metrics)."""

    before: State
    after: State
    reason: str
    at: float
    # While open: when a probe may go.
    retry_at: float | None = None


class Breaker:
    def __init__(self, rules: Rules, now: float) -> None:
        self.rules = rules
        self.state: State = "closed"
        self._since = now
        self._window = Outcomes(rules.window_s, WINDOW_SLICES)
        self._trips = 0
        self._in_a_row = 0
        self._retry_at = now
        self._probe_at: float | None = None

    @property
    def retry_at(self) -> float | None:
        """While open: when the next probe may go."""
        return self._retry_at if self.state == "open" else None

    @property
    def probe_until(self) -> float | None:
        """While half open with a probe out: when another may replace it."""
        if self.state != "half_open" or self._probe_at is None:
            return None
        return self._probe_at + self.rules.probe_timeout_s

    def unprobe(self) -> None:
        """The request `allow` admitted as the probe did not go: another may."""
        if self.state == "half_open":
            self._probe_at = None

    def allow(self, now: float) -> tuple[bool, Transition | None]:
        """Whether a request may start at `now` (and the change of state that brings)."""
        if self.state == "closed":
            return True, None
        if self.state == "open":
            if now < self._retry_at:
                return False, None
            change = self._move("half_open", "cool-down over: probing", now)
            self._probe_at = now
            return True, change
        # Half open: one probe at a time, another if it never reported.
        if self._probe_at is not None and now < self._probe_at + self.rules.probe_timeout_s:
            return False, None
        self._probe_at = now
        return True, None

    def record(self, now: float, started_at: float, failed: bool) -> Transition | None:
        """Count the outcome of a request started at `started_at`; the change it causes."""
        if started_at < self._since:
            return None
        if self.state == "half_open":
            if failed:
                self._trips += 1
                return self._open("the probe failed", now)
            self._trips = 0
            self._window.clear()
            return self._move("closed", "the probe succeeded", now)
        if self.state == "open":
            return None
        requests, failures = self._window.record(now, failed)
        rules = self.rules
        self._in_a_row = self._in_a_row + 1 if failed else 0
        if self._in_a_row >= rules.consecutive_failures:
            self._trips = 1
            return self._open(f"{self._in_a_row} requests in a row failed (5xx or no answer)", now)
        if requests >= rules.min_requests and failures >= rules.failure_ratio * requests:
            self._trips = 1
            reason = (
                f"{failures} of the last {requests} requests failed (5xx or no answer) within "
                f"{rules.window_s:g} s"
            )
            return self._open(reason, now)
        return None

    def _open(self, reason: str, now: float) -> Transition:
        rules = self.rules
        cooldown = min(rules.cooldown_s * 2 ** min(self._trips - 1, 30), rules.max_cooldown_s)
        self._retry_at = now + cooldown
        self._probe_at = None
        self._window.clear()
        self._in_a_row = 0
        return self._move("open", reason, now)

    def _move(self, after: State, reason: str, now: float) -> Transition:
        before, self.state, self._since = self.state, after, now
        return Transition(before, after, reason, now, self.retry_at)
