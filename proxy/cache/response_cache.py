"""The response cache the routes answer through: L1, then L2, then one fill per key.

``answer(route, key, produce)`` returns the answer's bytes and how they were obtained
(:class:`Served`): from L1 or Redis (HIT), from either while one background refresh runs
(STALE, ``proxy.cache.freshness``), or from ``produce`` — the engine — (MISS; BYPASS when
Redis was skipped, and for every answer when the cache is disabled). Identical concurrent fills
in a worker share one task (single-flight); across workers and hosts the Redis fill lock lets
one process ask the engine while the others wait for its notice, at most ``lock_wait``, before
asking the engine themselves. When the engine fails (or the engine guard skips it), an entry
within ``ttl + stale_if_error`` is served STALE instead of the error; with no such entry, the
``fallback`` producer (Postgres, ``proxy.fallback``) answers, once per key at a time in a
worker, and its answer is sent as it is (BYPASS, never cached: the engine's answer replaces it
as soon as the engine is back).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from proxy.cache.entry import Entry
from proxy.cache.freshness import CatalogView, Policy, Verdict
from proxy.cache.keys import digest
from proxy.cache.l1 import LRU
from proxy.cache.l2 import RedisTier
from proxy.cache.notices import FillNotices
from proxy.errors import BackendUnavailable, EngineSkipped, Overloaded, ProblemError
from proxy.http_caching import entity_tag
from proxy.metrics import ProxyMetrics
from proxy.queueing import having_waited

# After the engine failed, background refreshes pause this long: a down engine is not asked
# again for every stale answer served meanwhile.
_REFRESH_PAUSE_S = 1.0
# A miss's L2 write waits for its answer to be sent (answer_sent), at most this long: a fill whose
# requests all went away (a client that hung up) still stores its entry and wakes its waiters.
_WRITE_AFTER_ANSWER_WITHIN_S = 0.1


@dataclass(frozen=True, slots=True)
class Produced:
    """A fresh answer: the response bytes and the tags of what it shows."""

    body: bytes
    tags: frozenset[str]


@dataclass(frozen=True, slots=True)
class Served:
    """The bytes to send and their ETag; ``cache`` is the X-Cache value; ``age`` (seconds) on
    HIT and STALE; ``backend`` the X-Search-Backend (what produced the bytes); ``due``: on a
    MISS, the key whose L2 write waits for this answer to be sent
    (:meth:`ResponseCache.answer_sent`)."""

    body: bytes
    etag: str
    cache: str
    age: int | None = None
    backend: str = "elasticsearch"  # ENGINE_BACKEND
    due: str | None = None


ENGINE_BACKEND = "elasticsearch"  # X-Search-Backend of an answer the engine produced
FALLBACK_BACKEND = "postgres"


class Lock:
    """The outcome of one attempt at a key's fill lock, shared by the requests that joined the
    read that made it; whoever :meth:`claim` s it first fills under it (or gives it back)."""

    __slots__ = ("claimed", "key_digest", "taken")

    def __init__(self, key_digest: str, taken: bool) -> None:
        self.key_digest = key_digest
        self.taken = taken  # ours, or another process holds it
        self.claimed = False

    def claim(self) -> bool:
        if self.claimed:
            return False
        self.claimed = True
        return True


Producer = Callable[[], Awaitable[Produced]]
T = TypeVar("T")


def _one_per_key(
    tasks: dict[str, asyncio.Task[T]], key: str, start: Callable[[], Coroutine[Any, Any, T]]
) -> tuple[asyncio.Task[T], bool]:
    """The task running for ``key`` (and True: joined), or a new one from ``start`` (False)
    that leaves ``tasks`` when it ends: single-flight within a worker."""
    task = tasks.get(key)
    if task is not None:
        return task, True
    task = tasks[key] = asyncio.ensure_future(start())
    task.add_done_callback(lambda done: tasks.pop(key, None) if tasks.get(key) is done else None)
    return task, False


def _served(entry: Entry, verdict: Verdict, now: float) -> Served:
    return Served(entry.body, entry.etag, verdict.shown, max(0, int(now - entry.fetched_at)))


class ResponseCache:
    def __init__(
        self,
        policy: Policy,
        l1: LRU,
        l2: RedisTier | None,
        view: CatalogView,
        notices: FillNotices,
        metrics: ProxyMetrics,
        *,
        lock_wait: float,
        namespace: str = "",
        enabled: bool = True,
        clock: Callable[[], float] = time.time,
        fallback_full: Callable[[float], bool] | None = None,
    ) -> None:
        self.enabled = enabled
        # The fallback's own test of whether a request that queued so many seconds would be
        # refused at once (PostgresFallback.would_shed); None: ask the fallback.
        self._fallback_full = fallback_full
        # Unix seconds, as entries are stamped; injectable so tests can move a worker's time.
        self._clock = clock
        # Part of every Redis key: proxies of different indexes sharing a Redis never meet.
        self._namespace = namespace
        self.policy = policy
        self.l1 = l1
        self.l2 = l2
        self.view = view
        self.notices = notices
        self._metrics = metrics
        self._lock_wait = lock_wait
        self._flights: dict[str, asyncio.Task[Entry]] = {}
        self._reads: dict[str, asyncio.Task[tuple[Entry | None, Lock | None]]] = {}
        self._fallbacks: dict[str, asyncio.Task[Produced]] = {}
        self._writes: set[asyncio.Task[object]] = set()
        # L2 writes of fills whose answers are not sent yet: key digest -> (the write, its deadline).
        self._due: dict[str, tuple[Callable[[], Coroutine[Any, Any, object]], asyncio.TimerHandle]] = {}
        self._refresh_paused_until = 0.0

    def _count(self, route: str, tier: str, result: str) -> None:
        self._metrics.child(self._metrics.cache_lookups, route, tier, result).inc()

    def cached(self, key: str, now: float) -> Entry | None:
        """The entry of an L1 HIT for ``key``, or None: no awaiting, for the hot path
        (``proxy.fastpath``, which builds its answer from the entry itself).

        Not counted here: the hot path counts its hits in batches (``ProxyMetrics.count_fast_hit``).
        """
        if not self.enabled:
            return None
        entry = self.l1.get(key)
        if entry is None or self.view.judge(entry, now) is not Verdict.HIT:
            return None
        return entry

    async def answer(self, route: str, key: str, produce: Producer, fallback: Producer | None = None) -> Served:
        if not self.enabled:
            try:
                body = (await produce()).body
                return Served(body, entity_tag(body), "BYPASS")
            except BackendUnavailable as exc:
                if fallback is None:
                    raise
                return await self._fall_back(key, fallback, exc)
        now = self._clock()
        judge = self.view.judge
        entry = self.l1.get(key)
        verdict = judge(entry, now) if entry is not None else Verdict.MISS
        self._count(route, "l1", verdict.shown.lower())
        if entry is not None and verdict is Verdict.HIT:
            return _served(entry, verdict, now)
        key_digest = digest(self._namespace + key)
        if entry is not None and verdict is Verdict.REFRESH:
            # Refresh-ahead (issue 24: entries filled together expired together and every request
            # for one waited on the engine): still a HIT, served with no Redis call on its path.
            self._refresh(route, key, key_digest, produce)
            return _served(entry, verdict, now)
        l2 = self.l2
        bypassed = l2 is None or not l2.available
        lock: Lock | None = None
        if key in self._flights and entry is None:
            pass  # a fill is under way in this worker: join it below, no Redis read of our own
        elif l2 is not None and not bypassed:
            shared, lock = await self._read_shared(key, key_digest)
            # A read that found no entry always tried the lock: neither means Redis failed, and
            # this answer bypasses it (no second trip to a Redis that just timed out).
            bypassed = shared is None and lock is None
            shared_verdict = judge(shared, now) if shared is not None else Verdict.MISS
            self._count(route, "l2", shared_verdict.shown.lower())
            if shared is not None and (entry is None or shared.fetched_at > entry.fetched_at):
                entry, verdict = shared, shared_verdict
                self._keep(key, shared)
            if entry is not None and verdict is Verdict.HIT:
                if lock is not None:
                    self._give_back(lock)  # taken for an entry that turned out servable
                return _served(entry, verdict, now)
        elif l2 is not None:
            self._count(route, "l2", "bypass")
        if entry is not None and verdict in (Verdict.STALE, Verdict.REFRESH):
            self._refresh(route, key, key_digest, produce, lock)
            return _served(entry, verdict, now)
        self._metrics.child(self._metrics.cache_misses, route, self.view.miss_reason(entry, now)).inc()
        try:
            fresh = await asyncio.shield(
                self._flight(route, key, key_digest, produce, lock, use_redis=not bypassed, answered=True)
            )
            if self.view.following and self.view.judge(fresh, self._clock()) is Verdict.MISS:
                # A fill begun before a change to what it shows was announced (one this request
                # joined, or a slow one) may have read the old data: not served past the bound.
                fresh = await asyncio.shield(
                    self._flight(route, key, key_digest, produce, use_redis=not bypassed, answered=True)
                )
        except BackendUnavailable as exc:
            if entry is not None and self.policy.usable_on_error(entry, now):
                return _served(entry, Verdict.STALE, now)
            if fallback is None:
                raise
            return await self._fall_back(key, fallback, exc)
        # BYPASS also when Redis failed during this request (the breaker opened meanwhile).
        return Served(
            fresh.body,
            fresh.etag,
            "BYPASS" if bypassed or l2 is None or not l2.available else "MISS",
            due=key_digest if key_digest in self._due else None,
        )

    def answer_sent(self, served: Served) -> None:
        """``served`` is on its way to the client: start the L2 write it was holding back, if any
        (the first of the requests that shared its fill to get here starts it)."""
        if served.due is not None:
            self._write_due(served.due)

    def _write_due(self, key_digest: str) -> None:
        due = self._due.pop(key_digest, None)
        if due is not None:
            write, deadline = due
            deadline.cancel()
            self._background(write())

    async def _fall_back(self, key: str, fallback: Producer, shed: BaseException | None = None) -> Served:
        """The fallback's answer for ``key``: identical concurrent requests share one query.

        ``shed``: why the engine did not answer; the time a request already waited for an engine
        slot comes off its wait for a fallback slot (``proxy.queueing``).
        """

        async def run() -> Produced:
            return await fallback()

        waited = shed.waited if isinstance(shed, EngineSkipped) else 0.0
        if self._fallback_full is not None and key not in self._fallbacks and self._fallback_full(waited):
            # Refused here, in the request's own step: through the fallback's task the same 503
            # took three more turns of the loop (the task's first step, the shield's relay of its
            # end, the request's wake-up), and a worker saturated at twice its engine's capacity
            # runs every ready callback of every other request in each turn (issue 24).
            self._metrics.fallback_rejected.inc()
            raise Overloaded()
        with having_waited(waited):  # copied into the task's context as it is created
            task, _ = _one_per_key(self._fallbacks, key, run)
        body = (await asyncio.shield(task)).body
        return Served(body, entity_tag(body), "BYPASS", backend=FALLBACK_BACKEND)

    async def _read_shared(self, key: str, key_digest: str) -> tuple[Entry | None, Lock | None]:
        """The L2 entry of ``key`` and, unless it is young, the fill lock: one round trip, one
        read per key at a time in this worker.

        A burst of identical requests would otherwise open one Redis connection each — a
        thousand at once exhausted redis-py's pool, which counted as Redis failing. Requests
        that join a read share its lock: the first fill or release that claims it uses it.
        """
        l2 = self.l2
        assert l2 is not None
        young_since = self._clock() - self.policy.shortest_ttl

        async def read() -> tuple[Entry | None, Lock | None]:
            taken, entry = await l2.read_or_lock(key_digest, young_since)
            return entry, None if taken is None else Lock(key_digest, taken)

        task, _ = _one_per_key(self._reads, key, read)
        return await asyncio.shield(task)

    def _give_back(self, lock: Lock) -> None:
        """Release a lock this worker took but will not fill under, off the request's path."""
        if lock.claim() and lock.taken:
            self._release_later(lock.key_digest)

    def _release_later(self, key_digest: str) -> None:
        if self.l2 is not None:
            self._background(self.l2.release(key_digest))

    def _background(self, work: Coroutine[Any, Any, object]) -> None:
        """Run Redis work after the answer: kept until done so it is neither collected nor lost."""
        task = asyncio.ensure_future(work)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def close(self, timeout: float = 1.0) -> None:
        """Let the fills (background refreshes too) and L2 writes still under way finish, at most
        ``timeout`` in all, then cancel the rest and see them end: the app closes the engine
        client and Redis they use right after (a refresh-ahead still running at shutdown died on
        a closed client, logged as an unhandled exception of ``asyncio.run``)."""
        deadline = time.monotonic() + timeout
        while True:
            # A fill ends in a write held for its answer (none will come now), so the writes are
            # looked at again after the fills.
            for key_digest in list(self._due):
                self._write_due(key_digest)
            pending = {task for task in (*self._writes, *self._flights.values()) if not task.done()}
            if not pending:
                return
            _, late = await asyncio.wait(pending, timeout=max(0.0, deadline - time.monotonic()))
            if late:
                for task in late:
                    task.cancel()
                await asyncio.wait(late)
                return

    def _keep(self, key: str, entry: Entry) -> None:
        self.l1.put(key, entry)
        self._metrics.cache_l1_entries.set(len(self.l1))
        self._metrics.cache_l1_bytes.set(self.l1.bytes)

    def _flight(
        self,
        route: str,
        key: str,
        key_digest: str,
        produce: Producer,
        lock: Lock | None = None,
        *,
        use_redis: bool = True,
        answered: bool = False,
    ) -> asyncio.Task[Entry]:
        """The one fill of ``key`` in this worker: joined if running, else started (under
        ``lock``, the outcome of the read's lock attempt, when nobody has claimed it yet);
        ``answered``: a request waits for it, whose answer starts the fill's L2 write once sent."""
        claimed = lock is not None and lock.claim()
        held = lock.taken if lock is not None and claimed else None
        task, joined = _one_per_key(
            self._flights,
            key,
            lambda: self._fill(route, key, key_digest, produce, held, use_redis=use_redis, answered=answered),
        )
        if joined:
            self._metrics.cache_coalesced.labels(route, "worker").inc()
            if held:
                self._release_later(key_digest)  # the running fill has a lock of its own
        return task

    def _refresh(self, route: str, key: str, key_digest: str, produce: Producer, lock: Lock | None = None) -> None:
        """Start a background refresh of ``key`` unless one runs or the engine just failed."""
        if key in self._flights or time.monotonic() < self._refresh_paused_until:
            if lock is not None:
                self._give_back(lock)
            return
        refreshes = self._metrics.cache_refreshes

        def done(task: asyncio.Task[Entry]) -> None:
            failed = task.cancelled() or task.exception() is not None  # retrieves the exception
            refreshes.labels(route, "failed" if failed else "ok").inc()

        self._flight(route, key, key_digest, produce, lock).add_done_callback(done)

    async def _fill(
        self,
        route: str,
        key: str,
        key_digest: str,
        produce: Producer,
        held: bool | None = None,
        *,
        use_redis: bool = True,
        answered: bool = False,
    ) -> Entry:
        """Ask ``produce`` for ``key`` and keep the answer; ``held``: the fill lock is this
        worker's (True), another process's (False), or not tried yet (None); ``use_redis``
        False: Redis just failed this request, so no lock is tried and the entry is kept in
        L1 only."""
        # The generation is read before the engine is asked: a change announced while the
        # engine answers leaves this entry older than that change, hence stale.
        generation = self.view.generation
        # A fill that ended while this request awaited Redis has left its entry here already.
        kept = self.l1.get(key)
        if kept is not None and self.view.judge(kept, self._clock()) is Verdict.HIT:
            if held:
                self._release_later(key_digest)
            return kept
        l2 = self.l2 if use_redis else None
        locked = False
        if held is not None:
            # The read already tried the lock (and found no servable entry): no second trip.
            locked = held
            if not locked:
                entry = await self._fill_by_another(key_digest)
                if entry is not None:
                    self._metrics.cache_coalesced.labels(route, "cluster").inc()
                    self._keep(key, entry)
                    return entry
        elif l2 is not None and l2.available:
            # Rare: the read found a young entry (no lock tried) that this worker cannot serve
            # (a change made it dirty), or the read was skipped for a fill under way.
            taken, shared = await l2.lock(key_digest)
            if shared is not None and self.view.judge(shared, self._clock()) is Verdict.HIT:
                if taken:
                    await l2.release(key_digest)
                self._keep(key, shared)
                return shared
            if taken is False:
                entry = await self._fill_by_another(key_digest)
                if entry is not None:
                    self._metrics.cache_coalesced.labels(route, "cluster").inc()
                    self._keep(key, entry)
                    return entry
            locked = taken is True
        started = self._clock()
        try:
            produced = await produce()
        except BaseException as exc:
            if isinstance(exc, BackendUnavailable):
                self._refresh_paused_until = time.monotonic() + _REFRESH_PAUSE_S
            elif isinstance(exc, ProblemError):
                self.l1.discard(key)  # e.g. a product gone (404): its old page is not kept here
            if locked and l2 is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.shield(l2.release(key_digest))
            raise
        entry = Entry(produced.body, generation, started, produced.tags)
        self._keep(key, entry)
        if l2 is not None:
            # After the answer is sent, not before it (issue 24: the awaited write added a round
            # trip to every miss; started here, its encoding and send still ran before the
            # answer's); waiters elsewhere hear of the entry when it is there.
            write = partial(l2.fill, key_digest, entry, locked=locked)
            if answered:
                self._write_due(key_digest)  # an earlier fill's, still unsent: not lost
                deadline = asyncio.get_running_loop().call_later(
                    _WRITE_AFTER_ANSWER_WITHIN_S, self._write_due, key_digest
                )
                self._due[key_digest] = (write, deadline)
            else:
                self._background(write())
        return entry

    async def _fill_by_another(self, key_digest: str) -> Entry | None:
        """Wait (at most ``lock_wait``) for the lock holder's entry; None if it does not come."""
        assert self.l2 is not None
        with self.notices.expect(key_digest) as notified:
            entry = await self.l2.get(key_digest)  # filled since the lock attempt?
            if entry is None or self.view.judge(entry, self._clock()) is not Verdict.HIT:
                # A lost notice (subscription down) costs the wait, not a second engine request.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(notified), self._lock_wait)
                entry = await self.l2.get(key_digest)
        if entry is None or self.view.judge(entry, self._clock()) is not Verdict.HIT:
            return None
        return entry
