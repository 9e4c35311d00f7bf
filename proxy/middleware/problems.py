"""The one place where errors become ``application/problem+json`` responses.

Handlers raise :class:`ProblemError` subclasses by meaning; aiohttp's own 404/405 become the
matching problems; anything unexpected is logged with its traceback (server side only) and
answered as a bare 500 problem. A stack trace or an engine's error text never reaches a client.
No problem is kept by any cache (``Cache-Control: no-store``): it says how one request failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.errors import (
    PROBLEM_CONTENT_TYPE,
    InvalidParameters,
    MethodNotAllowed,
    NotFound,
    ProblemError,
    problem_body,
)
from proxy.http_caching import NO_STORE
from proxy.middleware.request_id import REQUEST_ID_KEY

log = logging.getLogger("hos_search.proxy")


def problem_response(request: web.BaseRequest, error: ProblemError) -> web.Response:
    request_id = request.get(REQUEST_ID_KEY)
    return web.Response(
        status=error.status,
        body=problem_body(error, instance=f"urn:request:{request_id}" if request_id else None),
        content_type=PROBLEM_CONTENT_TYPE,
        headers={"Cache-Control": NO_STORE, **error.headers},
    )


def _method_not_allowed(exc: web.HTTPException) -> ProblemError:
    assert isinstance(exc, web.HTTPMethodNotAllowed)
    return MethodNotAllowed(sorted(exc.allowed_methods), f"{exc.method} is not allowed here.")


# aiohttp's own answers (routing, body size) and the problem each becomes; any other
# HTTPException passes through untouched.
_HTTP_PROBLEMS: dict[type[web.HTTPException], Callable[[web.HTTPException], ProblemError]] = {
    web.HTTPNotFound: lambda exc: NotFound(),
    web.HTTPMethodNotAllowed: _method_not_allowed,
    web.HTTPRequestEntityTooLarge: lambda exc: InvalidParameters((), "The request is too large."),
}


def _from_http_exception(exc: web.HTTPException) -> ProblemError | None:
    convert = _HTTP_PROBLEMS.get(type(exc))
    return None if convert is None else convert(exc)


@web.middleware
async def problems_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ProblemError as error:
        return problem_response(request, error)
    except web.HTTPException as exc:
        problem = _from_http_exception(exc)
        if problem is None:
            raise
        return problem_response(request, problem)
    except Exception:
        log.exception(
            "unhandled error on %s %s (request %s)", request.method, request.path, request.get(REQUEST_ID_KEY)
        )
        return problem_response(request, ProblemError())
