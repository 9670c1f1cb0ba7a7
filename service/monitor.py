"""What the bridge says about itself: whether it is ready, its Prometheus metrics, and the
figures of them that the dashboard shows."""

from __future__ import annotations

from dataclasses import dataclass

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from service.clock import Clock
from service.delivery import Deliverer
from service.errors import StoreError, StoreUnavailable
from service.event_hub import EventHub
from service.metrics import Metrics
from service.pollers import Pollers
from service.store.base import Store


@dataclass(frozen=True, slots=True)
class Health:
    """The figures of /metrics that say whether the bridge is keeping up."""

    circuit: str  # closed, half_open, open: the worst of `circuits`
    circuits: dict[str, str]  # each upstream's, by name, the default one first
    delivery_backlog: int  # `bridge_delivery_backlog` (counted every few seconds)
    poll_backlog: int  # `bridge_poll_backlog`
    attempts: int  # webhook attempts of this process over the last hour
    failures: int  # of those, the ones that did not succeed

    @property
    def failure_rate(self) -> float | None:
        return self.failures / self.attempts if self.attempts else None


class Monitor:
    def __init__(
        self,
        store: Store,
        poller: Pollers,
        deliverer: Deliverer,
        metrics: Metrics,
        hub: EventHub,
        scheduler: AsyncIOScheduler,
        clock: Clock,
    ) -> None:
        self._store = store
        self._poller = poller
        self._deliverer = deliverer
        self._metrics = metrics
        self._hub = hub
        self._scheduler = scheduler
        self._clock = clock
        self._draining = False

    @property
    def draining(self) -> bool:
        return self._draining

    def drain(self) -> None:
        """From now on the bridge is not ready: it is shutting down (`Bridge.drain`)."""
        self._draining = True

    async def ready(self) -> str | None:
        """None when ready, else why not."""
        if self._draining:
            return "draining: the bridge is shutting down"
        if not self._scheduler.running or not self._poller.running:
            return "the scheduler is not running"
        # While writes are refused, a query that works says nothing about them: try one.
        try:
            await self._store.ping(write=self._store.health.refusing_writes)
        except StoreUnavailable as error:
            return f"the store is unavailable: {error}"
        except StoreError as error:
            return f"the store does not answer: {error}"
        return None

    def render_metrics(self, accept: str) -> tuple[bytes, str]:
        """The exposition `accept` asks for and its media type, with the gauges read from the
        running parts now."""
        metrics = self._metrics
        metrics.held_watches.set(self._poller.held_count)
        metrics.poll_backlog.set(self._poller.due_backlog())
        for upstream, waiting in self._poller.throttled().items():
            metrics.throttled.labels(upstream).set(waiting)
        metrics.deliveries_in_flight.set(self._deliverer.in_flight)
        metrics.store_up.set(self._store.health.reason is None)
        metrics.open_streams.set(self._hub.listening)
        return metrics.render(accept)

    def health(self) -> Health:
        backlog = self._metrics.registry.get_sample_value("bridge_delivery_backlog") or 0.0
        attempts, failures = self._metrics.recent_attempts.counts(self._clock.now())
        return Health(
            circuit=self._poller.circuit_state,
            circuits=dict(self._poller.circuits()),
            delivery_backlog=int(backlog),
            poll_backlog=self._poller.due_backlog(),
            attempts=attempts,
            failures=failures,
        )
