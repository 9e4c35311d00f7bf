"""The errors the proxy answers with, and their RFC 9457 ``application/problem+json`` bodies.

Callers raise these by meaning (``InvalidParameters``, ``BackendUnavailable``, …); exactly one
middleware catches :class:`ProblemError` and writes :func:`problem_body` with the error's status
and the headers the error carries (:attr:`ProblemError.headers`: ``Allow`` on a 405,
``Retry-After`` on a 429), so a new error never needs a new branch there.
Anything else that escapes a handler is answered as a bare ``ProblemError()`` (500).

This module is pure: it never touches a request, a socket or a logger, and a problem body never
carries a stack trace, an exception's repr or an engine's error text — only what is set here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, ClassVar

import orjson

PROBLEM_CONTENT_TYPE = "application/problem+json"

# Problem types without semantics beyond their status code are "about:blank" (RFC 9457 §4.2.1),
# and then the title must be the status code's reason phrase.
ABOUT_BLANK = "about:blank"
# Our own problem types are tag URIs (RFC 4151): stable identifiers that nobody expects to
# dereference, so we need no documentation site for them to be valid.
_TYPE_PREFIX = "tag:hos-search,2026:problem:"


class ProxyError(Exception):
    """Base of the proxy's expected process-level failures (a taken port, a synonym file that
    does not parse): its entry point catches this family. HTTP answers are :class:`ProblemError`."""


class ProblemError(Exception):
    """Base of every error that becomes a problem+json response; on its own, a 500."""

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal Server Error"
    type: ClassVar[str] = ABOUT_BLANK
    default_detail: ClassVar[str] = "The server could not answer this request."

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.default_detail
        super().__init__(self.detail)

    @property
    def headers(self) -> dict[str, str]:
        """Response headers this error's answer must carry; none by default."""
        return {}


class InvalidParameters(ProblemError):
    """400: one or more query parameters are invalid; ``params`` lists every (name, reason)."""

    status = 400
    title = "Invalid parameters"
    type = _TYPE_PREFIX + "invalid-parameters"
    default_detail = "One or more query parameters are invalid."

    def __init__(self, params: Iterable[tuple[str, str]], detail: str | None = None) -> None:
        self.params: tuple[tuple[str, str], ...] = tuple(params)
        super().__init__(detail)


class NotFound(ProblemError):
    """404: no such route."""

    status = 404
    title = "Not Found"
    default_detail = "There is nothing at this address."


class MethodNotAllowed(ProblemError):
    """405: the route exists but not for this method; ``allowed`` feeds the ``Allow`` header."""

    status = 405
    title = "Method Not Allowed"
    default_detail = "This method is not allowed here."

    def __init__(self, allowed: Iterable[str] = (), detail: str | None = None) -> None:
        self.allowed: tuple[str, ...] = tuple(allowed)
        super().__init__(detail)

    @property
    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allowed)} if self.allowed else {}


class RateLimited(ProblemError):
    """429: the client's token bucket is empty; ``retry_after`` (whole seconds) feeds ``Retry-After``."""

    status = 429
    title = "Too Many Requests"
    type = _TYPE_PREFIX + "rate-limited"
    default_detail = "Too many requests; slow down."

    def __init__(self, retry_after: float, detail: str | None = None) -> None:
        # Retry-After is whole seconds, rounded up (a client retrying sooner would be refused
        # again), and a client told "0" would retry at once: at least 1.
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(detail or f"Too many requests; retry in {self.retry_after} s.")

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class BackendUnavailable(ProblemError):
    """503: a backend (the engine, or the Postgres fallback) could not answer.

    Raised by the engine's gateway for any engine failure, and by the engine guard
    (``proxy.engine_guard``) when the engine is skipped: its breaker is open, or no slot freed in
    time. The cache then serves a stale answer, or the route asks the fallback; only when
    neither can answer does the client see it. ``Retry-After: 1``.
    """

    status = 503
    title = "Service Unavailable"
    type = _TYPE_PREFIX + "backend-unavailable"
    default_detail = "Search is temporarily unavailable; please retry shortly."

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


# Why the engine guard did not ask the engine (EngineSkipped.reason, a metric label).
BREAKER_OPEN = "breaker_open"
ENGINE_BUSY = "engine_busy"  # every slot stayed busy for the whole queue wait


class EngineSkipped(BackendUnavailable):
    """The engine was not asked: its breaker is open, or every slot stayed busy (``reason``)."""

    def __init__(self, reason: str, waited: float = 0.0) -> None:
        self.reason = reason  # BREAKER_OPEN or ENGINE_BUSY
        self.waited = waited  # seconds spent queueing for a slot first (proxy.queueing)
        super().__init__(f"The search engine was not asked ({reason.replace('_', ' ')}).")


class Overloaded(BackendUnavailable):
    """503 at once: the fallback's concurrency cap is reached (it protects Postgres)."""

    type = _TYPE_PREFIX + "overloaded"
    default_detail = "Search is overloaded; please retry shortly."


def problem_body(error: ProblemError, instance: str | None = None) -> bytes:
    """The RFC 9457 JSON body for ``error``; ``instance`` is e.g. the request id as a URN."""
    body: dict[str, Any] = {
        "type": error.type,
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
    }
    if instance is not None:
        body["instance"] = instance
    if isinstance(error, InvalidParameters):
        body["invalid_params"] = [{"name": name, "reason": reason} for name, reason in error.params]
    return orjson.dumps(body)
