"""The one place where errors become ``application/problem+json`` responses.

Handlers raise :class:`ProblemError` subclasses by meaning; aiohttp's own 404/405 become the
matching problems; anything unexpected is logged with its traceback (server side only) and
answered as a bare 500 problem. A stack trace or an engine's error text never reaches a client.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.errors import (
    PROBLEM_CONTENT_TYPE,
    InvalidParameters,
    MethodNotAllowed,
    NotFound,
    ProblemError,
    RateLimited,
    problem_body,
)
from proxy.middleware.request_id import REQUEST_ID_KEY

log = logging.getLogger("hos_search.proxy")


def problem_response(request: web.Request, error: ProblemError) -> web.Response:
    request_id = request.get(REQUEST_ID_KEY)
    response = web.Response(
        status=error.status,
        body=problem_body(error, instance=f"urn:request:{request_id}" if request_id else None),
        content_type=PROBLEM_CONTENT_TYPE,
    )
    if isinstance(error, MethodNotAllowed) and error.allowed:
        response.headers["Allow"] = ", ".join(error.allowed)
    if isinstance(error, RateLimited):
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def _from_http_exception(exc: web.HTTPException) -> ProblemError | None:
    if isinstance(exc, web.HTTPNotFound):
        return NotFound()
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return MethodNotAllowed(sorted(exc.allowed_methods), f"{exc.method} is not allowed here.")
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return InvalidParameters((), "The request is too large.")
    return None


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
