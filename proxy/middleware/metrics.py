"""Counts and times every request by its route template and status class."""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from proxy.metrics import ProxyMetrics

STATUS_CLASS = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}


def _route(request: web.Request) -> str:
    info = request.match_info
    resource = info.route.resource if info.http_exception is None else None
    return resource.canonical if resource is not None else "unmatched"


def metrics_middleware(metrics: ProxyMetrics) -> Middleware:
    in_flight = metrics.in_flight

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        in_flight.inc()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            in_flight.dec()
            status_class = STATUS_CLASS.get(status // 100, "5xx")
            metrics.count_request(_route(request), request.method, status_class, time.perf_counter() - start)

    return middleware
