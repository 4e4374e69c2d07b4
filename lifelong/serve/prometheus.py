"""GET /metrics: request counts and latencies, and the service's state read at each scrape (Prometheus text)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from lifelong.serve.service import Service

BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class Telemetry:
    """One registry per service (never the process-wide default one)."""

    def __init__(self, service: Service):
        self.registry = CollectorRegistry()
        self.requests = Counter("lifelong_serve_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("lifelong_serve_request_seconds", "HTTP request latency by endpoint", ["endpoint"],
                                 buckets=BUCKETS, registry=self.registry)
        self.registry.register(_State(service))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _State:
    """Gauges and counters read from the service when scraped."""

    def __init__(self, service: Service):
        self.service = service

    def collect(self) -> Iterator[Metric]:
        s = self.service
        yield GaugeMetricFamily("lifelong_serve_version", "the served model version", value=s.served.version)
        yield CounterMetricFamily("lifelong_serve_samples_accepted", "samples journaled", value=s.journal.last())
        yield CounterMetricFamily("lifelong_serve_samples_learned", "samples learnt by this process",
                                  value=s.learned_total)
        yield GaugeMetricFamily("lifelong_serve_queue_depth", "accepted training samples not learnt yet",
                                value=s.journal.count(after=s.pos, canary=False))
        yield CounterMetricFamily("lifelong_serve_versions_published", "versions published by this process",
                                  value=s.published_total)
        yield CounterMetricFamily("lifelong_serve_candidates_refused", "candidate versions the guard refused",
                                  value=s.refused_total)
        yield GaugeMetricFamily("lifelong_serve_learner_up", "1 while the learner thread learns",
                                value=float(s.learner_state() == "learning"))
        accuracy = GaugeMetricFamily("lifelong_serve_canary_accuracy", "canary accuracy of the served version "
                                     "per class (at the last evaluation)", labels=["class"])
        for key, value in sorted(s.canary_report.get("accuracy", {}).items()):
            accuracy.add_metric([key], value)
        yield accuracy
