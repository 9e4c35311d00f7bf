"""Every response carries ``X-Request-ID``: the client's own when it sent a sane one, else ours.

A client-sent id is echoed only when it is short and printable, so it can be logged and put
in a header without escaping. Generated ids are random hex (uuid4 is slower and no more useful).
"""

from __future__ import annotations

import os
import re

from aiohttp import web
from aiohttp.typedefs import Handler

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_KEY = web.RequestKey("request_id", str)
_SANE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def new_request_id() -> str:
    return os.urandom(8).hex()


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    sent = request.headers.get(REQUEST_ID_HEADER)
    request_id = sent if sent and _SANE_ID.fullmatch(sent) else new_request_id()
    request[REQUEST_ID_KEY] = request_id
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers[REQUEST_ID_HEADER] = request_id
        raise
    response.headers[REQUEST_ID_HEADER] = request_id
    return response
