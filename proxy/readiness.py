"""Readiness: what ``/readyz`` reports about each dependency, and how long it may take to find out.

Each dependency is probed concurrently by :func:`probe`, which bounds the probe by
:data:`READY_BUDGET_S` and turns any failure — a timeout, a refused connection, an exception
nobody expected — into "this dependency is down" with a short reason. A probe never raises, so
``/readyz`` always answers 200 or 503 within the budget, never a 500 with a traceback in the
log. (It did: the readiness and engine timeouts were both 2 s, and when the readiness one fired
first its ``TimeoutError`` escaped ``asyncio.gather``.)

:func:`readiness` is pure: from the checks to the status and body. This module never logs (a
probe runs every few seconds, and the body says what is down) and never puts an exception's
message in the body — only its class name.

**One check per worker at a time, reused for a while** (:class:`Recent`, ``READYZ_CACHE_MS``,
default 1 s): ``/readyz`` is answered from the last check while it is that recent, and
concurrent requests share the one check in flight. A flood of ``/readyz`` therefore makes at
most one call to each dependency per worker per period, through one connection of each pool,
and never takes the engine guard's slots (``proxy.engine_guard``) from searches (issue 23: each
``/readyz`` called the engine, Redis and Postgres through the shared pools).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, Literal, TypeVar

# Kubernetes' default probe timeout is 1 s: an answer later than that counts as a failure anyway,
# whatever it says. Each probe gets the whole budget; they run concurrently.
READY_BUDGET_S: Final = 0.8

Status = Literal["ready", "degraded", "unavailable"]


@dataclass(frozen=True, slots=True)
class Check:
    """One dependency's state: ``detail`` is "ok" or a short reason, never an error's text."""

    ok: bool
    detail: str


async def probe(check: Awaitable[tuple[bool, str]], budget: float = READY_BUDGET_S) -> Check:
    """Await ``check`` for at most ``budget`` seconds; a timeout or any exception is "down"."""
    timeout = asyncio.timeout(budget)
    try:
        async with timeout:
            ok, detail = await check
    except Exception as exc:  # any failure is "not ready"; CancelledError (a BaseException) still propagates
        if isinstance(exc, TimeoutError) and timeout.expired():
            return Check(False, f"no answer within {budget:g} s")
        return Check(False, type(exc).__name__)
    return Check(ok, detail)


def readiness(checks: Mapping[str, Check], *, fallback: bool, breaker: str) -> tuple[Status, dict[str, Any]]:
    """The overall status and the ``/readyz`` body (the ``Readiness`` schema) for ``checks``.

    ``checks`` has ``elasticsearch``, ``redis`` and ``postgres`` (and ``fallback``, the fallback's
    database, when it is enabled); ``fallback`` says whether the
    Postgres fallback is enabled, ``breaker`` the engine breaker's state (``proxy.engine_guard``).
    Searches are served by the engine when it answers and its breaker is not open, else by the
    fallback when it is enabled and Postgres answers (``degraded``, 200), else by nobody
    (``unavailable``, 503). ``ready`` only when every dependency answers and the breaker is
    closed; anything less that still serves is ``degraded``. The body names the backend.
    """
    engine = checks["elasticsearch"].ok and breaker != "open"
    # The fallback's own check (its database may be a replica, lagging or gone) where there is one.
    postgres_serves = fallback and checks.get("fallback", checks["postgres"]).ok
    backend = "elasticsearch" if engine else "postgres" if postgres_serves else None
    status: Status
    if backend is None:
        status = "unavailable"
    elif backend == "elasticsearch" and breaker == "closed" and all(check.ok for check in checks.values()):
        status = "ready"
    else:
        status = "degraded"
    body = {
        "status": status,
        "backend": backend,
        "engine_breaker": breaker,
        "checks": {name: {"ok": check.ok, "detail": check.detail} for name, check in checks.items()},
    }
    return status, body


T = TypeVar("T")


class Recent(Generic[T]):
    """The result of an async check, reused for ``max_age_s`` and shared while one runs.

    ``checks`` counts the checks actually run. The check must not raise (:func:`probe` never
    does); a cancelled caller never cancels the check others are waiting for.
    """

    def __init__(self, max_age_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_age = max_age_s
        self._clock = clock
        self._last: tuple[float, T] | None = None
        self._running: asyncio.Future[T] | None = None
        self.checks = 0

    async def get(self, check: Callable[[], Awaitable[T]]) -> T:
        last = self._last
        if last is not None and self._clock() - last[0] < self._max_age:
            return last[1]
        if self._running is None:
            self._running = asyncio.ensure_future(self._run(check))
        return await asyncio.shield(self._running)

    async def _run(self, check: Callable[[], Awaitable[T]]) -> T:
        self.checks += 1
        try:
            result = await check()
            self._last = (self._clock(), result)
            return result
        finally:
            self._running = None
