"""How many streams each tenant holds open: an event stream, a long-poll or a dashboard live
stream each keeps a connection, and reads the store every second, for as long as its client
wants. A tenant may hold `most` at once in this process; the next is refused until one ends."""

from __future__ import annotations

from collections.abc import Callable

from service.errors import TooManyStreams


class OpenStreams:
    def __init__(self, most: int) -> None:
        self.most = most
        self._held: dict[str, int] = {}  # only tenants holding some

    def open(self, tenant: str) -> Callable[[], None]:
        """Count one more stream of `tenant` and return what counts it closed (once, however
        often it is called). Raises `TooManyStreams` when the tenant holds `most` already."""
        held = self._held.get(tenant, 0)
        if held >= self.most:
            raise TooManyStreams(
                f"this token already holds {self.most} open streams (event streams, long-polls "
                "and dashboard live updates), the most api.max_streams_per_tenant allows; "
                "close one first"
            )
        self._held[tenant] = held + 1
        closed = False

        def close() -> None:
            nonlocal closed
            if closed:
                return
            closed = True
            left = self._held[tenant] - 1
            if left:
                self._held[tenant] = left
            else:
                del self._held[tenant]

        return close

    def held(self, tenant: str) -> int:
        return self._held.get(tenant, 0)
