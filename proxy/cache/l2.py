"""L2: cache entries in Redis, shared by every worker and host; never slower than its timeout.

Values are :meth:`Entry.encode` bytes under ``{prefix}cache:<digest>``, kept for the policy's
``ttl + stale_if_error`` (beyond the ttl they serve only when the engine fails). A fill of a
missing entry is guarded by a short lock (``SET NX PX``) so that one process in the cluster asks
the engine while the others wait for its notice (``proxy.cache.notices``). An entry and its lock share a Redis
Cluster hash slot (``proxy.cache.keys``); a fill stores the entry, releases the lock and publishes
the notice in one script (a cluster node forwards the PUBLISH to every other node).

Every call is bounded by ``timeout`` (≤ 50 ms by default) and never raises: a Redis error or
timeout is counted and answered as "nothing there". ``failures`` of them in a row open a
breaker (``proxy.breaker``) for ``cooldown`` seconds during which Redis is not asked at all
(the cache is then L1 plus bypass); after the cooldown one call probes, so the tier recovers
by itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio.cluster import RedisCluster

from catalog.redis_client import REDIS_ERRORS, RedisClient
from proxy.breaker import Breaker
from proxy.cache.entry import FETCHED_AT_OFFSET, HEADER_SIZE, Entry
from proxy.cache.keys import fills_channel, lock_key, storage_key

log = logging.getLogger("hos_search.proxy.cache")

# A miss's one round trip before the engine (issue 24: it took two, a GET then SET NX + GET):
# read the entry and, unless it was fetched at or after ARGV[1] (young enough that the worker
# will most likely serve it), take the fill lock in the same call. Entry.encode puts fetched_at,
# a big-endian double, at a fixed offset. KEYS[1] and KEYS[2] share a hash slot (keys.py).
READ_OR_LOCK_SCRIPT = f"""
local entry = redis.call('GET', KEYS[1])
if entry and string.len(entry) >= {HEADER_SIZE} then
  local fetched_at = struct.unpack('>d', string.sub(entry, {FETCHED_AT_OFFSET + 1}, {FETCHED_AT_OFFSET + 8}))
  if fetched_at >= tonumber(ARGV[1]) then return {{entry, -1}} end
end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then return {{entry, 1}} end
return {{entry, 0}}
"""

# A fill's one round trip after the answer: store the entry and, when this process holds the
# fill lock (ARGV[3] = '1'), release it and tell the waiters on the fills channel (ARGV[4]), on a
# Redis Cluster too, where it was a second round trip. It was a pipeline of SET, DEL and PUBLISH: redis-py's
# pipeline machinery made it about twice the Python calls of one script call (counted by
# benchmarks.overhead). KEYS[1] and KEYS[2] share a hash slot (keys.py).
FILL_SCRIPT = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[2])
  redis.call('PUBLISH', ARGV[4], ARGV[5])
end
return 1
"""

T = TypeVar("T")


