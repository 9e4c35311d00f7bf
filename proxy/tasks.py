"""Stopping the proxy's background tasks (the generation subscriber, the metrics flush)."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` until it ends.

    One cancel is not always enough: a cancellation that lands as a redis-py read times out
    can surface as that timeout, which redis-py answers with "no message" — the cancel is lost
    and the loop goes on (seen as a proxy shutdown that never finished, in the test suite).
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)
    if not task.cancelled():
        task.exception()  # retrieved: a crash of the task is not reported again at exit
