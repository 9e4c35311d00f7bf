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
from typing import Any, Final, NamedTuple

from aiohttp import web
from aiohttp.hdrs import IF_NONE_MATCH, ORIGIN
from multidict import CIMultiDict, istr

from proxy.cache.response_cache import ENGINE_BACKEND, Served
from proxy.http_caching import API_KEY_HEADER, HttpCaching, is_public, none_match
from proxy.metrics import FastHit
from proxy.middleware.ratelimit import admission_headers, admit, admitted_now, refusal
from proxy.middleware.request_id import REQUEST_ID_HEADER, request_id_of
from proxy.routes import ROUTES, ParsedQueries, Route, answer_headers
from proxy.state import CACHE, HTTP_CACHING, LIMITER, METRICS, SETTINGS

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

# Header names as multidict's case-insensitive keys, made once: a lookup with a plain str makes
# one per call (0.1 µs of the 0.3 µs of each, timeit).
API_KEY: Final = istr(API_KEY_HEADER)

# Header sets kept for the hot path's answers: (ETag, age in seconds, keyed) each; a hot entry
# adds one a second (its Age). Cleared when full: rebuilding one costs a few microseconds.
HEADER_SETS_MAX: Final = 4096
# Prices kept for limited hits (by request key); cleared when full, like the header sets.
PRICES_MAX: Final = 4096


class HeaderSets:
    """The headers of a cache hit's answer (``proxy.routes.answer_headers``), built once per
    entry, age and keyed-ness instead of per request: a dict of seven headers, its Cache-Control
    and the ``Served`` behind them were a tenth of a hit's time in the handler (py-spy under wrk,
    ``benchmarks/cache.py --profile``). Each set is given out as a copy."""

    __slots__ = ("_caching", "sets")

    def __init__(self, caching: HttpCaching) -> None:
        self._caching = caching
        # (ETag, age, keyed) -> the set; read by the fast path itself, built by :meth:`of`.
        self.sets: dict[tuple[str, int, bool], tuple[CIMultiDict[str], CIMultiDict[str], bool]] = {}

    def of(self, body: bytes, etag: str, age: int, keyed: bool) -> tuple[CIMultiDict[str], CIMultiDict[str], bool]:
        """(the 200's headers, the 304's: the same without Content-Type, whether a shared cache
        may keep them), not to be changed."""
        key = (etag, age, keyed)
        found = self.sets.get(key)
        if found is None:
            full = CIMultiDict(answer_headers(self._caching, Served(body, etag, "HIT", age), keyed=keyed))
            bare = full.copy()
            del bare["Content-Type"]
            if len(self.sets) >= HEADER_SETS_MAX:
                self.sets.clear()
            found = self.sets[key] = (full, bare, is_public(full["Cache-Control"]))
        return found


class HotRoute(NamedTuple):
    """A route the fast path answers, with what it counts its hits as."""

    route: Route[Any]
    memo: ParsedQueries[Any]
    ok: FastHit  # a 200
    not_modified: FastHit  # a 304


def _hot(route: Route[Any], memo: ParsedQueries[Any]) -> HotRoute:
    backend = ENGINE_BACKEND if route.by_backend else None
    return HotRoute(route, memo, *((route.name, route.path, status, backend) for status in ("2xx", "3xx")))


def fast_path(app: web.Application, application: Handler) -> Handler:
    cache = app[CACHE]
    header_sets = HeaderSets(app[HTTP_CACHING])
    metrics = app[METRICS]
    settings = app[SETTINGS]
    limiter = app[LIMITER] if settings.rate_limit_enabled else None
    costs = settings.rate_limit_costs
    routes = {route.path: _hot(route, route.memo) for route in ROUTES if route.memo is not None}
    perf_counter, now = time.perf_counter, time.time
    # Each known request's price in tokens, by its key (which names the route too): the route's
    # pricing is two calls more per limited hit (cost_of, the route's own).
    prices: dict[str, float] = {}

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        started = perf_counter()
        request_headers = request.headers
        if request.method == "GET" and ORIGIN not in request_headers:
            # The request target as sent, split once: cheaper than the decoded ``request.path``
            # and ``rel_url`` (2 % of a hit's samples, py-spy). A path spelled otherwise
            # (percent-encoded) or a fragment is not known here: the application answers those.
            path, _, query = request.raw_path.partition("?")
            hot = routes.get(path)
            if hot is not None:
                route, memo, ok, not_modified = hot
                known = memo.known(query)
                if known is not None:
                    at = now()
                    entry = cache.cached(route.cache_key(app, known[0]), at)
                    if entry is not None:
                        # What the route and the request-id middleware would give this answer.
                        etag = entry.etag
                        age, keyed = max(0, int(at - entry.fetched_at)), API_KEY in request_headers
                        # HeaderSets.of's lookup, inlined: a call less on every hit.
                        full, bare, public = header_sets.sets.get((etag, age, keyed)) or header_sets.of(
                            entry.body, etag, age, keyed
                        )
                        request_id = request_id_of(request)
                        if limiter is not None:
                            # Limited like any request: the rate-limit middleware's own steps.
                            # Priced from the parsed request, once per query string (PRICES_MAX).
                            cost = prices.get(known[0])
                            if cost is None:
                                cost = route.cost(costs, known[1])
                                if len(prices) >= PRICES_MAX:
                                    prices.clear()
                                prices[known[0]] = cost
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
                        if_none_match = request_headers.get(IF_NONE_MATCH)
                        if if_none_match is not None and none_match(if_none_match, etag):
                            response = web.Response(status=304, headers=bare)
                            hit = not_modified
                        else:
                            response = web.Response(body=entry.body, headers=full)
                            hit = ok
                        headers = response.headers
                        headers[REQUEST_ID_HEADER] = request_id
                        if admission is not None and not public:
                            headers.update(admission_headers(admission))
                        metrics.count_fast_hit(hit, perf_counter() - started)
                        return response
        return await application(request)

    return handle


def install(runner: web.AppRunner) -> None:
    """Put the fast path in front of the application ``runner`` serves (after ``setup()``)."""
    server = runner.server
    assert server is not None, "install() needs a runner that has been set up"
    server.request_handler = fast_path(runner.app, server.request_handler)