class RedisTier:
    def __init__(
        self,
        client: RedisClient,
        prefix: str,
        *,
        timeout: float,
        keep_for: float,
        lock_for: float,
        cooldown: float = 1.0,
        failures: int = 3,
        on_error: Callable[[str], None] = lambda operation: None,
    ) -> None:
        self._client = client
        self._clustered = isinstance(client, RedisCluster)
        self._prefix = prefix
        self._timeout = timeout
        self._keep_ms = max(1, int(keep_for * 1000))
        self._lock_ms = max(1, int(lock_for * 1000))
        self._cooldown = cooldown
        self._on_error = on_error
        self._fills = fills_channel(prefix)
        self._breaker = Breaker(failures=failures, cooldown=cooldown)
        self._read_or_lock = client.register_script(READ_OR_LOCK_SCRIPT)
        self._fill = client.register_script(FILL_SCRIPT)

    @property
    def available(self) -> bool:
        """False while the breaker is open: callers skip Redis (a BYPASS) without waiting."""
        return self._breaker.closed

    async def get(self, key_digest: str) -> Entry | None:
        data = await self._call("get", lambda: self._client.get(storage_key(self._prefix, key_digest)))
        return Entry.decode(data) if isinstance(data, bytes) else None

    async def read_or_lock(self, key_digest: str, young_since: float) -> tuple[bool | None, Entry | None]:
        """The entry, and the fill lock unless the entry was fetched at or after ``young_since``:
        one round trip.

        The lock: True if taken by this call, False if another process holds it, None if not
        tried (a young entry) or Redis failed.
        """
        keys = (storage_key(self._prefix, key_digest), lock_key(self._prefix, key_digest))
        answer = await self._call("read", lambda: self._read_or_lock(keys=keys, args=(young_since, self._lock_ms)))
        if not isinstance(answer, list) or len(answer) != 2:
            return None, None
        data, taken = answer
        entry = Entry.decode(data) if isinstance(data, bytes) else None
        return (None if taken == -1 else taken == 1), entry

    async def lock(self, key_digest: str) -> tuple[bool | None, Entry | None]:
        """Take the fill lock and read the entry, in one round trip.

        The lock: True if ours, False if another process holds it, None if Redis failed. The
        entry is read *after* the lock attempt, so a fill that released the lock just before
        is seen here rather than repeated.
        """

        async def lock_and_get() -> list[object]:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.set(lock_key(self._prefix, key_digest), b"1", nx=True, px=self._lock_ms)
                pipe.get(storage_key(self._prefix, key_digest))
                return await pipe.execute()  # type: ignore[no-any-return]

        answer = await self._call("lock", lock_and_get)
        if not isinstance(answer, list):
            return None, None
        taken, data = answer
        return bool(taken), Entry.decode(data) if isinstance(data, bytes) else None

    async def fill(self, key_digest: str, entry: Entry, *, locked: bool) -> None:
        """Store ``entry``; if we hold the lock, release it and tell the waiters (one round trip on one Redis)."""

        keys = (storage_key(self._prefix, key_digest), lock_key(self._prefix, key_digest))
        # Unconditional DEL of the lock: had ours expired and another process taken it, its fill
        # costs one more engine request — nothing worse. The notice is published from the
        # script, on a cluster too: a node forwards a PUBLISH to every other node.
        args = (entry.encode(), self._keep_ms, 1 if locked else 0, self._fills, key_digest)
        await self._call("set", lambda: self._fill(keys=keys, args=args))

    async def release(self, key_digest: str) -> None:
        """Give the lock up without an entry (the engine failed): waiters stop waiting."""

        async def release() -> object:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.delete(lock_key(self._prefix, key_digest))
                return await self._execute_and_notify(pipe, key_digest)

        await self._call("release", release)

    async def _execute_and_notify(self, pipe: Any, key_digest: str | None) -> object:
        """Run ``pipe`` and, if ``key_digest`` is given, tell the waiters of that fill: in the same
        round trip on one Redis; after it on a cluster, whose pipelines refuse PUBLISH."""
        if key_digest is not None and not self._clustered:
            pipe.publish(self._fills, key_digest)
        answer = await pipe.execute()
        if key_digest is not None and self._clustered:
            await self._client.publish(self._fills, key_digest)
        return answer

    async def _call(self, operation: str, call: Callable[[], Awaitable[T]]) -> T | object:
        if not self.available:
            return _FAILED
        try:
            async with asyncio.timeout(self._timeout):
                answer = await call()
        except REDIS_ERRORS as exc:
            self._on_error(operation)
            if self._breaker.failed():
                log.warning(
                    "cache: Redis %s failed (%s), several times in a row; bypassing Redis for %.1fs",
                    operation,
                    type(exc).__name__,
                    self._cooldown,
                )
            return _FAILED
        self._breaker.succeeded()
        return answer


# What a failed call returns: distinct from every Redis answer (None included).
_FAILED = object()
