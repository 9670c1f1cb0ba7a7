"""Prometheus metrics: base units, `_total` counters, no per-job labels, no `_created` series.

One registry per bridge (not the process-global one), so several bridges in one process, as in
tests, don't collide. `/metrics` speaks OpenMetrics to a scraper that asks for it and the
Prometheus text format otherwise, as the client library's own encoder choice decides.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import get_args

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder

from service import breaker
from service.config import DEFAULT_UPSTREAM
from service.observation import Kind, Observation
from service.store.base import Attempt, AttemptOutcome, Delivery

_FAST = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SLOW = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 7200.0, 86400.0)


@dataclass(frozen=True, slots=True)
class _PollSeries:
    """An upstream's series that every poll records, bound once: `labels()` looks a child up
    under a lock on each call."""

    requests: dict[str, Counter]  # by outcome
    duration: Histogram
    lateness: Histogram


class Metrics:
    def __init__(self, upstreams: Sequence[str] = (DEFAULT_UPSTREAM,)) -> None:
        """`upstreams` are the names of the configured upstreams: their series exist from the
        start, at zero."""
        # A `_created` series per counter and histogram doubles the series and nothing reads
        # them; the client library's switch is process-wide, and the process is the bridge's.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # the library leaves it untyped
        # Webhook attempts of the last hour, in minutes: the dashboard's delivery failure rate,
        # the same figure as `1 - rate(bridge_delivery_attempts_total{outcome="succeeded"}[1h])
        # / rate(bridge_delivery_attempts_total[1h])` over this process's attempts.
        self.recent_attempts = breaker.Outcomes(3600.0, 60)
        self.registry = registry = CollectorRegistry()
        gauge = functools.partial(Gauge, registry=registry)
        counter = functools.partial(Counter, registry=registry)
        histogram = functools.partial(Histogram, registry=registry)
        self.watches = gauge("bridge_watches", "Watches by status.", ["status"])
        self.held_watches = gauge("bridge_held_watches", "Watches this process holds the lease of.")
        self.poll_backlog = gauge(
            "bridge_poll_backlog",
            "Polls that are due and not started yet (a growing value means falling behind).",
        )
        self.delivery_backlog = gauge(
            "bridge_delivery_backlog",
            "Webhook attempts that are due and not started by any replica.",
        )
        self.deliveries_in_flight = gauge(
            "bridge_deliveries_in_flight",
            "Webhook attempts in progress (with the sender process: handed to it, up to"
            " four times the limits, of which it makes at most the limits at once).",
        )
        self.sender_exits = counter(
            "bridge_delivery_sender_exits_total",
            "Sender processes (delivery.sender = process) that exited while still needed;"
            " each is replaced at the next webhook.",
        )
        self.upstream_requests = counter(
            "bridge_upstream_requests_total",
            "Upstream polls by upstream and outcome: progress, terminal, refused (400/401/404),"
            " transient.",
            ["upstream", "outcome"],
        )
        self.upstream_duration = histogram(
            "bridge_upstream_request_duration_seconds",
            "Duration of upstream polls, by upstream.",
            ["upstream"],
            buckets=_FAST,
        )
        self.poll_lateness = histogram(
            "bridge_poll_lateness_seconds",
            "How long after it was due each poll started, by upstream.",
            ["upstream"],
            buckets=_FAST,
        )
        self.delivery_attempts = counter(
            "bridge_delivery_attempts_total",
            "Webhook attempts by outcome: succeeded, retry, failed (attempts ran out), gone.",
            ["outcome"],
        )
        self.delivery_duration = histogram(
            "bridge_delivery_attempt_duration_seconds",
            "Duration of webhook attempts.",
            buckets=_FAST,
        )
        self.notification_latency = histogram(
            "bridge_notification_latency_seconds",
            "From the upstream's final status seen to the receiver's 2xx.",
            buckets=_SLOW,
        )
        self.circuit_state = gauge(
            "bridge_upstream_circuit_state",
            "Each upstream's circuit breaker: 0 closed (polling), 1 half open (probing), 2 open"
            " (paused).",
            ["upstream"],
        )
        self.circuit_transitions = counter(
            "bridge_upstream_circuit_transitions_total",
            "Changes of an upstream's circuit breaker's state, by the state entered.",
            ["upstream", "state"],
        )
        self.store_up = gauge(
            "bridge_store_up",
            "1 while the store is usable, 0 while it is unreachable or refuses writes (a full"
            " disk); the reason is in the log (store.unavailable) and in /readyz.",
        )
        self.store_up.set(1)
        self.throttled = gauge(
            "bridge_upstream_throttled",
            "Due polls waiting for the request-rate cap or the circuit breaker, by upstream.",
            ["upstream"],
        )
        self.open_streams = gauge(
            "bridge_open_streams",
            "Long-polls, event streams and dashboard live streams held open by this process.",
        )
        self._poll_series: dict[str, _PollSeries] = {}
        for upstream in upstreams:
            self._polls(upstream)
            for state in breaker.STATES:
                self.circuit_transitions.labels(upstream, state)
            self.circuit_state.labels(upstream).set(0)
            self.throttled.labels(upstream).set(0)
        for outcome in ("succeeded", "retry", "failed", "gone"):
            self.delivery_attempts.labels(outcome)

    def _polls(self, upstream: str) -> _PollSeries:
        series = self._poll_series.get(upstream)
        if series is None:
            requests = {
                kind: self.upstream_requests.labels(upstream, kind) for kind in get_args(Kind)
            }
            series = _PollSeries(
                requests,
                self.upstream_duration.labels(upstream),
                self.poll_lateness.labels(upstream),
            )
            self._poll_series[upstream] = series
        return series

    def polled(self, upstream: str, seen: Observation, duration_s: float) -> None:
        series = self._polls(upstream)
        series.requests[seen.kind].inc()
        series.duration.observe(duration_s)

    def poll_started(self, upstream: str, lateness_s: float) -> None:
        self._polls(upstream).lateness.observe(lateness_s)

    def circuit_changed(self, upstream: str, change: breaker.Transition) -> None:
        self.circuit_state.labels(upstream).set(breaker.STATES.index(change.after))
        self.circuit_transitions.labels(upstream, change.after).inc()

    def attempted(
        self, delivery: Delivery, attempt: Attempt, outcome: AttemptOutcome, now: float
    ) -> None:
        self.delivery_attempts.labels(outcome).inc()
        self.recent_attempts.record(now, outcome != "succeeded")
        self.delivery_duration.observe(attempt.duration_s)
        if outcome == "succeeded" and delivery.final and delivery.created_at:
            self.notification_latency.observe(max(0.0, now - delivery.created_at))

    def render(self, accept: str) -> tuple[bytes, str]:
        """The exposition in the format the `Accept` header asks for, and its media type."""
        encode, media_type = choose_encoder(accept)
        return encode(self.registry), media_type
