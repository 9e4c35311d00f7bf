"""Every response carries ``X-Request-ID``: the client's own when it sent a sane one, else ours.

A client-sent id is echoed only when it is short and printable, so it can be logged and put
in a header without escaping. Generated ids are a random per-process prefix and a counter:
unique across processes and restarts in practice, and far cheaper than reading random bytes
per request (``os.urandom`` was a tenth of a cache hit's CPU time, measured with py-spy).
"""

from __future__ import annotations

import itertools
import os
import re

from aiohttp import web
from aiohttp.typedefs import Handler

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_KEY = web.RequestKey("request_id", str)
_SANE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


_PREFIX = os.urandom(5).hex()
_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_PREFIX}{next(_COUNTER):06x}"


def request_id_of(request: web.BaseRequest) -> str:
    """The client's ``X-Request-ID`` when sane, else a new one."""
    sent = request.headers.get(REQUEST_ID_HEADER)
    return sent if sent and _SANE_ID.fullmatch(sent) else new_request_id()


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request_id_of(request)
    request[REQUEST_ID_KEY] = request_id
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers[REQUEST_ID_HEADER] = request_id
        raise
    response.headers[REQUEST_ID_HEADER] = request_id
    return response
