"""The indexer's Prometheus metrics, on their own registry (never the global one).

Every name starts with ``search_indexer_``; labels are bounded (error kind, server). Lag is
computed when scraped: now minus the creation time of the oldest change that is read but not
yet written, so it keeps growing while the engine is down. ``search_indexer_active`` is 1 only
in the process that holds the election lock (:mod:`indexer.election`); a hot standby shows 0
and the time it began waiting.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class IndexerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.changes_seen = Counter("search_indexer_changes_seen_total", "Outbox rows read", registry=r)
        self.documents_indexed = Counter(
            "search_indexer_documents_indexed_total", "Documents written to the index", registry=r
        )
        self.documents_deleted = Counter(
            "search_indexer_documents_deleted_total", "Documents deleted from the index", registry=r
        )
        self.version_conflicts = Counter(
            "search_indexer_version_conflicts_total", "Writes skipped because the index held newer data", registry=r
        )
        self.bulk_duration = Histogram(
            "search_indexer_bulk_duration_seconds",
            "Duration of one bulk request",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.batch_size = Histogram(
            "search_indexer_batch_size",
            "Outbox changes per batch",
            buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
            registry=r,
        )
        self.errors = Counter("search_indexer_errors_total", "Errors by kind", ["kind"], registry=r)
        self.dead_lettered = Counter(
            "search_indexer_dead_lettered_total",
            "Products set aside (search_dead_letters): no document could be built (stage=document) "
            "or the engine refused it for its own fault (stage=engine)",
            ["stage"],
            registry=r,
        )
        self.reconnects = Counter("search_indexer_reconnects_total", "Reconnections by server", ["server"], registry=r)
        self.last_success = Gauge(
            "search_indexer_last_success_timestamp_seconds", "Unix time of the last successful batch", registry=r
        )
        self.checkpoint = Gauge("search_indexer_checkpoint_seq", "Outbox seq of the stored checkpoint", registry=r)
        self.pruned = Counter(
            "search_indexer_outbox_pruned_total", "Outbox rows deleted behind the checkpoint", registry=r
        )
        self.checkpoints_expired = Counter(
            "search_indexer_checkpoints_expired_total",
            "Checkpoint rows of other indexer names not seen for INDEXER_CHECKPOINT_EXPIRY_S, deleted so "
            "that pruning can proceed",
            registry=r,
        )
        self.reindex_documents = Counter(
            "search_indexer_reindex_documents_total", "Documents bulk-loaded by full reindexes", registry=r
        )
        self.reindex_duration = Gauge(
            "search_indexer_reindex_duration_seconds", "Duration of the last full reindex", registry=r
        )
        self.generation_bumps = Counter(
            "search_indexer_generation_bumps_total", "Catalog generation bumps published", registry=r
        )
        self.lag = Gauge(
            "search_indexer_lag_seconds", "Now minus the creation time of the oldest unindexed change", registry=r
        )
        self.active = Gauge(
            "search_indexer_active", "1 while this process holds the election lock and streams, else 0", registry=r
        )
        self.standby_since = Gauge(
            "search_indexer_standby_since_timestamp_seconds",
            "Unix time this process began waiting as a hot standby; 0 while not standing by",
            registry=r,
        )
        self.lock_acquisitions = Counter(
            "search_indexer_lock_acquisitions_total",
            "Times this process took the election lock (at start, on takeover, after losing it)",
            registry=r,
        )
        self._oldest_pending: float | None = None
        self._standing_by = False
        self.lag.set_function(self._lag)

    def _lag(self) -> float:
        oldest = self._oldest_pending
        return 0.0 if oldest is None else max(0.0, time.time() - oldest)

    def mark_pending(self, oldest_created: float | None) -> None:
        """A batch with changes created at ``oldest_created`` (Unix time) is read, not written."""
        if oldest_created is not None and (self._oldest_pending is None or oldest_created < self._oldest_pending):
            self._oldest_pending = oldest_created

    def clear_pending(self) -> None:
        """Everything read so far is written (or there was nothing to read)."""
        self._oldest_pending = None

    def mark_standby(self) -> None:
        """Waiting for the election lock; a standby that reconnects keeps its first timestamp."""
        self.active.set(0)
        if not self._standing_by:
            self._standing_by = True
            self.standby_since.set_to_current_time()

    def mark_active(self) -> None:
        self._standing_by = False
        self.standby_since.set(0)
        self.active.set(1)
        self.lock_acquisitions.inc()

    def mark_inactive(self) -> None:
        """The lock is released or lost: nothing is written from here on, so no lag is this process's."""
        self.active.set(0)
        self._oldest_pending = None


def serve_metrics(metrics: IndexerMetrics, port: int, host: str = "127.0.0.1") -> Any:
    """Serve ``/metrics`` on ``host:port``; returns the server (call ``shutdown()``)."""
    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    return server
