"""The rate-limit response headers, from a bucket decision. Pure.

Two families, both on every response of a limited route:

- the IETF httpapi draft (``draft-ietf-httpapi-ratelimit-headers``, revisions 08 to 10), as
  Structured Fields: ``RateLimit-Policy: "default";q=100;w=60`` — the policy: ``q`` tokens per
  window of ``w`` seconds — and ``RateLimit: "default";r=57;t=12`` — ``r`` tokens remaining,
  ``t`` seconds until the bucket is full again. The policy name is ``default`` for the
  configured limit and ``key`` for a client with an API key of its own;
- the de-facto ``X-RateLimit-Limit`` / ``X-RateLimit-Remaining`` / ``X-RateLimit-Reset``, the
  same numbers (``Reset`` in seconds from now, as ``t``, not an epoch time).

A token bucket has no fixed window: ``w`` is the refill period (``RATE_LIMIT_TTL``), the time an
empty bucket takes to fill. Seconds are whole and rounded up, so a client that waits as long as
it is told is never refused for having come a few milliseconds early. A rejection adds
``Retry-After`` (``proxy.errors.RateLimited`` carries it).
"""

from __future__ import annotations

import math

from proxy.ratelimit.bucket import Decision


def _seconds(ms: int) -> int:
    return max(0, math.ceil(ms / 1000))


def rate_limit_headers(policy: str, capacity: int, period_ms: int, decision: Decision) -> dict[str, str]:
    """The headers of a response under ``policy`` (``capacity`` tokens per ``period_ms``)."""
    window = max(1, _seconds(period_ms))
    reset = _seconds(decision.reset_ms)
    return {
        "RateLimit-Policy": f'"{policy}";q={capacity};w={window}',
        "RateLimit": f'"{policy}";r={decision.remaining};t={reset}',
        "X-RateLimit-Limit": str(capacity),
        "X-RateLimit-Remaining": str(decision.remaining),
        "X-RateLimit-Reset": str(reset),
    }
