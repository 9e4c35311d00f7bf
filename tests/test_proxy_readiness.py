"""Readiness without servers: a probe is bounded and never raises; the status follows the checks."""

from __future__ import annotations

import asyncio
import time

import pytest

from proxy.readiness import Check, Recent, probe, readiness


async def _answers(ok: bool, detail: str) -> tuple[bool, str]:
    return ok, detail


async def _raises(error: BaseException) -> tuple[bool, str]:
    raise error


async def _hangs() -> tuple[bool, str]:
    await asyncio.sleep(3600)
    raise AssertionError("unreachable")


async def test_a_probe_passes_on_what_the_check_says() -> None:
    assert await probe(_answers(True, "ok")) == Check(True, "ok")
    assert await probe(_answers(False, "alias products does not exist")) == Check(
        False, "alias products does not exist"
    )


@pytest.mark.parametrize("error", [TimeoutError(), ConnectionRefusedError("secret detail"), RuntimeError("boom")])
async def test_a_probe_that_fails_any_way_is_down_by_its_class_name_only(error: Exception) -> None:
    assert await probe(_raises(error)) == Check(False, type(error).__name__)


async def test_a_probe_that_hangs_is_down_within_its_budget() -> None:
    started = time.monotonic()
    check = await probe(_hangs(), budget=0.05)
    assert check == Check(False, "no answer within 0.05 s")
    assert time.monotonic() - started < 2


async def test_cancelling_a_probe_is_not_swallowed() -> None:
    task = asyncio.ensure_future(probe(_hangs()))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize(
    ("engine", "redis", "postgres", "fallback", "breaker", "status", "backend"),
    [
        (True, True, True, True, "closed", "ready", "elasticsearch"),
        (True, False, True, True, "closed", "degraded", "elasticsearch"),
        (True, True, False, True, "closed", "degraded", "elasticsearch"),
        (True, True, True, True, "half_open", "degraded", "elasticsearch"),
        (True, True, True, True, "open", "degraded", "postgres"),  # answers probes, fails searches
        (False, True, True, True, "closed", "degraded", "postgres"),
        (False, False, True, True, "open", "degraded", "postgres"),
        (False, True, True, False, "closed", "unavailable", None),  # no fallback configured
        (False, True, False, True, "open", "unavailable", None),
        (True, True, False, True, "open", "unavailable", None),
        (False, False, False, True, "closed", "unavailable", None),
    ],
)
def test_the_proxy_is_unavailable_only_when_neither_backend_can_answer(
    engine: bool, redis: bool, postgres: bool, fallback: bool, breaker: str, status: str, backend: str | None
) -> None:
    checks = {"elasticsearch": Check(engine, "e"), "redis": Check(redis, "r"), "postgres": Check(postgres, "p")}
    got, body = readiness(checks, fallback=fallback, breaker=breaker)
    assert got == status == body["status"]
    assert body["backend"] == backend and body["engine_breaker"] == breaker
    assert body["checks"]["elasticsearch"] == {"ok": engine, "detail": "e"}
    assert set(body["checks"]) == {"elasticsearch", "redis", "postgres"}


async def test_a_recent_check_is_reused_and_concurrent_callers_share_one() -> None:
    now = [100.0]
    recent: Recent[int] = Recent(1.0, clock=lambda: now[0])
    release = asyncio.Event()

    async def check() -> int:
        await release.wait()
        return recent.checks

    waiting = [asyncio.ensure_future(recent.get(check)) for _ in range(50)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiting) == [1] * 50 and recent.checks == 1
    now[0] += 0.99
    assert await recent.get(check) == 1 and recent.checks == 1  # still recent
    now[0] += 0.02
    assert await recent.get(check) == 2 and recent.checks == 2  # a second later: checked again


async def test_a_caller_cancelled_does_not_cancel_the_check_others_wait_for() -> None:
    recent: Recent[str] = Recent(1.0)
    release = asyncio.Event()

    async def check() -> str:
        await release.wait()
        return "ok"

    first = asyncio.ensure_future(recent.get(check))
    second = asyncio.ensure_future(recent.get(check))
    await asyncio.sleep(0)
    first.cancel()
    release.set()
    assert await second == "ok" and recent.checks == 1
