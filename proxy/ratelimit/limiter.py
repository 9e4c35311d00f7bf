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

What a request costs depends on its route (``proxy.ratelimit.costs``, ``RATE_LIMIT_COSTS``).

**Leases.** Even batched, a decision in Redis per request is work for Redis and for the worker.
So a worker serving a client that is far from its limit — a bucket of at least
:data:`LEASE_MIN_CAPACITY` tokens, at least half full at its last decision — takes
:data:`LEASE_SHARE` of the capacity along with the request's own cost, and spends that lease
locally for at most :data:`LEASE_SECONDS`. The tokens are taken from the shared bucket first,
so no worker ever admits more than the bucket allows; a lease left unspent is lost (at most
``LEASE_SHARE`` of the budget per lease period). Near the limit every request is decided in
Redis, exactly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, TypeVar, get_args

from aiohttp import web

from catalog.redis_client import REDIS_ERRORS
from proxy.breaker import Breaker
from proxy.ratelimit.batch import Batcher
from proxy.ratelimit.bucket import Bucket, Decision, take
from proxy.ratelimit.costs import DEFAULT_COSTS, cost_of
from proxy.ratelimit.identity import Client, KeyLimit, Network, identify
from proxy.ratelimit.script import RedisBuckets

Fallback = Literal["local", "open", "closed"]
FALLBACKS: Final = get_args(Fallback)

# Clients remembered per worker (identities, leases, fallback buckets), at most each.
_CLIENTS_KEPT: Final = 100_000
# Leases (see the module docstring).
LEASE_MIN_CAPACITY: Final = 100
LEASE_SHARE: Final = 0.05
LEASE_SECONDS: Final = 1.0

K = TypeVar("K")
V = TypeVar("V")


def _remember(store: dict[K, V], key: K, value: V) -> None:
    """``store[key] = value``, keeping at most ``_CLIENTS_KEPT``: when full, the oldest half goes."""
    if key not in store and len(store) >= _CLIENTS_KEPT:
        for old in list(store)[: _CLIENTS_KEPT // 2]:
            del store[old]
    store[key] = value


@dataclass(slots=True)
class _Lease:
    tokens: float
    expires: float  # time.monotonic()
    remaining: int  # the bucket's whole tokens after the lease was taken, for the headers
    reset_ms: int


@dataclass(frozen=True, slots=True)
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
        costs: Mapping[str, float] = DEFAULT_COSTS,
        breaker: Breaker | None = None,
        on_round_trip: Callable[[float, bool], None] = lambda seconds, failed: None,
    ) -> None:
        self._default = default
        self._keys = keys
        self._trusted = trusted
        self._timeout = timeout
        self._fallback = fallback
        self._costs = costs
        self.breaker = breaker or Breaker()
        self._on_round_trip = on_round_trip
        self._batcher = Batcher(buckets, timeout, self._round_trip_done)
        self._local: dict[str, Bucket] = {}
        self._leases: dict[str, _Lease] = {}
        self._leasing: dict[str, asyncio.Future[None]] = {}  # a lease request in flight, per client
        self._clients: dict[tuple[str | None, tuple[str, ...], str | None], Client] = {}
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
        (peer, X-Forwarded-For, X-API-Key) — it is pure, and the same clients come back."""
        headers = request.headers
        seen = (request.remote, tuple(headers.getall("X-Forwarded-For", ())), headers.get("X-API-Key"))
        client = self._clients.get(seen)
        if client is None:
            client = identify(seen[0], list(seen[1]), seen[2], self._trusted, self._keys)
            _remember(self._clients, seen, client)
        return client

    async def admit(self, request: web.BaseRequest, route: str) -> Admission:
        client = self.client(request)
        limit = client.limit or self._default
        policy = "key" if client.limit is not None else "default"
        page = request.query.get("page") if route == "search" and "page=" in request.rel_url.raw_query_string else None
        cost = cost_of(self._costs, route, page)
        leased = self._from_lease(client.id, cost)
        if leased is None and client.id in self._leasing:
            # A lease for this client is on its way: wait for it rather than take another
            # (fifty concurrent requests each leasing 5 % would drain a bucket of its own).
            await asyncio.shield(self._leasing[client.id])
            leased = self._from_lease(client.id, cost)
        if leased is not None:
            return Admission(leased, limit, policy, "lease")
        if self.breaker.closed:
            lease = self._lease_size(client.id, limit)
            leasing = asyncio.get_running_loop().create_future() if lease else None
            if leasing is not None:
                self._leasing[client.id] = leasing
            try:
                # Each decision is bounded by the timeout from when it is asked for; the second
                # (rare) shares the first one's bound: the limiter never holds a request longer.
                deadline = asyncio.get_running_loop().time() + self._timeout
                self.redis_calls += 1
                decision = await self._batcher.take(client.id, cost + lease, limit.max, limit.ttl_ms)
                if lease and not decision.allowed:  # not enough for a lease: decide exactly
                    self.redis_calls += 1
                    async with asyncio.timeout_at(deadline):
                        decision = await self._batcher.take(client.id, cost, limit.max, limit.ttl_ms)
                    lease = 0.0
            except REDIS_ERRORS:
                pass  # the batch told the breaker
            else:
                self._keep_lease(client.id, lease if decision.allowed else 0.0, decision)
                return Admission(decision, limit, policy, "redis")
            finally:
                if leasing is not None:
                    # Another request may have put its own lease in flight meanwhile (both waited
                    # on one that brought no lease): remove only ours, and always wake our waiters.
                    # An unconditional del raised KeyError here under a Redis Cluster failover,
                    # which answered 500 and left the waiters hanging for good.
                    if self._leasing.get(client.id) is leasing:
                        del self._leasing[client.id]
                    leasing.set_result(None)
        return Admission(self._fall_back(client.id, cost, limit), limit, policy, self._fallback)

    def _lease_size(self, client_id: str, limit: KeyLimit) -> float:
        """Tokens to lease along with this request: none unless far from the limit last time."""
        if limit.max < LEASE_MIN_CAPACITY:
            return 0.0
        last = self._leases.get(client_id)
        if last is None or last.remaining < limit.max / 2:
            return 0.0
        return limit.max * LEASE_SHARE

    def _keep_lease(self, client_id: str, tokens: float, decision: Decision) -> None:
        """Remember the decision (its remaining decides the next lease) and any leased tokens."""
        _remember(
            self._leases,
            client_id,
            _Lease(tokens, time.monotonic() + LEASE_SECONDS, decision.remaining, decision.reset_ms),
        )

    def _from_lease(self, client_id: str, cost: float) -> Decision | None:
        lease = self._leases.get(client_id)
        if lease is None or lease.tokens < cost or time.monotonic() > lease.expires:
            return None
        lease.tokens -= cost
        return Decision(
            allowed=True,
            remaining=lease.remaining + int(lease.tokens),
            retry_after_ms=0,
            reset_ms=lease.reset_ms,
            bucket=Bucket(lease.tokens, 0),
        )

    def _fall_back(self, client_id: str, cost: float, limit: KeyLimit) -> Decision:
        now_ms = int(time.monotonic() * 1000)
        if self._fallback == "local":
            decision = take(self._local.get(client_id), now_ms, cost, limit.max, limit.ttl_ms)
            _remember(self._local, client_id, decision.bucket)
            return decision
        allowed = self._fallback == "open"
        return Decision(
            allowed=allowed,
            remaining=limit.max if allowed else 0,
            retry_after_ms=0 if allowed else 1000,
            reset_ms=0,
            bucket=Bucket(float(limit.max), now_ms),
        )
