"""The token bucket's arithmetic: one client's bucket, one request at a time.

A bucket holds up to ``capacity`` tokens and refills continuously at ``capacity`` tokens per
``period_ms`` milliseconds; a request costing ``cost`` tokens is allowed when that many are there
and then takes them, and is denied (taking nothing) otherwise. A new client starts full, so a
client may burst ``capacity`` worth of requests and then goes at the refill rate.

**A lease** (``proxy.ratelimit.limiter``) is taken along with a request: ``lease`` more tokens,
for the worker to spend on the client's next requests without asking again. It is granted only
when the request is allowed and the bucket still holds at least half its capacity after both, so
leases never take a bucket below half: a lease lost unspent never costs a client more than the
upper half of its budget. It is decided with the request, atomically, so a client's very first
request can bring one.

Pure code: no clock, no I/O — the caller says what time it is. ``proxy.ratelimit.script`` runs
the same arithmetic as a Lua script inside Redis, step for step: every operation here is on IEEE
doubles in the same order as there (Lua 5.1 numbers are doubles), so both give bit-identical
tokens for the same inputs and the tests can hold them to it. Change one, change the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# How long Redis keeps a bucket's key past the moment it is full again. A full bucket is the
# same as no bucket, so the key could go then; the margin covers the gap between the clock that
# decides (Redis TIME, or the caller's ``now_ms``) and the one that expires keys, so that a key
# never goes while its bucket is still short of full.
KEY_MARGIN_MS = 1000


@dataclass(frozen=True, slots=True)
class Bucket:
    """A client's tokens as of ``updated_ms`` (milliseconds on the deciding clock)."""

    tokens: float
    updated_ms: int


# Not frozen, but never changed once made: one is made per request (a leased one too), and a
# frozen dataclass's __init__ (object.__setattr__ per field) took four times as long.
@dataclass(slots=True)
class Decision:
    """The answer to one request, and the bucket after it.

    ``remaining``: whole tokens left (floor, ≥ 0). ``retry_after_ms``: 0 when allowed; else the
    ms until ``cost`` tokens are there (rounded up), or one ``period_ms`` when the cost exceeds
    the capacity and can never be allowed. ``reset_ms``: ms until the bucket is full again
    (rounded up), 0 when it is full. ``leased``: the lease taken along (0 or the ``lease`` asked).
    """

    allowed: bool
    remaining: int
    retry_after_ms: int
    reset_ms: int
    bucket: Bucket
    leased: float = 0.0


def validate(cost: float, capacity: float, period_ms: int, lease: float = 0.0) -> None:
    """Raise ValueError unless ``capacity`` > 0, ``period_ms`` > 0, ``cost`` ≥ 0 and ``lease`` ≥ 0,
    all finite."""
    if not (math.isfinite(capacity) and capacity > 0):
        raise ValueError(f"capacity must be a finite number > 0, not {capacity!r}")
    if not (isinstance(period_ms, int) and period_ms > 0):
        raise ValueError(f"period_ms must be an integer > 0, not {period_ms!r}")
    if not (math.isfinite(cost) and cost >= 0):
        raise ValueError(f"cost must be a finite number ≥ 0, not {cost!r}")
    if not (math.isfinite(lease) and lease >= 0):
        raise ValueError(f"lease must be a finite number ≥ 0, not {lease!r}")


def take(
    bucket: Bucket | None, now_ms: int, cost: float, capacity: float, period_ms: int, lease: float = 0.0
) -> Decision:
    """Refill ``bucket`` up to ``now_ms`` and try to take ``cost`` tokens from it, and ``lease``
    more when the bucket stays at least half full after both (see the module docstring).

    ``None`` is a client never seen (or whose key expired): a full bucket. A clock that went
    backwards (``now_ms`` before ``bucket.updated_ms``) refills nothing and removes nothing,
    and the bucket keeps its later time.
    """
    validate(cost, capacity, period_ms, lease)
    # Doubles from here on, as in the Lua script: an int times an int would be exact in Python
    # but rounded there.
    cost, capacity, period, lease = float(cost), float(capacity), float(period_ms), float(lease)
    if bucket is None:
        bucket = Bucket(capacity, now_ms)
    elapsed = float(max(0, now_ms - bucket.updated_ms))
    tokens = min(capacity, bucket.tokens + elapsed * capacity / period)
    updated_ms = max(bucket.updated_ms, now_ms)

    allowed = cost <= tokens
    leased = 0.0
    if allowed:
        tokens = tokens - cost  # never below 0: a ≥ b makes a - b ≥ 0 in IEEE arithmetic
        retry_after_ms = 0
        if lease > 0 and tokens - lease >= capacity / 2:
            tokens = tokens - lease
            leased = lease
    elif cost > capacity:
        retry_after_ms = period_ms
    else:
        retry_after_ms = math.ceil((cost - tokens) * period / capacity)
    reset_ms = 0 if tokens >= capacity else math.ceil((capacity - tokens) * period / capacity)
    return Decision(allowed, math.floor(tokens), retry_after_ms, reset_ms, Bucket(tokens, updated_ms), leased)


def key_ttl_ms(decision: Decision, period_ms: int) -> int:
    """How long Redis keeps the bucket's key after ``decision``: until it is full again, plus a margin.

    The bucket is never emptier than empty, so it is full again within one ``period_ms``; the
    bound only keeps a rounding of ``reset_ms`` from lengthening it.
    """
    return min(decision.reset_ms, period_ms) + KEY_MARGIN_MS
