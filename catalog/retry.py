"""The one retry policy of the project: capped exponential backoff with jitter.

Every retry loop — Postgres and the engine at start-up, bulk writes, the indexer's reconnects,
the proxy's generation subscription — asks a :class:`Backoff` how long to wait before the next
try, so the shape of retrying is decided here once. The jitter (a delay between half and all of
the nominal one) keeps processes that failed together from retrying in lockstep. Each loop
still owns its budget (how many tries, or forever) and what it logs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """``first`` seconds before retry 1, doubling per retry up to ``cap``, jittered."""

    first: float
    cap: float

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        return random.uniform(0.5, 1.0) * min(self.cap, self.first * 2 ** (max(attempt, 1) - 1))


# The policies in use, by situation.
AT_START = Backoff(first=0.2, cap=5.0)  # a server not up yet when a process starts
RECONNECT = Backoff(first=0.1, cap=5.0)  # a long-running process that lost a server
WRITE = Backoff(first=0.1, cap=5.0)  # a bulk write the engine refused for now (5xx, 429)
SUBSCRIBE = Backoff(first=0.1, cap=2.0)  # the proxy's pub/sub subscription: a short cap, it is blind meanwhile
