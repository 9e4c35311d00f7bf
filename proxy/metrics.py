"""The proxy's Prometheus metrics (prefix ``search_proxy_``), on a registry of the app's own.

Labels are bounded: route templates (never raw paths or query strings), status classes,
backends, engine operations. With several worker processes, ``PROMETHEUS_MULTIPROC_DIR`` is set
by the supervisor and ``/metrics`` aggregates every worker's values.
"""

from __future__ import annotations

import os
from typing import Any

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

        # The response cache (proxy.cache). A lookup is counted per tier it reached.
        self.cache_lookups = Counter(
            "search_proxy_cache_lookups_total",
            "Cache lookups by route, tier (l1, l2) and result: hit, stale (served while one "
            "background refresh runs), miss, or bypass (Redis skipped while it fails).",
            ["route", "tier", "result"],
            registry=self.registry,
        )
        self.cache_responses = Counter(
            "search_proxy_cache_responses_total",
            "Cached routes' responses by their X-Cache value (hit, stale, miss, bypass).",
            ["route", "cache"],
            registry=self.registry,
        )
        self.cache_coalesced = Counter(
            "search_proxy_cache_coalesced_total",
            "Requests answered by another request's fill instead of the engine: joined in this "
            "worker (scope=worker) or filled by another process holding the Redis lock (cluster).",
            ["route", "scope"],
            registry=self.registry,
        )
        self.cache_refreshes = Counter(
            "search_proxy_cache_refreshes_total",
            "Background refreshes of stale entries, by route and outcome (ok, failed).",
            ["route", "outcome"],
            registry=self.registry,
        )
        self.cache_redis_errors = Counter(
            "search_proxy_cache_redis_errors_total",
            "Cache calls to Redis that failed or timed out, by operation.",
            ["operation"],
            registry=self.registry,
        )
        self.cache_generation = Gauge(
            "search_proxy_cache_generation",
            "The catalog generation the workers know (highest across workers).",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.cache_following = Gauge(
            "search_proxy_cache_following",
            "1 when every worker follows the catalog generation's announcements; 0 when one "
            "has lost them and judges entries by age alone.",
            registry=self.registry,
            multiprocess_mode="livemin",
        )
        self.cache_l1_entries = Gauge(
            "search_proxy_cache_l1_entries",
            "Entries in the workers' in-process caches.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.cache_l1_bytes = Gauge(
            "search_proxy_cache_l1_bytes",
            "Bytes held by the workers' in-process caches.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )

        # Labelled children of the per-response counters, looked up once (bounded: 4 routes × 4).
        self._responses: dict[tuple[str, str], tuple[Any, Any | None]] = {}

    def count_response(self, route: str, cache: str) -> None:
        """One answer of a cached route: by its X-Cache value, and by backend for searches."""
        children = self._responses.get((route, cache))
        if children is None:
            by_backend = (
                self.responses_by_backend.labels(route, "elasticsearch") if route in ("search", "suggestions") else None
            )
            children = self._responses[(route, cache)] = (self.cache_responses.labels(route, cache.lower()), by_backend)
        children[0].inc()
        if children[1] is not None:
            children[1].inc()

    def exposition(self) -> bytes:
        """The text format for ``/metrics``: this process's values, or every worker's."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
