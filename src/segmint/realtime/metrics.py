"""Prometheus metrics of the real-time service (served at ``/metrics``).

Each service has its own registry, so several services (tests) can live in one
process. Names follow Prometheus conventions (``_total`` counters, seconds).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from segmint.realtime.events import IngestOutcome
from segmint.realtime.memberships import Change

__all__ = ["ServiceMetrics"]

# Fine between 10 and 100 ms, where the latency targets are judged.
# fmt: off
_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.06, 0.075, 0.1, 0.15,
    0.25, 0.5, 1.0, 2.5, 5.0,
)
# fmt: on


class ServiceMetrics:
    """Counters, gauges and histograms of one service.

    Examples
    --------
    >>> m = ServiceMetrics()
    >>> m.count(IngestOutcome(accepted=2, duplicate=1))
    >>> b"segmint_events_accepted_total 2.0" in m.render()
    True
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.received = Counter("segmint_events_received", "Messages received.", registry=r)
        self.accepted = Counter("segmint_events_accepted", "Messages accepted.", registry=r)
        self.duplicate = Counter(
            "segmint_events_duplicate", "Messages dropped as duplicates.", registry=r
        )
        self.rejected = Counter(
            "segmint_events_rejected", "Messages rejected, by reason.", ["reason"], registry=r
        )
        self.refused = Counter(
            "segmint_requests_refused",
            "Intake requests refused as over the limits (not kept), by code.",
            ["code"],
            registry=r,
        )
        self.requests = Histogram(
            "segmint_request_seconds",
            "HTTP request latency.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "segmint_commit_seconds",
            "Duration of one group commit: processing it and making it durable (the intake "
            "log's sync, or the warehouse commit without a log).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.flush_seconds = Histogram(
            "segmint_warehouse_flush_seconds",
            "Duration of one flush of acknowledged groups from the intake log to the warehouse.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.event_to_change = Histogram(
            "segmint_event_to_membership_seconds",
            "From receiving an event to committing the membership change it caused.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.membership_changes = Counter(
            "segmint_membership_changes",
            "Membership changes, by change and source.",
            ["change", "source"],
            registry=r,
        )
        self.consent_blocked = Counter(
            "segmint_trigger_consent_blocked",
            "Trigger entries not applied because personalization consent was withdrawn.",
            registry=r,
        )
        self.outbox_backlog = Gauge(
            "segmint_outbox_backlog", "Outbox rows not yet published.", registry=r
        )
        self.writer_backlog = Gauge(
            "segmint_writer_backlog", "Requests waiting for the writer.", registry=r
        )
        self.auth_failures = Counter(
            "segmint_auth_failures", "Requests refused for a missing or bad key.", registry=r
        )

    def count(self, outcome: IngestOutcome) -> None:
        """Add one request's outcome."""
        total = outcome.accepted + outcome.duplicate + len(outcome.rejected)
        self.received.inc(total)
        self.accepted.inc(outcome.accepted)
        self.duplicate.inc(outcome.duplicate)
        for rejection in outcome.rejected:
            self.rejected.labels(rejection.reason).inc()

    def observe_changes(self, changes: Sequence[Change]) -> None:
        """Count membership changes written to the warehouse."""
        for change in changes:
            self.membership_changes.labels(change.change, change.source).inc()

    def observe_change_latencies(self, latencies: Sequence[float]) -> None:
        """Seconds from receiving an event to the durable commit of the change it caused."""
        for seconds in latencies:
            self.event_to_change.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
