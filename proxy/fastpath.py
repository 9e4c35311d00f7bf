"""The hot path: an L1 cache hit answered before the application's router and middlewares.

Profiled under ``wrk`` (py-spy, ``benchmarks/cache.py``), a cache hit through the application
spent more time in aiohttp's routing, the four middlewares and their bookkeeping than in
anything the cache does. This handler sits in front of the application (it becomes the
server's request handler, ``install``) and answers only requests it can answer completely:

- a GET of a route of the route table with a query-string memo (``proxy.routes.ROUTES``:
  search and suggestions),
- without an ``Origin`` header (CORS answers need the middleware),
- whose raw query string was parsed before (the route's memo, so it is valid and its key known),
- whose answer is an L1 HIT (``ResponseCache.cached``).

Such a request gets the same bytes, the same headers and the same metrics as through the
application — a 304 when its ``If-None-Match`` names the entry's ETag (computed once with the
entry, never here), ``private, no-store`` with an ``X-API-Key`` — except that it is not
counted in ``search_proxy_requests_in_flight``, which it leaves within microseconds, and that
its counters are added in batches, at most a second late (``ProxyMetrics.count_fast_hit``).
Everything else — the first request of a URL, a miss, a stale answer, an error, any other
route — goes to the application unchanged. ``tests/test_fastpath.py`` checks both paths agree.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web
from multidict import CIMultiDict

from proxy.cache.response_cache import ENGINE_BACKEND, Served
from proxy.http_caching import API_KEY_HEADER, HttpCaching, is_public, none_match
from proxy.middleware.metrics import STATUS_CLASS
from proxy.middleware.ratelimit import admission_headers, admit, admitted_now, refusal
from proxy.middleware.request_id import REQUEST_ID_HEADER, request_id_of
from proxy.routes import ROUTES, answer_headers
from proxy.state import CACHE, HTTP_CACHING, LIMITER, METRICS, SETTINGS

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

# Header sets kept for the hot path's answers: (ETag, age in seconds, keyed) each; a hot entry
# adds one a second (its Age). Cleared when full: rebuilding one costs a few microseconds.
HEADER_SETS_MAX: Final = 4096


class HeaderSets:
    """The headers of a cache hit's answer (``proxy.routes.answer_headers``), built once per
    entry, age and keyed-ness instead of per request: a dict of seven headers, its Cache-Control
    and the ``Served`` behind them were a tenth of a hit's time in the handler (py-spy under wrk,
    ``benchmarks/cache.py --profile``). Each set is given out as a copy."""

    __slots__ = ("_caching", "_sets")

    def __init__(self, caching: HttpCaching) -> None:
        self._caching = caching
        self._sets: dict[tuple[str, int, bool], tuple[CIMultiDict[str], CIMultiDict[str]]] = {}

    def of(self, body: bytes, etag: str, age: int, keyed: bool) -> tuple[CIMultiDict[str], CIMultiDict[str]]:
        """(the 200's headers, the 304's: the same without Content-Type), not to be changed."""
        key = (etag, age, keyed)
        found = self._sets.get(key)
        if found is None:
            full = CIMultiDict(answer_headers(self._caching, Served(body, etag, "HIT", age), keyed=keyed))
            bare = full.copy()
            del bare["Content-Type"]
            if len(self._sets) >= HEADER_SETS_MAX:
                self._sets.clear()
            found = self._sets[key] = (full, bare)
        return found


def fast_path(app: web.Application, application: Handler) -> Handler:
    cache = app[CACHE]
    header_sets = HeaderSets(app[HTTP_CACHING])
    metrics = app[METRICS]
    settings = app[SETTINGS]
    limiter = app[LIMITER] if settings.rate_limit_enabled else None
    costs = settings.rate_limit_costs
    routes = {route.path: (route, route.memo) for route in ROUTES if route.memo is not None}
    perf_counter, now = time.perf_counter, time.time

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        started = perf_counter()
        if request.method == "GET" and "Origin" not in request.headers:
            hot = routes.get(request.path)
            if hot is not None:
                route, memo = hot
                known = memo.known(request.rel_url.raw_query_string)
                if known is not None:
                    at = now()
                    entry = cache.cached(route.cache_key(app, known[0]), at)
                    if entry is not None:
                        # What the route and the request-id middleware would give this answer.
                        request_headers = request.headers
                        etag = entry.etag
                        full, bare = header_sets.of(
                            entry.body, etag, max(0, int(at - entry.fetched_at)), API_KEY_HEADER in request_headers
                        )
                        request_id = request_id_of(request)
                        if limiter is not None:
                            # Limited like any request: the rate-limit middleware's own steps.
                            cost = route.cost(costs, known[1])  # priced from the parsed request
                            # A leased request is answered without a coroutine (Limiter.leased).
                            admission = admitted_now(limiter, metrics, request, route.name, cost) or await admit(
                                limiter, metrics, request, route.name, cost
                            )
                            if not admission.decision.allowed:
                                refused = refusal(request, admission)
                                refused.headers[REQUEST_ID_HEADER] = request_id
                                metrics.count_request(route.path, "GET", "4xx", perf_counter() - started)
                                return refused
                        else:
                            admission = None
                        # A 304 when If-None-Match names the entry's ETag (http_caching.conditional_response).
                        if_none_match = request_headers.get("If-None-Match")
                        if if_none_match is not None and none_match(if_none_match, etag):
                            response = web.Response(status=304, headers=bare)
                        else:
                            response = web.Response(body=entry.body, headers=full)
                        headers = response.headers
                        headers[REQUEST_ID_HEADER] = request_id
                        if admission is not None and not is_public(full["Cache-Control"]):
                            headers.update(admission_headers(admission))
                        status_class = STATUS_CLASS[response.status // 100]
                        backend = ENGINE_BACKEND if route.by_backend else None
                        metrics.count_fast_hit(route.name, route.path, perf_counter() - started, status_class, backend)
                        return response
        return await application(request)

    return handle


def install(runner: web.AppRunner) -> None:
    """Put the fast path in front of the application ``runner`` serves (after ``setup()``)."""
    server = runner.server
    assert server is not None, "install() needs a runner that has been set up"
    server.request_handler = fast_path(runner.app, server.request_handler)
