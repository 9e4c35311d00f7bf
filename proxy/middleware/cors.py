"""CORS for the configured storefront origins (``CORS_ORIGINS``); no headers for any other.

Only simple, read-only use is allowed: GET and HEAD, no credentials. Preflights from an allowed
origin get 204 with the allowed methods, kept by the browser (``Access-Control-Max-Age``) and
by any cache (``Cache-Control: public``, ``Vary: Origin``: the answer depends on the origin
alone); the response headers a storefront reads (request id, cache and rate-limit state, ETag)
are exposed. Whatever a cache may keep says ``Vary: Origin`` (the cached routes' answers and
the OpenAPI document have it from ``proxy.http_caching``, for every request, with an Origin or
not), so a shared cache never hands an answer made for one origin, or for none, to another.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

_EXPOSED = ", ".join(
    [
        "X-Request-ID",
        "X-Cache",
        "Age",
        "ETag",
        "X-Search-Backend",
        "RateLimit",
        "RateLimit-Policy",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
        "Retry-After",
    ]
)


def vary_on_origin(headers: MutableMapping[str, str]) -> None:
    """Add ``Origin`` to ``Vary`` unless it is there (cached answers name it already)."""
    vary = headers.get("Vary")
    if vary is None:
        headers["Vary"] = "Origin"
    elif "Origin" not in vary:
        headers["Vary"] = f"{vary}, Origin"


def cors_middleware(origins: Iterable[str], *, max_age: int = 600) -> Middleware:
    allowed = frozenset(origins)
    preflight_headers = {
        "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
        "Access-Control-Allow-Headers": "X-Request-ID, Content-Type, If-None-Match",
        "Access-Control-Max-Age": str(max_age),
        "Cache-Control": f"public, max-age={max_age}",
        "Vary": "Origin",
    }

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None or origin not in allowed:
            return await handler(request)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return web.Response(status=204, headers={"Access-Control-Allow-Origin": origin, **preflight_headers})
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers["Access-Control-Allow-Origin"] = origin
            vary_on_origin(exc.headers)
            raise
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = _EXPOSED
        vary_on_origin(response.headers)
        return response

    return middleware
