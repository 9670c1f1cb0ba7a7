"""The store's health as its calls see it: one log line when an outage begins, one when it ends.

Both backends report every call here: a `StoreUnavailable` begins an outage (or continues it)
and a call that succeeds ends it. A store that refuses writes (a full disk) still answers
reads, so such an outage is ended only by a call that wrote something. However many calls fail
meanwhile (API requests, polls, deliveries, housekeeping, gauges), an outage gives two log
lines: `store.unavailable` with the reason, then `store.recovered` with its duration.

Calls report from the event loop's thread only, so there is no lock.
"""

from __future__ import annotations

import structlog

from service.clock import Clock
from service.errors import StoreUnavailable

log = structlog.get_logger("service.store")


class StoreHealth:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._reason: str | None = None
        self._since = 0.0
        self._refusing_writes = False

    @property
    def reason(self) -> str | None:
        """Why the store is unavailable (the latest failure's reason); None while it is not."""
        return self._reason

    @property
    def refusing_writes(self) -> bool:
        """Whether the outage includes writes refused: only a write can show it is over."""
        return self._refusing_writes

    def failed(self, error: StoreUnavailable) -> None:
        """A call failed because the store is unavailable."""
        if self._reason is None:
            self._since = self._clock.now()
            log.error(
                "store.unavailable", reason=error.message, refusing_writes=error.refusing_writes
            )
        self._reason = error.message
        # Once writes were refused, a read that works says nothing about them.
        self._refusing_writes = self._refusing_writes or error.refusing_writes

    def succeeded(self, *, wrote: bool) -> None:
        """A call succeeded; `wrote`: it committed a change."""
        if self._reason is None or (self._refusing_writes and not wrote):
            return
        log.info("store.recovered", after_s=round(self._clock.now() - self._since, 1))
        self._reason = None
        self._refusing_writes = False
