"""Writing actions to the engine in bulk, with external versions, until they have landed.

One bulk request per batch. Each item's outcome is one of:

- done: indexed, deleted, a delete of a document that is not there (404), or a version
  conflict (409 — the index already holds data at least as new: "done", not an error);
- retryable: anything that is not the document's fault — 429, 5xx, 401 and 403 (security: a
  key rotated or a role changed; ``cluster_block_exception``: the index set read-only by a full
  disk, a snapshot restore or a shrink), the index missing, or the whole request failed
  (connection refused or reset, timeout, the engine refusing the request) — retried with capped,
  jittered backoff, forever, until it lands or the indexer is told to stop. The stream pauses
  there: the checkpoint never passes a change that has not landed (issue 23: 403 and 429 were
  dropped and the checkpoint moved past them);
- permanent: the document's own fault (400, or an error type in :data:`DOCUMENT_ERRORS`: a
  mapping rejection, say) — returned in :attr:`SinkResult.rejections` for the dead-letter table,
  so that one bad row cannot block the stream.

A whole request the engine finds too large (413, ``http.max_content_length``) is split in
halves and each half sent, down to single documents; a single document still too large is the
document's fault (issue 23: a 413 was retried forever, unsplit).

The sink never advances a checkpoint and never reads Postgres; :meth:`Sink.write` returns only
when every action is done or permanently failed (a :class:`SinkResult` counting each outcome
and naming, in :attr:`SinkResult.tags`, what the index now shows differently), or when ``stop``
was set first (``None``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout, TransportError
from elasticsearch import ApiError, AsyncElasticsearch

from catalog.cache_generation import ANY_SELLER, product_tag, seller_tag
from catalog.retry import WRITE
from indexer.metrics import IndexerMetrics

log = logging.getLogger("hos_search.indexer.sink")

VERSION_TYPE = "external_gte"


class _TooLarge:
    """The engine answered 413 to a whole bulk request."""


TOO_LARGE: Final = _TooLarge()


class _TimedOut:
    """A whole bulk request got no answer within the client's timeout."""


TIMED_OUT: Final = _TimedOut()
# Above this, the request size learnt after timeouts is dropped (see Sink.write).
_MAX_LEARNED_ACTIONS = 10_000


@dataclass(frozen=True, slots=True)
class Action:
    """Index ``document`` as product ``product_id`` at ``version``, or delete it (no document).

    ``seller_id`` is the product's seller when known (None: the row is gone). ``set_aside``
    is why no document could be built from the row, when it could not: the action is then a
    delete (the index must not keep showing what the row no longer says), and the caller
    records the product in ``search_dead_letters`` (:mod:`indexer.dead_letters`).
    """

    product_id: int
    version: int
    document: dict[str, Any] | None
    seller_id: int | None = None
    set_aside: str | None = None

    @property
    def is_delete(self) -> bool:
        return self.document is None

    @property
    def tags(self) -> tuple[str, str]:
        """What a cached answer showing this product carries (:mod:`catalog.cache_generation`).

        A product whose seller is unknown may have been on any seller's page.
        """
        seller = ANY_SELLER if self.seller_id is None else seller_tag(self.seller_id)
        return product_tag(self.product_id), seller


@dataclass
class SinkResult:
    indexed: int = 0
    deleted: int = 0
    conflicts: int = 0  # newer data was already there
    rejected: int = 0  # permanent per-document failures
    # Each permanently refused action with the engine's reason, for the dead-letter table.
    rejections: list[tuple[Action, str]] = field(default_factory=list)
    # The actions counted in ``indexed`` or ``deleted``: kept as they are (not as tags) so that
    # writes whose tags nobody reads (a reindex's load) cost one append each.
    changed: list[Action] = field(default_factory=list)

    @property
    def changed_index(self) -> bool:
        return bool(self.indexed or self.deleted)

    @property
    def tags(self) -> frozenset[str]:
        """The tags of every product this write indexed or deleted; empty when nothing changed."""
        return frozenset(tag for action in self.changed for tag in action.tags)


def bulk_body(actions: Sequence[Action]) -> bytes:
    """NDJSON for ``actions``; built with orjson once, passed to the client as bytes."""
    lines: list[bytes] = []
    for action in actions:
        meta = {"_id": str(action.product_id), "version": action.version, "version_type": VERSION_TYPE}
        if action.document is None:
            lines.append(orjson.dumps({"delete": meta}))
        else:
            lines.append(orjson.dumps({"index": meta}))
            lines.append(orjson.dumps(action.document))
    lines.append(b"")
    return b"\n".join(lines)


