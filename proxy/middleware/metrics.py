"""Counts and times every request by its route template and status class."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from proxy.metrics import ProxyMetrics

_STATUS_CLASS = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}


def _route(request: web.Request) -> str:
    info = request.match_info
    resource = info.route.resource if info.http_exception is None else None
    return resource.canonical if resource is not None else "unmatched"


def metrics_middleware(metrics: ProxyMetrics) -> Middleware:
    requests, duration, in_flight = metrics.requests, metrics.request_duration, metrics.in_flight
    # The labelled children, looked up once: ``labels()`` takes a lock and builds a key on every
    # call, a measurable share of a cache hit. Bounded: routes × methods × status classes.
    counted: dict[tuple[str, str, str], Any] = {}
    timed: dict[str, Any] = {}

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
            route = _route(request)
            timer = timed.get(route)
            if timer is None:
                timer = timed[route] = duration.labels(route)
            timer.observe(time.perf_counter() - start)
            labels = (route, request.method, _STATUS_CLASS.get(status // 100, "5xx"))
            counter = counted.get(labels)
            if counter is None:
                counter = requests.labels(*labels)
                if len(counted) < 1000:  # a client inventing methods cannot grow this
                    counted[labels] = counter
            counter.inc()

    return middleware
