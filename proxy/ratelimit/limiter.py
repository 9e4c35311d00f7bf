"""Admitting a request: identify the client, take tokens from its bucket, or fall back.

The bucket lives in Redis (``proxy.ratelimit.script``, exact across every worker and host); the
decisions of one event-loop tick travel together, one script call per tick
(``proxy.ratelimit.batch``). A request waits at most ``timeout`` (≤ 50 ms) for its decision,
and a circuit breaker (``proxy.breaker``) counts failed round trips: while Redis fails, the
limiter answers from its ``fallback`` —

- ``local`` (the default): an in-process bucket per client with the same parameters (per
  worker, so a client may get up to workers × its limit while Redis is down);
- ``open``: every request is admitted;
- ``closed``: every request is refused (429, ``Retry-After: 1``);

and goes back to Redis by itself when a round trip after the breaker's cooldown succeeds.

What a request costs is the caller's to say, from the parsed request (``proxy.routes``,
``proxy.ratelimit.costs``, ``RATE_LIMIT_COSTS``).

**Leases.** Even batched, a decision in Redis per request is work for Redis and for the worker,
and with many clients most requests are some client's first in a while. So every decision in
Redis for a client with a bucket of at least :data:`LEASE_MIN_CAPACITY` tokens asks for a lease
along with the request: :data:`LEASE_SHARE` of the capacity more, which the script grants in the
same atomic step only if the bucket still holds at least half its capacity after both
(``proxy.ratelimit.bucket``) — a client's very first request brings one when it is far from its
limit. The worker then spends the lease locally on that client's next requests for at most
:data:`LEASE_SECONDS`. The tokens are taken from the shared bucket first, so no worker ever
admits more than the bucket allows. A lease left unspent is lost: at most one lease per worker
per client per :data:`LEASE_SECONDS` (a new one is asked for only once the last is spent or
expired, and one at a time: concurrent requests wait for the lease in flight), and since
leases never take a bucket below half, what is lost never costs a client the lower half of its
budget. Near the limit (below half) every request is decided in Redis, exactly, and asks for no
lease until a decision shows the bucket half full again. Headers on leased answers report the
bucket as of the lease plus what is left of it (an underestimate: the bucket has refilled since).

**Bounded memory.** What a worker remembers per client (identities, leases, fallback buckets)
is bounded by bytes, not only by count, and keyed by what identity reads: the peer and the
``X-Forwarded-For`` values a trusted proxy sent, only while those are short
(:data:`MAX_REMEMBERED_FORWARDED_CHARS`); a known ``X-API-Key`` is looked up in the configured
keys and never remembered, an unknown one is ignored. Headers an attacker makes large or varied
are read, never kept (issue 23: 50 requests with 1 MB of headers kept 47 MB).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Generic, Literal, TypeVar, get_args

from aiohttp import web

from catalog.redis_client import REDIS_ERRORS
from proxy.breaker import Breaker
from proxy.ratelimit.batch import Batcher
from proxy.ratelimit.bucket import Bucket, Decision, take
from proxy.ratelimit.identity import DEFAULT_IPV6_PREFIX, Client, KeyLimit, Network, identify, key_id
from proxy.ratelimit.script import RedisBuckets

Fallback = Literal["local", "open", "closed"]
FALLBACKS: Final = get_args(Fallback)

# What a worker remembers per client, at most, in bytes: identities, leases, fallback buckets.
# An identity is ~380 bytes and a lease ~260 as counted: 4 MiB held ~11,000 identities, and with
# 30,000 clients nearly every request worked its identity out again, and leases began to go too
# (the limiter at 0.48-0.51 x off, against 0.75 with 10,000; benchmarks/ratelimit_phases.py,
# 2026-12-06). 16 MiB each hold ~44,000 identities and ~64,000 leases.
IDENTITIES_MAX_BYTES: Final = 16 << 20
LEASES_MAX_BYTES: Final = 16 << 20
LOCAL_BUCKETS_MAX_BYTES: Final = 8 << 20
# Longer X-Forwarded-For values are read each time, never remembered (a real chain is < 100).
MAX_REMEMBERED_FORWARDED_CHARS: Final = 256
# An entry's bookkeeping beyond its strings: the dict slot, the tuple, the value object.
_ENTRY_OVERHEAD: Final = 200
# Leases (see the module docstring).
LEASE_MIN_CAPACITY: Final = 100
LEASE_SHARE: Final = 0.05
# Ten seconds, not one: a client's requests come in bursts (keystrokes, a page and its
# suggestions) seconds apart, and with 1 s leases 10,000 clients at ~2 requests/s each needed a
# Redis decision for most requests (benchmarks/ratelimit.py: 0.43-0.62 x limiter off). Longer
# leases lose no more tokens (a lease is lost once, whenever it expires) and leave stale only the
# headers' remaining, on the low side.
LEASE_SECONDS: Final = 10.0

K = TypeVar("K")
V = TypeVar("V")


class Remembered(Generic[K, V]):
    """A dict bounded by an estimate of its bytes: when a new entry would pass ``max_bytes``, the
    oldest entries go until half the budget is free (one sweep pays for many insertions)."""

    __slots__ = ("_entries", "bytes", "max_bytes")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: dict[K, tuple[V, int]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        found = self._entries.get(key)
        return None if found is None else found[0]

    def put(self, key: K, value: V, size: int) -> None:
        """``self[key] = value``, counted as ``size`` bytes."""
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        if self.bytes + size > self.max_bytes:
            for stale in list(self._entries):
                if self.bytes + size <= self.max_bytes // 2:
                    break
                self.bytes -= self._entries.pop(stale)[1]
        self._entries[key] = (value, size)
        self.bytes += size


def _id_size(client_id: str) -> int:
    return _ENTRY_OVERHEAD + sys.getsizeof(client_id)


@dataclass(slots=True)
class _Lease:
    tokens: float
    expires: float  # time.monotonic()
    remaining: int  # the bucket's whole tokens after the lease was taken, for the headers
    reset_ms: int
    bucket: Bucket  # as the decision that brought the lease left it: every leased decision's


# Not frozen, but never changed once made: one is made per request (see Decision).
@dataclass(slots=True)
class Admission:
    """The limiter's answer: the decision, the client's limit, and the policy name it falls under."""

    decision: Decision
    limit: KeyLimit
    policy: str  # "default", or "key" for a client with a limit of its own
    source: str  # "redis" or the fallback that answered


class Limiter:
    def __init__(
        self,
        buckets: RedisBuckets,
        *,
        default: KeyLimit,
        keys: Mapping[str, KeyLimit],
        trusted: tuple[Network, ...],
        timeout: float,
        fallback: Fallback,
        ipv6_prefix: int = DEFAULT_IPV6_PREFIX,
        breaker: Breaker | None = None,
        on_round_trip: Callable[[float, bool], None] = lambda seconds, failed: None,
    ) -> None:
        self._default = default
        # A known key's client, made once: the raw key is looked up, never remembered.
        self._key_clients = {key: Client(key_id(key), limit) for key, limit in keys.items()}
        self._trusted = trusted
        self._ipv6_prefix = ipv6_prefix
        self._timeout = timeout
        self._fallback = fallback
        self.breaker = breaker or Breaker()
        self._on_round_trip = on_round_trip
        self._batcher = Batcher(buckets, timeout, self._round_trip_done)
        self._local: Remembered[str, Bucket] = Remembered(LOCAL_BUCKETS_MAX_BYTES)
        self._leases: Remembered[str, _Lease] = Remembered(LEASES_MAX_BYTES)
        self._leasing: dict[str, asyncio.Future[None]] = {}  # a lease request in flight, per client
        self.identities: Remembered[tuple[str | None, str], Client] = Remembered(IDENTITIES_MAX_BYTES)
        self.redis_calls = 0  # decisions that went to Redis (the tests count leases with it)

    def _round_trip_done(self, seconds: float, failed: bool) -> None:
        # The breaker counts round trips, not the requests in them: one slow batch is one failure.
        if failed:
            self.breaker.failed()
        else:
            self.breaker.succeeded()
        self._on_round_trip(seconds, failed)

    async def close(self) -> None:
        await self._batcher.close()

    def client(self, request: web.BaseRequest) -> Client:
        """Who sent ``request``: :func:`~proxy.ratelimit.identity.identify`, remembered per
        (peer, X-Forwarded-For) while that is short — it is pure, and the same clients come back."""
        headers = request.headers
        api_key = headers.get("X-API-Key")
        if api_key:
            known = self._key_clients.get(api_key)
            if known is not None:
                return known
        if "X-Forwarded-For" in headers:
            forwarded = headers.getall("X-Forwarded-For")
            joined = forwarded[0] if len(forwarded) == 1 else ",".join(forwarded)
            if len(joined) > MAX_REMEMBERED_FORWARDED_CHARS:
                return identify(request.remote, forwarded, None, self._trusted, {}, self._ipv6_prefix)
        else:
            joined = ""
        seen = (request.remote, joined)
        found = self.identities._entries.get(seen)  # Remembered.get, inlined: once per request
        client = None if found is None else found[0]
        if client is None:
            client = identify(seen[0], [joined] if joined else [], None, self._trusted, {}, self._ipv6_prefix)
            size = _ENTRY_OVERHEAD + sys.getsizeof(seen[0] or "") + sys.getsizeof(joined) + sys.getsizeof(client.id)
            self.identities.put(seen, client, size)
        return client

    def leased(self, request: web.BaseRequest, cost: float) -> Admission | None:
        """:meth:`admit`'s answer without awaiting anything, when a live lease of the client covers
        ``cost`` (most requests of a client far from its limit); None when only :meth:`admit` can
        answer. Awaiting ``admit`` (two coroutines, made and run per request) was a third of the
        limiter's time on a hot client's cache hits (py-spy under wrk, ``benchmarks/ratelimit.py``)."""
        client = self.client(request)
        decision = self._from_lease(client.id, cost)
        if decision is None:
            return None
        limit = client.limit
        return Admission(decision, limit or self._default, "default" if limit is None else "key", "lease")

    async def admit(self, request: web.BaseRequest, cost: float) -> Admission:
        """Take ``cost`` tokens from the bucket of ``request``'s client, or refuse."""
        client = self.client(request)
        limit = client.limit or self._default
        policy = "key" if client.limit is not None else "default"
        leased = self._from_lease(client.id, cost)
        deadline = None
        if leased is None and client.id in self._leasing:
            # A lease for this client is on its way: wait for it rather than take another
            # (fifty concurrent requests each leasing 5 % would drain a bucket of its own).
            deadline = asyncio.get_running_loop().time() + self._timeout
            await asyncio.shield(self._leasing[client.id])
            leased = self._from_lease(client.id, cost)
        if leased is not None:
            return Admission(leased, limit, policy, "lease")
        if self.breaker.closed:
            # One lease in flight per client: those who waited for one that did not cover them
            # decide without (the first of them to get here asks for the next lease).
            lease = 0.0 if client.id in self._leasing else self._lease_size(client.id, limit)
            leasing = asyncio.get_running_loop().create_future() if lease else None
            if leasing is not None:
                self._leasing[client.id] = leasing
            try:
                self.redis_calls += 1
                waiter = self._batcher.take(client.id, cost, limit.max, limit.ttl_ms, lease)
                if deadline is None:
                    decision = await waiter
                else:
                    # The wait for the lease counts: a request that waited out a failing one
                    # waited 2 x REDIS_TIMEOUT_MS in a Redis Cluster failover (0.79 s at 300 ms).
                    async with asyncio.timeout_at(deadline):
                        decision = await waiter
            except REDIS_ERRORS:
                pass  # the batch told the breaker
            else:
                self._keep_lease(client.id, decision)
                if decision.leased:  # the client may spend its lease too, as the next answers say
                    decision = Decision(
                        True,
                        decision.remaining + int(decision.leased),
                        0,
                        decision.reset_ms,
                        decision.bucket,
                        decision.leased,
                    )
                return Admission(decision, limit, policy, "redis")
            finally:
                if leasing is not None:
                    # An unconditional del raised KeyError here under a Redis Cluster failover,
                    # which answered 500 and left the waiters hanging for good: remove only ours,
                    # and always wake our waiters.
                    if self._leasing.get(client.id) is leasing:
                        del self._leasing[client.id]
                    leasing.set_result(None)
        return Admission(self._fall_back(client.id, cost, limit), limit, policy, self._fallback)

    def _lease_size(self, client_id: str, limit: KeyLimit) -> float:
        """Tokens to ask for along with this request: none for a small bucket, or when the last
        decision found the bucket below half (the script would refuse the lease anyway, and
        concurrent requests would wait for it for nothing)."""
        if limit.max < LEASE_MIN_CAPACITY:
            return 0.0
        last = self._leases.get(client_id)
        # remaining is a floor: a bucket at half of an odd capacity shows max // 2.
        if last is not None and last.remaining < limit.max // 2:
            return 0.0
        return limit.max * LEASE_SHARE

    def _keep_lease(self, client_id: str, decision: Decision) -> None:
        """Remember the decision (its remaining decides the next lease) and any lease it brought."""
        now = time.monotonic()
        last = self._leases.get(client_id)
        if not decision.leased and last is not None and last.tokens > 0 and now <= last.expires:
            # A decision without a lease (its request did not wait for the one in flight) must
            # not throw away the lease that came back before it.
            last.remaining, last.reset_ms, last.bucket = decision.remaining, decision.reset_ms, decision.bucket
            return
        lease = _Lease(decision.leased, now + LEASE_SECONDS, decision.remaining, decision.reset_ms, decision.bucket)
        self._leases.put(client_id, lease, _id_size(client_id))

    def _from_lease(self, client_id: str, cost: float) -> Decision | None:
        # On every request of a client with a lease: one Decision made, nothing else.
        lease = self._leases.get(client_id)
        if lease is None or lease.tokens < cost or time.monotonic() > lease.expires:
            return None
        lease.tokens -= cost
        return Decision(True, lease.remaining + int(lease.tokens), 0, lease.reset_ms, lease.bucket)

    def _fall_back(self, client_id: str, cost: float, limit: KeyLimit) -> Decision:
        now_ms = int(time.monotonic() * 1000)
        if self._fallback == "local":
            decision = take(self._local.get(client_id), now_ms, cost, limit.max, limit.ttl_ms)
            self._local.put(client_id, decision.bucket, _id_size(client_id))
            return decision
        allowed = self._fallback == "open"
        return Decision(
            allowed=allowed,
            remaining=limit.max if allowed else 0,
            retry_after_ms=0 if allowed else 1000,
            reset_ms=0,
            bucket=Bucket(float(limit.max), now_ms),
        )
