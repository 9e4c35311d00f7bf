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
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

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
    Postgres fallback is enabled, ``breaker`` the engine breaker's state (``proxy.shedding``).
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
