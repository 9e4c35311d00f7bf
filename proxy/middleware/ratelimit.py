"""Rate limiting on the limited routes: admit or answer 429, and say where the client stands.

Sits outside the problems middleware, so it sees every response of a limited route — an
answer, a 400 or a 503 alike — and puts the rate-limit headers on each that no shared cache
may keep (``proxy.ratelimit.headers``): a ``public`` answer (``HTTP_CACHE_SCOPE=public``) goes
without them, since a CDN would hand one client's budget to every other
(``proxy.http_caching.is_public``). A refused request gets a 429 problem with ``Retry-After`` at
once: it reaches neither the cache nor the engine, and the metrics middleware around this one
counts it like any other response. Health, readiness, metrics and the OpenAPI document are not
limited: only the cached routes of the route table are (``proxy.routes.ROUTES``), each priced
from its parsed request (``proxy.routes.request_cost``).
"""

from __future__ import annotations

import math

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from proxy.errors import RateLimited
from proxy.http_caching import is_public
from proxy.metrics import ProxyMetrics
from proxy.middleware.problems import problem_response
from proxy.ratelimit.headers import rate_limit_headers
from proxy.ratelimit.limiter import Admission, Limiter
from proxy.routes import request_cost, route_of
from proxy.state import LIMITER, METRICS, SETTINGS


def admission_headers(admission: Admission) -> dict[str, str]:
    return rate_limit_headers(admission.policy, admission.limit.max, admission.limit.ttl_ms, admission.decision)


def refusal(request: web.BaseRequest, admission: Admission) -> web.Response:
    """The 429 for a refused request, with its rate-limit headers."""
    retry_after = math.ceil(admission.decision.retry_after_ms / 1000)
    response = problem_response(request, RateLimited(retry_after))
    response.headers.update(admission_headers(admission))
    return response


def admitted_now(
    limiter: Limiter, metrics: ProxyMetrics, request: web.BaseRequest, route: str, cost: float
) -> Admission | None:
    """The admission when a lease answers it at once (``Limiter.leased``), counted; else None."""
    admission = limiter.leased(request, cost)
    if admission is not None:
        metrics.count_admission(route, admission)
    return admission


async def admit(
    limiter: Limiter, metrics: ProxyMetrics, request: web.BaseRequest, route: str, cost: float
) -> Admission:
    """The admission when :func:`admitted_now` had none, counted. Not asked again here: a cold
    client's request checked its lease three times on its way to Redis (cProfile's call counts,
    ``benchmarks/ratelimit.py``)."""
    admission = await limiter.admit(request, cost)
    metrics.count_admission(route, admission)
    return admission


def ratelimit_middleware() -> Middleware:
    """The middleware; the limiter is the app's (``LIMITER``, opened with the app's Redis)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = route_of(request)
        if route is None:
            return await handler(request)
        app = request.app
        cost = request_cost(route, app[SETTINGS].rate_limit_costs, request)
        limiter, metrics = app[LIMITER], app[METRICS]
        admission = admitted_now(limiter, metrics, request, route.name, cost) or await admit(
            limiter, metrics, request, route.name, cost
        )
        if not admission.decision.allowed:
            return refusal(request, admission)
        response = await handler(request)
        if not is_public(response.headers.get("Cache-Control")):
            response.headers.update(admission_headers(admission))
        return response

    return middleware
