"""Load that runs beside a measurement: product changes at a rate, requests on a fixed schedule;
and reading an indexer's lag around a fault (:func:`lag_recovery`).

Shared by the cluster bench's node loss and ``tests/test_engine_cluster.py``'s node-loss test, so
both put the same load on the same code (issue 21's 500 changes/s and 50 searches/s).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg

LAG_GOAL_S = 5.0  # issue 21: the indexer's lag back under 5 s within 60 s of losing a node


async def write_changes(database_url: str, ids: list[int], per_s: int, stop: asyncio.Event, written: list[int]) -> None:
    """About ``per_s`` changes a second until ``stop``, in 20 ms transactions: price updates, and
    two products a transaction drafted or republished (deletes and re-adds in the index). Each
    transaction's size is appended to ``written``."""
    rng = random.Random(21)
    per_batch = max(3, per_s // 50)
    conn = await asyncpg.connect(database_url)
    try:
        while not stop.is_set():
            started = time.monotonic()
            batch = rng.sample(ids, per_batch)
            async with conn.transaction():
                await conn.execute("UPDATE products SET price = price + 0.01 WHERE id = ANY($1::bigint[])", batch[2:])
                await conn.execute(
                    "UPDATE products SET status = CASE status WHEN 'active' THEN 'draft' ELSE 'active' END"
                    " WHERE id = ANY($1::bigint[])",
                    batch[:2],
                )
            written.append(len(batch))
            await asyncio.sleep(max(0.0, 0.02 - (time.monotonic() - started)))
    finally:
        await conn.close()


async def at_rate(per_s: int, stop: asyncio.Event, start: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``start()`` ``per_s`` times a second on a fixed schedule until ``stop`` (an open model:
    a slow one does not slow the arrivals), then wait for those still running. At most ten
    seconds' worth run at once, should the server stop answering."""
    in_flight: set[asyncio.Task[None]] = set()
    next_at = time.monotonic()
    while not stop.is_set():
        if len(in_flight) < 10 * per_s:
            task = asyncio.ensure_future(start())
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        next_at += 1 / per_s
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    await asyncio.gather(*in_flight)


def lag_recovery(
    samples: list[tuple[float, float]], killed: float, goal: float = LAG_GOAL_S
) -> dict[str, float | None]:
    """From (time, lag) samples around a kill at ``killed``: the highest lag before it, the peak
    after it, and how long after it the lag was last at or over ``goal`` (0.0: never; None: it
    never came back under ``goal`` in the samples)."""
    before = [lag for at, lag in samples if at < killed]
    after = [(at - killed, lag) for at, lag in samples if at >= killed]
    over = [at for at, lag in after if lag >= goal]
    back: float | None
    if not over:
        back = 0.0
    elif after[-1][1] >= goal:
        back = None
    else:
        back = round(max(over), 1)
    return {
        "lag_before_kill_max_s": round(max(before, default=0.0), 2),
        "lag_peak_s": round(max((lag for _, lag in after), default=0.0), 2),
        "lag_back_under_5s_after_s": back,
    }
