"""HTTP caching for browsers and a CDN in front of the proxy: Cache-Control, ETag, Vary, 304.

The proxy's own cache (``proxy.cache``) decides what is fresh; this module tells the caches
downstream how long they may keep an answer, and answers their revalidations. The rules
(docs/api.md, "HTTP caching and the CDN"):

- An engine answer is ``<scope>, max-age=<Age + HTTP_MAX_AGE_S>, stale-while-revalidate=M,
  stale-if-error=K``. A downstream cache counts ``Age`` against ``max-age`` (RFC 9111 §4.2.3),
  so the answer stays fresh there ``HTTP_MAX_AGE_S`` more seconds whatever its age here: a
  proxy HIT is verified fresh *now*. A ``STALE`` answer gets ``max-age=<Age>``: no freshness
  beyond now, only the stale-while-revalidate grace while it is re-fetched.
- A Postgres fallback answer is ``<scope>, max-age=<HTTP_FALLBACK_MAX_AGE_S>, stale-if-error=K``:
  short, and no stale-while-revalidate, so the engine's answer replaces it soon.
- ``<scope>`` is ``public`` (``HTTP_CACHE_SCOPE=public``, the default: a CDN may keep answers,
  which therefore carry nothing about one client — no rate-limit headers) or ``private``.
- A request with ``X-API-Key`` (a partner's server, with a budget of its own) is answered
  ``private, no-store``; errors, 429s and the operational endpoints ``no-store``.
- ``ETag`` is strong: a digest of the bytes sent, computed once per cache entry
  (``proxy.cache.entry``), never per hit. ``If-None-Match`` is compared weakly (RFC 9110
  §13.1.2), lists and ``*`` included, and a match is a ``304`` with the same headers, no body.
- ``Vary`` names the request headers that change an answer: ``X-API-Key`` always (it makes the
  answer private), ``Origin`` when CORS is on.

Pure apart from building the ``web.Response``; imports nothing else of the proxy.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web

SCOPES: Final = ("public", "private")
NO_STORE: Final = "no-store"
PRIVATE_NO_STORE: Final = "private, no-store"
# Revalidate on every use (a 304 is cheap): for documents that change only with a deploy.
NO_CACHE: Final = "no-cache"
API_KEY_HEADER: Final = "X-API-Key"
_PUBLIC: Final = "public"
_STALE: Final = "STALE"
# Quoted opaque tags of an If-None-Match list; a W/ prefix is left out, as weak comparison wants.
_OPAQUE_TAG: Final = re.compile(r'"[^"]*"')
# Cache-Control values of engine answers, by (stale, age): ages are bounded by the cache's ttl
# and grace, and a memo this size never fills in practice; it only saves a format per hit.
_MEMO_LIMIT: Final = 4096


def entity_tag(body: bytes) -> str:
    """A strong ETag for ``body``: 128 bits of BLAKE2b, quoted (equal bytes, equal tags)."""
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def none_match(if_none_match: str, etag: str) -> bool:
    """Whether ``If-None-Match: <if_none_match>`` matches ``etag``, comparing weakly.

    ``*`` matches any current representation; otherwise any listed tag, ``W/`` or not, whose
    opaque part equals ours.
    """
    if etag in if_none_match:  # only then can one of the listed tags be ours
        return etag in _OPAQUE_TAG.findall(if_none_match)
    return if_none_match.strip() == "*"


def is_public(cache_control: str | None) -> bool:
    """Whether a response with this Cache-Control may be kept by a shared cache (a CDN)."""
    return cache_control is not None and cache_control.startswith(_PUBLIC)


class SentResponse(web.Response):
    """A response that calls ``sent()`` once aiohttp has handed all of it to the socket: work
    that must not delay the answer (the cache's L2 write) starts then."""

    def __init__(self, *, sent: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._sent = sent

    async def write_eof(self, data: bytes = b"") -> None:
        try:
            await super().write_eof(data)
        finally:
            self._sent()


def conditional_response(
    body: bytes, headers: dict[str, str], if_none_match: str | None, sent: Callable[[], None] | None = None
) -> web.Response:
    """``body`` with ``headers``, or a 304 with the same headers (but no Content-Type) when
    ``If-None-Match`` names its ETag; ``sent()`` is called once either is sent."""
    if if_none_match is not None and none_match(if_none_match, headers["ETag"]):
        headers.pop("Content-Type", None)
        if sent is not None:
            return SentResponse(status=304, headers=headers, sent=sent)
        return web.Response(status=304, headers=headers)
    if sent is not None:
        return SentResponse(body=body, headers=headers, sent=sent)
    return web.Response(body=body, headers=headers)


class HttpCaching:
    """The Cache-Control and Vary values of one proxy's answers, from its settings."""

    __slots__ = ("_fallback", "_memo", "_stale_directives", "document_vary", "max_age", "scope", "vary")

    def __init__(
        self,
        *,
        max_age: int,
        stale_while_revalidate: int,
        stale_if_error: int,
        fallback_max_age: int,
        scope: str = "public",
        cors: bool = False,
    ) -> None:
        assert scope in SCOPES, scope
        self.scope = scope
        self.max_age = max_age
        if_error = f", stale-if-error={stale_if_error}" if stale_if_error else ""
        revalidate = f", stale-while-revalidate={stale_while_revalidate}" if stale_while_revalidate else ""
        self._stale_directives = revalidate + if_error
        self._fallback = f"{scope}, max-age={fallback_max_age}{if_error}"
        self.vary = f"Origin, {API_KEY_HEADER}" if cors else API_KEY_HEADER
        # The Vary of a document the same for every client (the OpenAPI document).
        self.document_vary = "Origin" if cors else None
        self._memo: dict[tuple[bool, int], str] = {}

    def cache_control(self, cache: str, age: int | None, *, fallback: bool, keyed: bool) -> str:
        """Cache-Control of an answer obtained as ``cache`` (X-Cache), ``age`` seconds old."""
        if keyed:
            return PRIVATE_NO_STORE
        if fallback:
            return self._fallback
        key = (cache == _STALE, age or 0)
        value = self._memo.get(key)
        if value is None:
            stale, seconds = key
            lifetime = seconds if stale else seconds + self.max_age
            value = f"{self.scope}, max-age={lifetime}{self._stale_directives}"
            if len(self._memo) < _MEMO_LIMIT:
                self._memo[key] = value
        return value