# Error types that are the document's fault whatever the status says.
DOCUMENT_ERRORS = frozenset(
    {
        "mapper_parsing_exception",
        "document_parsing_exception",
        "strict_dynamic_mapping_exception",
        "illegal_argument_exception",
        "x_content_parse_exception",
        "json_parse_exception",
        "max_bytes_length_exceeded_exception",
    }
)
# The part of the client's request timeout the engine may spend waiting for a shard (see Sink).
_SHARD_WAIT_SHARE = 0.6
TOO_LARGE_REASON = "status 413: the document alone is larger than the engine takes in one request"


def classify(status: int, error: dict[str, Any] | None, *, is_delete: bool) -> str:
    """``done``, ``retry`` or ``permanent`` for one bulk item."""
    if status < 300 or status == 409 or (is_delete and status == 404 and not _index_missing(error)):
        return "done"
    kind = error.get("type") if isinstance(error, dict) else None
    if status == 400 or kind in DOCUMENT_ERRORS:
        return "permanent"
    return "retry"  # 401, 403, 429, 5xx, a missing index, anything not known to be the document's


def _index_missing(error: dict[str, Any] | None) -> bool:
    # The alias is gone (someone deleted it mid-stream): retry until a reindex brings it back
    # rather than drop changes.
    return bool(error) and isinstance(error, dict) and error.get("type") == "index_not_found_exception"


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` unless ``stop`` is set first; return whether it was set."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


class Sink:
    """Bulk writer for one engine client; the target index is chosen per call."""

    def __init__(self, engine: AsyncElasticsearch, metrics: IndexerMetrics, *, timeout: float = 30.0) -> None:
        self._engine = engine.options(request_timeout=timeout)
        # How long the engine may wait for a shard's primary before it answers that item 503
        # (its ``timeout``, 1 minute by default), kept inside the client's own timeout. With the
        # default, a bulk touching a shard whose primary died waited past INDEXER_BULK_TIMEOUT_S:
        # the client gave up on a healthy node, marked it dead, and re-sent every action, the
        # ones on healthy shards too (tests/test_engine_cluster.py's node loss: 457 of 457
        # actions "not written", each try 5 s, for over a minute). Answered in time, only the
        # items of the missing shard are retried, and the node stays in the pool.
        self._shard_wait = f"{max(100, int(timeout * 1000 * _SHARD_WAIT_SHARE))}ms"
        # Actions per request after a timeout: halved on each one, grown back on each success
        # (None: no limit). A request that timed out is usually still being applied by the
        # engine; re-sending it whole added the same work again and timed out again — the
        # stream stood still (tests/test_engine_cluster.py at 500 changes/s on a starved
        # 2-core machine: 394 of 394 actions "not written", every 5 s, for a minute).
        self._cap: int | None = None
        self._metrics = metrics

    async def write(
        self,
        index: str,
        actions: Sequence[Action],
        stop: asyncio.Event,
        *,
        alias: bool = False,
        fence: Callable[[], bool] | None = None,
    ) -> SinkResult | None:
        """Write ``actions`` into ``index``, retrying what may succeed later, until each is done.

        Returns the counts (indexed, deleted, version conflicts, rejected) once every action is
        done or permanently rejected; ``None`` if ``stop`` was set before they all landed —
        then some may have landed and some not, and the caller must not checkpoint past them.
        ``alias=True``: ``index`` must be an alias — the engine must not auto-create a concrete
        index under the alias's name when the alias is missing (that would block every reindex).
        ``fence`` is asked before every bulk request, retries included; when it says no, the
        write is abandoned as on ``stop`` (a streamer that may have lost its election lock,
        :meth:`indexer.election.Lease.holds`, never starts a request).
        """
        result = SinkResult()
        # Groups still to write, in order; a group the engine finds too large becomes two.
        cap = self._cap or len(actions) or 1
        groups = [list(actions[i : i + cap]) for i in range(0, len(actions), cap)]
        attempt = 0
        while groups:
            pending = groups[0]
            if stop.is_set() or (fence is not None and not fence()):
                return None
            request = asyncio.ensure_future(self._bulk(index, pending, alias))
            stopped = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({request, stopped}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopped.cancel()
                # Stopping, or cancelled (the streamer lost its election lock): abandon the
                # request in flight rather than leave it running unowned. Its writes may still
                # land; the checkpoint stays before this batch.
                abandoned = not request.done()
                if abandoned:
                    request.cancel()
            if abandoned:
                return None
            items = request.result()
            if isinstance(items, _TooLarge):
                groups.pop(0)
                if len(pending) == 1:
                    result.rejected += 1
                    result.rejections.append((pending[0], TOO_LARGE_REASON))
                else:
                    half = len(pending) // 2
                    groups[:0] = [pending[:half], pending[half:]]
                    log.warning("bulk into %s: %d actions too large for one request; split in two", index, len(pending))
                continue
            retry: list[Action] = []
            if isinstance(items, _TimedOut):
                retry = pending
                if len(pending) > 1:
                    # Smaller requests from here on; the first half waits out the backoff below.
                    half = len(pending) // 2
                    self._cap = half
                    groups[:1] = [pending[:half], pending[half:]]
                    retry = groups[0]
                    log.warning(
                        "bulk into %s: %d actions timed out; at most %d a request from now", index, len(pending), half
                    )
            elif items is None:
                retry = pending
            else:
                for action, item in zip(pending, items, strict=True):
                    self._settle(action, item, result, retry)
            if not retry:
                groups.pop(0)
                attempt = 0
                if self._cap is not None:  # a quarter more per request that passed (doubling timed out again)
                    grown = self._cap + max(1, self._cap // 4)
                    self._cap = None if grown >= _MAX_LEARNED_ACTIONS else grown
                continue
            attempt += 1
            delay = WRITE.delay(attempt)
            log.warning(
                "bulk: %d of %d actions into %s not written; retry %d in %.2fs (retries until the engine accepts)",
                len(retry),
                len(pending),
                index,
                attempt,
                delay,
            )
            if await wait_or_stop(stop, delay):
                return None
            groups[0] = retry
        return result

    async def _bulk(
        self, index: str, actions: Sequence[Action], alias: bool
    ) -> list[dict[str, Any]] | _TooLarge | _TimedOut | None:
        """The per-item results in request order, :data:`TOO_LARGE` when the engine refused the
        request for its size (413), :data:`TIMED_OUT` when no answer came in time, or ``None`` when the
        request failed as a whole otherwise."""
        started = time.perf_counter()
        try:
            response = await self._engine.bulk(
                index=index,
                operations=[bulk_body(actions)],  # type: ignore[list-item]  # bytes pass through as NDJSON
                require_alias=alias or None,
                timeout=self._shard_wait,
            )
        except ConnectionTimeout as exc:
            self._metrics.errors.labels(kind="engine_unreachable").inc()
            log.warning("bulk into %s: engine unreachable: %s", index, exc)
            return TIMED_OUT
        except TransportConnectionError as exc:
            self._metrics.errors.labels(kind="engine_unreachable").inc()
            log.warning("bulk into %s: engine unreachable: %s", index, exc)
            return None
        except ApiError as exc:
            if exc.meta.status == 413:
                self._metrics.errors.labels(kind="bulk_too_large").inc()
                return TOO_LARGE
            self._metrics.errors.labels(kind="engine_request").inc()
            log.warning("bulk into %s: engine refused the request: %s", index, exc)
            return None
        except TransportError as exc:
            self._metrics.errors.labels(kind="engine_request").inc()
            log.warning("bulk into %s: engine refused the request: %s", index, exc)
            return None
        finally:
            self._metrics.bulk_duration.observe(time.perf_counter() - started)
        items = response.body.get("items") or []
        return [next(iter(item.values())) for item in items]

    def _settle(self, action: Action, item: dict[str, Any], result: SinkResult, retry: list[Action]) -> None:
        status = int(item.get("status", 500))
        error = item.get("error")
        outcome = classify(status, error, is_delete=action.is_delete)
        if outcome == "done":
            if status == 409:
                result.conflicts += 1
            elif action.is_delete:
                result.deleted += 1
                result.changed.append(action)
            else:
                result.indexed += 1
                result.changed.append(action)
        elif outcome == "retry":
            self._metrics.errors.labels(kind="bulk_item_retryable").inc()
            log.warning(
                "bulk: product %d not written, retried: status %d %s", action.product_id, status, _reason(error)
            )
            retry.append(action)
        else:
            self._metrics.errors.labels(kind="bulk_item_rejected").inc()
            result.rejected += 1
            # Logged with its id where it is recorded (indexer.dead_letters), every id of a batch.
            result.rejections.append((action, f"status {status}: {_reason(error)}"))


def _reason(error: dict[str, Any] | str | None) -> str:
    if isinstance(error, dict):
        return f"{error.get('type')}: {error.get('reason')}"
    return str(error)
