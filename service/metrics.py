"""Prometheus metrics: base units, `_total` counters, no per-job labels.

One registry per bridge (not the process-global one), so several bridges in one process, as in
tests, don't collide.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from service import breaker
from service.store.base import Attempt, AttemptOutcome, Delivery
from service.upstream import Observation

CONTENT_TYPE = CONTENT_TYPE_LATEST
_FAST = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SLOW = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 7200.0, 86400.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.watches = Gauge("bridge_watches", "Watches by status.", ["status"], registry=registry)
        self.held_watches = Gauge(
            "bridge_held_watches", "Watches this process holds the lease of.", registry=registry
        )
        self.poll_backlog = Gauge(
            "bridge_poll_backlog",
            "Polls that are due and not started yet (a growing value means falling behind).",
            registry=registry,
        )
        self.delivery_backlog = Gauge(
            "bridge_delivery_backlog",
            "Webhook attempts that are due and not started by any replica.",
            registry=registry,
        )
        self.deliveries_in_flight = Gauge(
            "bridge_deliveries_in_flight", "Webhook attempts in progress.", registry=registry
        )
        self.upstream_requests = Counter(
            "bridge_upstream_requests_total",
            "Upstream polls by outcome: progress, terminal, refused (400/401/404), transient.",
            ["outcome"],
            registry=registry,
        )
        self.upstream_duration = Histogram(
            "bridge_upstream_request_duration_seconds",
            "Duration of upstream polls.",
            buckets=_FAST,
            registry=registry,
        )
        self.poll_lateness = Histogram(
            "bridge_poll_lateness_seconds",
            "How long after it was due each poll started.",
            buckets=_FAST,
            registry=registry,
        )
        self.delivery_attempts = Counter(
            "bridge_delivery_attempts_total",
            "Webhook attempts by outcome: succeeded, retry, failed (attempts ran out), gone.",
            ["outcome"],
            registry=registry,
        )
        self.delivery_duration = Histogram(
            "bridge_delivery_attempt_duration_seconds",
            "Duration of webhook attempts.",
            buckets=_FAST,
            registry=registry,
        )
        self.notification_latency = Histogram(
            "bridge_notification_latency_seconds",
            "From the upstream's final status seen to the receiver's 2xx.",
            buckets=_SLOW,
            registry=registry,
        )
        self.circuit_state = Gauge(
            "bridge_upstream_circuit_state",
            "Upstream circuit breaker: 0 closed (polling), 1 half open (probing), 2 open (paused).",
            registry=registry,
        )
        self.circuit_transitions = Counter(
            "bridge_upstream_circuit_transitions_total",
            "Changes of the upstream circuit breaker's state, by the state entered.",
            ["state"],
            registry=registry,
        )
        self.throttled = Gauge(
            "bridge_upstream_throttled",
            "Due polls waiting for the request-rate cap or the circuit breaker.",
            registry=registry,
        )
        for outcome in ("progress", "terminal", "refused", "transient"):
            self.upstream_requests.labels(outcome)
        for state in breaker.STATES:
            self.circuit_transitions.labels(state)
        for outcome in ("succeeded", "retry", "failed", "gone"):
            self.delivery_attempts.labels(outcome)

    def polled(self, seen: Observation, duration_s: float) -> None:
        self.upstream_requests.labels(seen.kind).inc()
        self.upstream_duration.observe(duration_s)

    def circuit_changed(self, change: breaker.Transition) -> None:
        self.circuit_state.set(breaker.STATES.index(change.after))
        self.circuit_transitions.labels(change.after).inc()

    def attempted(
        self, delivery: Delivery, attempt: Attempt, outcome: AttemptOutcome, now: float
    ) -> None:
        self.delivery_attempts.labels(outcome).inc()
        self.delivery_duration.observe(attempt.duration_s)
        if outcome == "succeeded" and delivery.final and delivery.created_at:
            self.notification_latency.observe(max(0.0, now - delivery.created_at))

    def render(self) -> bytes:
        return generate_latest(self.registry)
