"""The proxy's Prometheus metrics (prefix ``search_proxy_``), on a registry of the app's own.

Labels are bounded: route templates (never raw paths or query strings), status classes,
backends, engine operations. With several worker processes, ``PROMETHEUS_MULTIPROC_DIR`` is set
by the supervisor and ``/metrics`` aggregates every worker's values.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

# Latency buckets for a search API: sub-millisecond cache hits up to multi-second timeouts.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ProxyMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "search_proxy_requests_total",
            "HTTP requests answered, by route template, method and status class.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "search_proxy_request_duration_seconds",
            "Time from request received to response ready, by route template.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "search_proxy_requests_in_flight",
            "Requests being handled right now.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.engine_duration = Histogram(
            "search_proxy_backend_duration_seconds",
            "Time spent waiting for a search backend, by backend and operation.",
            ["backend", "operation"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.backend_errors = Counter(
            "search_proxy_backend_errors_total",
            "Backend calls that failed, by backend and operation.",
            ["backend", "operation"],
            registry=self.registry,
        )
        self.responses_by_backend = Counter(
            "search_proxy_search_responses_total",
            "Search and suggestion responses, by the backend that produced them.",
            ["route", "backend"],
            registry=self.registry,
        )

        self.zero_results = Counter(
            "search_proxy_zero_result_searches_total",
            "Text searches whose strict query matched nothing, by what was shown instead: relaxed "
            "(fewer words required), corrected (a spelling correction) or none.",
            ["outcome"],
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        """The text format for ``/metrics``: this process's values, or every worker's."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
