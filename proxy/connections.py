"""Bounds on client connections: how long a request's headers may take, how many per worker.

aiohttp's defaults let an idle or byte-by-byte client hold a connection for an hour (its
keep-alive timeout is 3,630 s and it has no header-read timeout), with no cap per worker
(issue 23). :func:`install` puts these in front of a set-up ``web.AppRunner``:

- **Header timeout** (``HTTP_HEADER_TIMEOUT_S``): a new connection whose first request's
  headers have not all arrived within it is closed. Later requests on a kept-alive connection
  are bounded by the keep-alive timeout (``HTTP_KEEPALIVE_TIMEOUT_S``, passed to aiohttp by
  :func:`server_options`): aiohttp's keep-alive timer runs from the connection's start and
  from each answer, and closes a connection whose next request has not fully arrived by then.
- **Connections per worker** (``HTTP_MAX_CONNECTIONS``): a connection beyond the cap is closed
  as soon as it is accepted, so a flood of sockets cannot take a worker's file descriptors.
- **Header sizes** (:data:`MAX_LINE_BYTES`, :data:`MAX_FIELD_BYTES`, :data:`MAX_HEADERS`):
  beyond them aiohttp answers 400/431 (a request line or header field too long, too many).

Only aiohttp's public server API is used (``Server.connection_made``/``connection_lost``,
``RequestHandler.force_close``, ``BaseRequest.protocol``). Never reads a request's content.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

# The request line (a search URL with every filter is far below this) and each header field.
MAX_LINE_BYTES: Final = 8_190
MAX_FIELD_BYTES: Final = 8_190
# Headers per request: browsers send ~20, a CDN adds a few.
MAX_HEADERS: Final = 64

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def server_options(keepalive_timeout_s: float) -> dict[str, Any]:
    """The keyword arguments of ``web.AppRunner`` (passed to each connection's handler)."""
    return {
        "keepalive_timeout": keepalive_timeout_s,
        "max_line_size": MAX_LINE_BYTES,
        "max_field_size": MAX_FIELD_BYTES,
        "max_headers": MAX_HEADERS,
    }


def install(runner: web.AppRunner, *, header_timeout_s: float, max_connections: int) -> None:
    """Bound the connections of ``runner``'s server (after ``setup()``; see the module docstring)."""
    server = runner.server
    assert server is not None, "install() needs a runner that has been set up"
    # Connections whose first request has not arrived yet, each with the timer that closes it.
    waiting: dict[RequestHandler, asyncio.TimerHandle] = {}
    open_connections = 0
    connection_made, connection_lost, handle = server.connection_made, server.connection_lost, server.request_handler

    def made(handler: RequestHandler, transport: asyncio.Transport) -> None:
        nonlocal open_connections
        connection_made(handler, transport)
        open_connections += 1
        if open_connections > max_connections:
            handler.force_close()
            transport.close()
            return
        waiting[handler] = asyncio.get_running_loop().call_later(header_timeout_s, timed_out, handler)

    def timed_out(handler: RequestHandler) -> None:
        if waiting.pop(handler, None) is not None:
            handler.force_close()

    def lost(handler: RequestHandler, exc: BaseException | None = None) -> None:
        nonlocal open_connections
        open_connections -= 1
        timer = waiting.pop(handler, None)
        if timer is not None:
            timer.cancel()
        connection_lost(handler, exc)

    def first_request_arrived(request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
        # On the hot path: one dict lookup when the connection has been served before, and no
        # coroutine of its own (aiohttp awaits what it returns): that layer was 1 % of a cache
        # hit's samples (py-spy under wrk, benchmarks/cache.py, 2026-12-06).
        if waiting:
            timer = waiting.pop(request.protocol, None)
            if timer is not None:
                timer.cancel()
        return handle(request)

    server.connection_made = made  # type: ignore[method-assign]
    server.connection_lost = lost  # type: ignore[method-assign]
    server.request_handler = first_request_arrived
