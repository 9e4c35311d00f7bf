"""The engine guard (``proxy.engine_guard``) on plain coroutines standing in for engine requests.

The real engine, hanging and cut off, is in ``tests/test_degradation.py``; here the guard's own
rules: slots, the brief wait for one, and what the breaker hears.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy.breaker import Breaker
from proxy.engine_guard import EngineGuard
from proxy.errors import BackendUnavailable, EngineSkipped


class Recorder:
    def __init__(self) -> None:
        self.skips: list[str] = []
        self.states: list[str] = []


def _guard(slots: int = 2, queue_wait: float = 0.05, **breaker: Any) -> tuple[EngineGuard, Recorder]:
    seen = Recorder()
    guard = EngineGuard(
        Breaker(**{"failures": 2, "cooldown": 0.2, "probes": 1, **breaker}),
        slots=slots,
        queue_wait=queue_wait,
        on_skip=seen.skips.append,
        on_state=seen.states.append,
    )
    return guard, seen


async def test_beyond_its_slots_a_request_waits_briefly_then_is_shed() -> None:
    guard, seen = _guard(slots=2, queue_wait=0.05)
    release = asyncio.Event()

    async def slow() -> str:
        await release.wait()
        return "answer"

    holders = [asyncio.ensure_future(guard.call(slow)) for _ in range(2)]
    await asyncio.sleep(0)
    assert guard.in_flight == 2
    with pytest.raises(EngineSkipped) as shed:
        await guard.call(slow)
    assert shed.value.reason == "engine_busy" and seen.skips == ["engine_busy"]
    assert shed.value.waited == 0.05  # its queue budget, spent: the fallback waits only for the rest
    # Shed while both slots are still held: it waited out its brief wait, not the engine (a
    # wall-clock window here failed on a busy machine; the order is what matters).
    assert not any(holder.done() for holder in holders) and guard.in_flight == 2
    release.set()
    assert await asyncio.gather(*holders) == ["answer", "answer"]
    assert guard.in_flight == 0 and guard.breaker.state == "closed"  # shedding is not a failure


async def test_a_request_that_would_wait_past_its_budget_is_shed_at_once() -> None:
    now = [0.0]
    guard = EngineGuard(Breaker(failures=2, cooldown=0.2, probes=1), slots=2, queue_wait=10.0, clock=lambda: now[0])

    async def measured() -> None:  # one engine request that held its slot 16 s
        now[0] += 16.0

    await guard.call(measured)
    release = asyncio.Event()

    async def slow() -> str:
        await release.wait()
        return "answer"

    holders = [asyncio.ensure_future(guard.call(slow)) for _ in range(2)]
    await asyncio.sleep(0)
    # With both slots busy, the first in line expects a slot in 16 / 2 = 8 s, within its 10 s:
    # it waits. The second would wait 16 s: shed before it waits at all.
    patient = asyncio.ensure_future(guard.call(slow))
    await asyncio.sleep(0)
    with pytest.raises(EngineSkipped) as shed:
        await guard.call(slow)
    assert shed.value.reason == "engine_busy" and shed.value.waited == 0.0  # all its budget left
    assert guard.waiting == 1 and not patient.done()
    release.set()
    assert await asyncio.gather(*holders, patient) == ["answer"] * 3
    assert guard.waiting == 0 and guard.breaker.state == "closed"


async def test_a_slot_freed_within_the_wait_is_taken() -> None:
    guard, seen = _guard(slots=1, queue_wait=1.0)

    async def quick() -> int:
        await asyncio.sleep(0.02)
        return 1

    assert sum(await asyncio.gather(*(guard.call(quick) for _ in range(5)))) == 5
    assert seen.skips == []


async def test_failures_open_the_breaker_then_one_probe_closes_it() -> None:
    now = [1000.0]  # the breaker's injectable clock: the cooldown passes when the test says so
    guard, seen = _guard(failures=2, cooldown=0.1, probes=1, clock=lambda: now[0])

    async def fails() -> None:
        raise BackendUnavailable("down")

    for _ in range(2):
        with pytest.raises(BackendUnavailable):
            await guard.call(fails)
    assert guard.breaker.state == "open" and seen.states == ["open"]
    calls = 0

    async def counted() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return "back"

    with pytest.raises(EngineSkipped) as skipped:
        await guard.call(counted)
    assert skipped.value.reason == "breaker_open" and calls == 0  # not asked at all
    now[0] += 0.1
    # Half-open: one probe goes; the others skip the engine until it reports.
    results = await asyncio.gather(*(guard.call(counted) for _ in range(3)), return_exceptions=True)
    assert results.count("back") == 1 and calls == 1
    assert all(isinstance(r, EngineSkipped) for r in results if r != "back")
    assert guard.breaker.state == "closed" and seen.states[-1] == "closed"


async def test_a_cancelled_request_is_not_an_engine_failure() -> None:
    guard, _ = _guard(failures=1)

    async def forever() -> None:
        await asyncio.sleep(10)

    task = asyncio.ensure_future(guard.call(forever))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert guard.breaker.state == "closed" and guard.in_flight == 0
