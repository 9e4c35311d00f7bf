"""Admitting a request: identify the client, take tokens from its bucket, or fall back.

The bucket lives in Redis (``proxy.ratelimit.script``: one EVALSHA, exact across every worker
and host). Each call is bounded by ``timeout`` (≤ 50 ms) and guarded by a circuit breaker
(``proxy.breaker``): while Redis fails, the limiter answers from its ``fallback`` —

- ``local`` (the default): an in-process bucket per client with the same parameters (per
  worker, so a client may get up to workers × its limit while Redis is down);
- ``open``: every request is admitted;
- ``closed``: every request is refused (429, ``Retry-After: 1``);

and goes back to Redis by itself when a probe after the breaker's cooldown succeeds.

What a request costs depends on its route (:data:`COSTS`): a suggestion (sent on every
keystroke) is cheaper than a search, a deep page dearer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from aiohttp import web
from redis.exceptions import RedisError

from proxy.breaker import Breaker
from proxy.ratelimit.bucket import Bucket, Decision, take
from proxy.ratelimit.identity import Client, KeyLimit, Network, identify
from proxy.ratelimit.script import RedisBuckets

Fallback = Literal["local", "open", "closed"]
FALLBACKS: Final = ("local", "open", "closed")

# Tokens per request by route; a search page beyond DEEP_PAGE costs DEEP_PAGE_COST.
COSTS: Final[Mapping[str, float]] = {"search": 1.0, "suggestions": 0.5, "product": 1.0, "seller": 1.0}
DEEP_PAGE: Final = 5
DEEP_PAGE_COST: Final = 2.0
# In-process buckets kept for the local fallback, at most (then the oldest half is dropped).
_LOCAL_BUCKETS: Final = 100_000


def limited_route(path: str) -> str | None:
    """The route name of a limited path; None for everything else (health, metrics, documents)."""
    if path == "/api/search":
        return "search"
    if path == "/api/search/suggestions":
        return "suggestions"
    if path.startswith("/api/products/"):
        return "product"
    if path.startswith("/api/sellers/"):
        return "seller"
    return None


def cost_of(route: str, request: web.BaseRequest) -> float:
    if route == "search":
        page = request.query.get("page", "")
        if page.isdigit() and len(page) < 7 and int(page) > DEEP_PAGE:
            return DEEP_PAGE_COST
    return COSTS[route]


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
        breaker: Breaker | None = None,
    ) -> None:
        self._buckets = buckets
        self._default = default
        self._keys = keys
        self._trusted = trusted
        self._timeout = timeout
        self._fallback = fallback
        self.breaker = breaker or Breaker()
        self._local: dict[str, Bucket] = {}

    def client(self, request: web.BaseRequest) -> Client:
        return identify(
            request.remote,
            request.headers.getall("X-Forwarded-For", []),
            request.headers.get("X-API-Key"),
            self._trusted,
            self._keys,
        )

    async def admit(self, request: web.BaseRequest, route: str) -> Admission:
        client = self.client(request)
        limit = client.limit or self._default
        policy = "key" if client.limit is not None else "default"
        cost = cost_of(route, request)
        if self.breaker.closed:
            try:
                async with asyncio.timeout(self._timeout):
                    decision = await self._buckets.take(client.id, cost, limit.max, limit.ttl_ms)
            except (RedisError, OSError, TimeoutError):
                self.breaker.failed()
            else:
                self.breaker.succeeded()
                return Admission(decision, limit, policy, "redis")
        return Admission(self._fall_back(client.id, cost, limit), limit, policy, self._fallback)

    def _fall_back(self, client_id: str, cost: float, limit: KeyLimit) -> Decision:
        now_ms = int(time.monotonic() * 1000)
        if self._fallback == "local":
            decision = take(self._local.get(client_id), now_ms, cost, limit.max, limit.ttl_ms)
            if len(self._local) >= _LOCAL_BUCKETS:
                for stale in list(self._local)[: _LOCAL_BUCKETS // 2]:
                    del self._local[stale]
            self._local[client_id] = decision.bucket
            return decision
        allowed = self._fallback == "open"
        return Decision(
            allowed=allowed,
            remaining=limit.max if allowed else 0,
            retry_after_ms=0 if allowed else 1000,
            reset_ms=0,
            bucket=Bucket(float(limit.max), now_ms),
        )
