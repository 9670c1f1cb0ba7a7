"""What the bridge says about itself: whether it is ready, its Prometheus metrics, and the
figures of them that the dashboard shows."""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass
class Monitor:
    store: Store
    poller: Pollers
    deliverer: Deliverer
    metrics: Metrics
    hub: EventHub
    scheduler: AsyncIOScheduler
    clock: Clock
    draining: bool = field(default=False, init=False)

    def drain(self) -> None:
        """From now on the bridge is not ready: it is shutting down (`Bridge.drain`)."""
        self.draining = True

    async def ready(self) -> str | None:
        """None when ready, else why not."""
        if self.draining:
            return "draining: the bridge is shutting down"
        if not self.scheduler.running or not self.poller.running:
            return "the scheduler is not running"
        # While writes are refused, a query that works says nothing about them: try one.
        try:
            await self.store.ping(write=self.store.health.refusing_writes)
        except StoreUnavailable as error:
            return f"the store is unavailable: {error}"
        except StoreError as error:
            return f"the store does not answer: {error}"
        return None

    def render_metrics(self, accept: str) -> tuple[bytes, str]:
        """The exposition `accept` asks for and its media type, with the gauges read from the
        running parts now."""
        metrics = self.metrics
        metrics.held_watches.set(self.poller.held_count)
        metrics.poll_backlog.set(self.poller.due_backlog())
        for upstream, waiting in self.poller.throttled().items():
            metrics.throttled.labels(upstream).set(waiting)
        metrics.deliveries_in_flight.set(self.deliverer.in_flight)
        metrics.store_up.set(self.store.health.reason is None)
        metrics.open_streams.set(self.hub.listening)
        return metrics.render(accept)

    def health(self) -> Health:
        backlog = self.metrics.registry.get_sample_value("bridge_delivery_backlog") or 0.0
        attempts, failures = self.metrics.recent_attempts.counts(self.clock.now())
        return Health(
            circuit=self.poller.circuit_state,
            circuits=dict(self.poller.circuits()),
            delivery_backlog=int(backlog),
            poll_backlog=self.poller.due_backlog(),
            attempts=attempts,
            failures=failures,
        )
