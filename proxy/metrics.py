"""The proxy's Prometheus metrics (prefix ``search_proxy_``), on a registry of the app's own.

Labels are bounded: route templates (never raw paths or query strings), status classes,
backends, engine operations. With several worker processes, ``PROMETHEUS_MULTIPROC_DIR`` is set
by the supervisor and ``/metrics`` aggregates every worker's values. prometheus_client keeps a
file per kind and process there; when a worker exits, the supervisor folds its files into one
archive per kind (:func:`archive_dead_worker`), so a scrape reads a bounded number of files
however often workers restart. Request durations (:class:`RouteDurations`) and the fast path's
counts are written there once a second and before the worker's own scrapes
(:meth:`ProxyMetrics.flush`): another worker's are up to a second late, and a worker killed
outright loses its last second of them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess, values
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.utils import floatToGoString

# What /metrics answers with (on the public listener, or the supervisor's internal one).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Latency buckets for a search API: sub-millisecond cache hits up to multi-second timeouts.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


_BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}

# A kind of fast-path hit (ProxyMetrics.count_fast_hit): its route label, route template, status
# class, and backend (None: the route is not counted by backend).
FastHit = tuple[str, str, str, str | None]


class _Series:
    """One route's observations: a count per bucket (not cumulative) and their sum."""

    __slots__ = ("counts", "created", "files", "sum", "written")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * buckets
        self.sum = 0.0
        self.created = time.time()
        self.written = [0.0] * (buckets + 1)  # the counts and sum in this process's file (multiprocess)
        self.files: list[Any] = []  # their values there, made on the first flush


class RouteDurations:
    """A histogram by route, observed with a bisection and two additions: the drop-in for a
    prometheus_client ``Histogram`` with one label, same name, help, buckets and exposition.

    ``Histogram.observe`` takes a lock for its sum and another for its bucket, after a Python
    loop over the buckets: 4.0 µs a call against 0.5 µs here (timeit, 2026-12-06), and nearly
    all of the 4.2 µs per cache hit that py-spy put in prometheus_client
    (``benchmarks/cache.py --only throughput``). No lock: every observation and every scrape
    happens on the worker's event loop.

    With several workers (``PROMETHEUS_MULTIPROC_DIR``) a scrape reads only the workers' files:
    :meth:`flush` (every second, before a scrape and at shutdown) adds what was observed since to
    this process's histogram file, through ``prometheus_client.values.ValueClass`` (the values a
    ``Histogram`` writes itself) under the keys a ``Histogram`` would use, so the merged
    exposition and :func:`archive_dead_worker` see the same samples.
    """

    def __init__(
        self, name: str, documentation: str, label: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.label = label
        self._bounds = (*buckets, float("inf"))
        self._les = [floatToGoString(bound) for bound in self._bounds]  # type: ignore[no-untyped-call]
        self._series: dict[str, _Series] = {}
        self._multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        # As prometheus_client decides for its own metrics (``prometheus_client.metrics``).
        self._created = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False").lower() not in ("true", "1", "t")
        registry.register(self)

    def observe(self, value: str, seconds: float) -> None:
        """One observation for label value ``value``."""
        series = self._series.get(value)
        if series is None:
            series = self._series[value] = _Series(len(self._bounds))
        # The first bound >= seconds: Histogram's bucket for it (``amount <= bound``).
        series.counts[bisect_left(self._bounds, seconds)] += 1
        series.sum += seconds

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=[self.label])]

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, series in self._series.items():
            cumulative = 0.0
            buckets = []
            for le, count in zip(self._les, series.counts, strict=True):
                cumulative += count
                buckets.append((le, cumulative))
            family.add_metric([value], buckets, series.sum)
            if self._created:
                family.add_sample(self.name + "_created", {self.label: value}, series.created)
        return [family]

    def flush(self) -> None:
        """Add the observations since the last flush to this process's file (multiprocess mode)."""
        if not self._multiprocess:
            return
        for value, series in self._series.items():
            if not series.files:
                series.files = [self._value("_bucket", [self.label, "le"], [value, le]) for le in self._les]
                series.files.append(self._value("_sum", [self.label], [value]))
            for i, now in enumerate((*series.counts, series.sum)):
                if now != series.written[i]:
                    series.files[i].inc(now - series.written[i])
                    series.written[i] = now

    def _value(self, suffix: str, names: list[str], labels: list[str]) -> Any:
        return values.ValueClass("histogram", self.name, self.name + suffix, names, labels, self.documentation)


class ProxyMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "search_proxy_requests_total",
            "HTTP requests answered, by route template, method and status class.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        # On every request, a cache hit's included: not a Histogram (RouteDurations says why).
        self.request_duration = RouteDurations(
            "search_proxy_request_duration_seconds",
            "Time from request received to response ready, by route template.",
            "route",
            LATENCY_BUCKETS,
            self.registry,
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
            buckets=LATENCY_BUCKETS,
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
        # The engine guard (proxy.engine_guard) and the Postgres fallback (proxy.fallback).
        self.engine_breaker_state = Gauge(
            "search_proxy_engine_breaker_state",
            "The engine circuit breaker: 0 closed, 1 half-open (probing), 2 open (worst worker).",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.engine_skipped = Counter(
            "search_proxy_engine_skipped_total",
            "Engine requests not sent, by reason: breaker_open, or engine_busy (no slot freed in time: shed).",
            ["reason"],
            registry=self.registry,
        )
        self.fallback_rejected = Counter(
            "search_proxy_fallback_rejected_total",
            "Requests the Postgres fallback refused at once because its concurrency cap was reached.",
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
        self.cache_misses = Counter(
            "search_proxy_cache_misses_total",
            "Answers the cache could not give (the engine was asked, or a fill joined), by route "
            "and reason: absent (nothing cached), expired (past CACHE_TTL_S), changed (shows a "
            "product announced as changed over CACHE_MAX_STALE_MS ago), blind (announcements lost).",
            ["route", "reason"],
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

        # The rate limiter (proxy.ratelimit).
        self.ratelimit_decisions = Counter(
            "search_proxy_ratelimit_decisions_total",
            "Rate-limit decisions by route and decision (allowed, limited).",
            ["route", "decision"],
            registry=self.registry,
        )
        self.ratelimit_duration = Histogram(
            "search_proxy_ratelimit_duration_seconds",
            "The limiter's round trips to Redis (one per event-loop tick, for all its decisions).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ratelimit_redis_errors = Counter(
            "search_proxy_ratelimit_redis_errors_total",
            "The limiter's round trips to Redis that failed or timed out.",
            registry=self.registry,
        )
        self.ratelimit_fallback = Gauge(
            "search_proxy_ratelimit_fallback_active",
            "1 while a worker's limiter answers from its fallback because Redis fails.",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        # Labelled children, looked up once: ``labels()`` takes a lock and builds a key on every
        # call, a measurable share of a cache hit. At most 1,000 are kept (labels are bounded,
        # but a client inventing HTTP methods must not grow this).
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}
        self._fast_hits: dict[FastHit, int] = {}
        self._admissions: dict[tuple[str, bool], int] = {}
        self._fallback_active = False

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = metric.labels(*labels)
            if len(self._children) < 1000:
                self._children[key] = found
        return found

    def count_fast_hit(self, hit: FastHit, seconds: float) -> None:
        """One L1 hit answered by ``proxy.fastpath`` (a 200, or a 304 to a revalidation), of
        the kind ``hit`` (built once per route and status by the fast path): timed now, counted
        in the next :meth:`flush`.

        The four counters such a hit increments (requests, cache lookups, cache responses,
        responses by backend) are kept as one plain integer until then: four locked
        increments per hit cost a tenth of the hot path's throughput (``benchmarks/cache.py``).
        """
        self.request_duration.observe(hit[1], seconds)
        self._fast_hits[hit] = self._fast_hits.get(hit, 0) + 1

    def flush(self) -> None:
        """Add the pending fast-path hits and rate-limit decisions to their counters, and with
        several workers the request durations to this process's file (every second, before a
        scrape and at shutdown)."""
        pending, self._fast_hits = self._fast_hits, {}
        for (route, template, status_class, backend), hits in pending.items():
            self.count_response(route, "HIT", hits, backend)
            self.child(self.cache_lookups, route, "l1", "hit").inc(hits)
            self.child(self.requests, template, "GET", status_class).inc(hits)
        admissions, self._admissions = self._admissions, {}
        for (route, allowed), count in admissions.items():
            self.child(self.ratelimit_decisions, route, "allowed" if allowed else "limited").inc(count)
        self.request_duration.flush()

    def count_admission(self, route: str, admission: Any) -> None:
        """One rate-limit decision (``proxy.ratelimit.limiter.Admission``), counted in the next
        :meth:`flush` (like a fast-path hit: it happens on every request of a limited route)."""
        key = (route, admission.decision.allowed)
        self._admissions[key] = self._admissions.get(key, 0) + 1
        fallback = admission.source not in ("redis", "lease")
        if fallback != self._fallback_active:  # set on a change only: a gauge write per request costs
            self._fallback_active = fallback
            self.ratelimit_fallback.set(1 if fallback else 0)

    def count_ratelimit_round_trip(self, seconds: float, failed: bool) -> None:
        """One round trip of the limiter to Redis (``proxy.ratelimit.batch``)."""
        self.ratelimit_duration.observe(seconds)
        if failed:
            self.ratelimit_redis_errors.inc()

    def count_request(self, route: str, method: str, status_class: str, seconds: float) -> None:
        """One answered request, by route template (``/api/search``), method and status class."""
        self.request_duration.observe(route, seconds)
        self.child(self.requests, route, method, status_class).inc()

    def count_response(self, route: str, cache: str, count: int = 1, backend: str | None = None) -> None:
        """One answer of a cached route: by its X-Cache value, and by ``backend`` for the routes
        the route table counts by backend (``proxy.routes.Route.by_backend``; None: not)."""
        self.child(self.cache_responses, route, cache.lower()).inc(count)
        if backend is not None:
            self.child(self.responses_by_backend, route, backend).inc(count)

    def count_breaker_state(self, state: str) -> None:
        self.engine_breaker_state.set(_BREAKER_STATES[state])

    def exposition(self) -> bytes:
        """The text format for ``/metrics``: this process's values, or every worker's."""
        self.flush()
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if directory:
            return multiprocess_exposition(directory)
        return generate_latest(self.registry)


def multiprocess_exposition(directory: str) -> bytes:
    """Every worker's values, from the multiprocess directory (a worker's ``/metrics``, or the
    supervisor's internal listener, ``METRICS_PORT``)."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, directory)  # type: ignore[no-untyped-call]
    # Shared: the supervisor swaps a dead worker's files for the archive only under the
    # exclusive lock, so a scrape never counts them twice, nor misses a file it listed.
    with _directory_lock(directory, fcntl.LOCK_SH):
        return generate_latest(registry)


# The kinds whose values must outlive their process: a total that went down when a worker died
# would read as a counter reset. (Every gauge here is a live* one, dropped with its process.)
_ARCHIVED_KINDS = ("counter", "histogram", "summary")


@contextlib.contextmanager
def _directory_lock(directory: str, operation: int) -> Iterator[None]:
    """``flock`` on the multiprocess directory's lock file (not ``*.db``: scrapes do not read it)."""
    fd = os.open(os.path.join(directory, "collect.lock"), os.O_RDONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, operation)
        yield
    finally:
        os.close(fd)  # releases the lock, as the death of its holder would


def archive_dead_worker(directory: str, pid: int) -> None:
    """Fold the metric files of worker ``pid``, which has exited, into ``directory``'s archive.

    Its counters and histograms are added into ``<kind>_archive.db`` and its files removed; its
    live gauges are dropped (``mark_process_dead``). Only the supervisor calls this, after
    reaping the worker and before starting another, so no process writes these files meanwhile.
    """
    swaps = []
    for kind in _ARCHIVED_KINDS:
        dead = os.path.join(directory, f"{kind}_{pid}.db")
        if not os.path.exists(dead):
            continue
        archive = os.path.join(directory, f"{kind}_archive.db")
        merged = archive + ".new"  # built outside the lock; not *.db, so no scrape reads it
        sources = [path for path in (archive, dead) if os.path.exists(path)]
        _write_values(merged, multiprocess.MultiProcessCollector.merge(sources, accumulate=False))
        swaps.append((merged, archive, dead))
    with _directory_lock(directory, fcntl.LOCK_EX):
        for merged, archive, dead in swaps:
            os.replace(merged, archive)
            os.remove(dead)
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def _write_values(path: str, metrics: Iterable[Any]) -> None:
    """Write merged (not accumulated) metric families as a prometheus_client mmap file."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)  # left by an interrupted archive: it would be read back and added
    values = MmapedDict(path)  # type: ignore[no-untyped-call]
    try:
        for metric in metrics:
            for sample in metric.samples:
                labels = sample.labels
                key = mmap_key(metric.name, sample.name, list(labels), list(labels.values()), metric.documentation)
                values.write_value(key, sample.value, 0.0)  # type: ignore[no-untyped-call]
    finally:
        values.close()  # type: ignore[no-untyped-call]
