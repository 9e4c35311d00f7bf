"""The Go hit server (``benchmarks.ratelimit --go``, issue 24): a cache hit served by Go, with or
without the proxy's rate limiter done in Go.

``benchmarks/kit/goforwarder/hits.go``, the ``hits`` mode of the Go forwarder's binary
(:func:`~benchmarks.kit.forwarder.build_go_forwarder`): every GET of one target answered with the
proxy's own answer to it as fixed bytes (:func:`proxy_answer`), and with the limiter on, per
request, what ``proxy.ratelimit`` does — the client from a trusted peer's ``X-Forwarded-For``,
remembered; a live lease spent locally, else a decision in Redis with the same Lua script, keys
and arguments, batched, asking for a lease; the five rate-limit headers. :func:`write_hit_plan`
hands it every term from the proxy's settings and modules, so nothing of the limiter's format is
typed in Go; its docstring lists where the Go limiter differs. So the bench measures what a limiter
that is not Python costs instead of naming it.

Never imports a bench; listens on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import os
import subprocess
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import orjson

from benchmarks.kit.forwarder import started_go
from benchmarks.kit.processes import free_port
from proxy.ratelimit.batch import MAX_BATCH
from proxy.ratelimit.costs import cost_of
from proxy.ratelimit.identity import MAX_ENTRY_CHARS, MAX_FORWARDED_HOPS, UNKNOWN_CLIENT_ID
from proxy.ratelimit.limiter import LEASE_MIN_CAPACITY, LEASE_SECONDS, LEASE_SHARE, MAX_REMEMBERED_FORWARDED_CHARS
from proxy.ratelimit.script import LUA, group_heads
from proxy.settings import ProxySettings

# Headers of the proxy's answer the hit server does not replay: net/http writes its own Date and
# length, and the limiter's are the server's to make.
_NOT_REPLAYED = {"date", "server", "content-length", "transfer-encoding", "connection", "keep-alive"}


def proxy_answer(url: str) -> tuple[bytes, list[tuple[str, str]]]:
    """The proxy's answer to ``url`` (a GET): its body and the headers a hit server replays
    (:func:`write_hit_plan`) — Content-Type, the caching headers, the request id and Age as they
    were (the proxy makes the last two per answer), no rate-limit headers."""
    with urllib.request.urlopen(url, timeout=10) as response:
        body = response.read()
        headers = [
            (name, value)
            for name, value in response.getheaders()
            if name.lower() not in _NOT_REPLAYED and "ratelimit" not in name.lower()
        ]
    return body, headers


def write_hit_plan(
    file: Path,
    target: str,
    body: bytes,
    headers: Sequence[tuple[str, str]],
    settings: ProxySettings,
    *,
    prefix: str | None = None,
    route: str = "search",
) -> None:
    """What the Go hit server (``goforwarder hits``, ``benchmarks/kit/goforwarder/hits.go``)
    answers ``target`` with, and, when ``settings`` enable rate limiting, its limiter's terms: all
    from the proxy's settings and ``proxy.ratelimit`` (the script, the keys' heads under
    ``prefix`` — the settings' own by default —, the default limit and ``route``'s price for a
    first page, the lease's constants, the batch's bound, ``REDIS_TIMEOUT_MS``, the trusted
    proxies, the identity's bounds).

    Where the Go limiter differs from ``proxy.ratelimit.limiter``: no API keys (every client has
    the default limit); no fallback or breaker (a failed decision answers 429 with Retry-After 1,
    as the ``closed`` fallback would); identities and leases in plain maps, not bounded by bytes;
    no metrics; the one target, at one price; no RFC 7239 ``Forwarded``. One Redis, no cluster."""
    limiter = None
    if settings.rate_limit_enabled:
        limiter = {
            "script": LUA,
            "group_heads": [
                head.decode()
                for head in group_heads(
                    settings.redis_key_prefix if prefix is None else prefix, settings.rate_limit_key_groups
                )
            ],
            "policy": "default",
            "cost": cost_of(settings.rate_limit_costs, route),
            "capacity": settings.rate_limit_max,
            "period_ms": settings.rate_limit_ttl_ms,
            "lease_seconds": LEASE_SECONDS,
            "lease_share": LEASE_SHARE,
            "lease_min_capacity": LEASE_MIN_CAPACITY,
            "max_batch": MAX_BATCH,
            "timeout_ms": settings.redis_timeout_ms,
            "trusted": [str(network) for network in settings.trusted_proxies],
            "ipv6_prefix": settings.rate_limit_ipv6_prefix,
            "max_forwarded_hops": MAX_FORWARDED_HOPS,
            "max_entry_chars": MAX_ENTRY_CHARS,
            "max_remembered_forwarded_chars": MAX_REMEMBERED_FORWARDED_CHARS,
            "unknown_client_id": UNKNOWN_CLIENT_ID,
        }
    plan = {"target": target, "body": base64.b64encode(body).decode(), "headers": headers, "limiter": limiter}
    file.write_bytes(orjson.dumps(plan))


def start_go_hits(
    binary: Path, plan: Path, ready_target: str, *, redis_url: str | None = None, cpu: int | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """The Go hit server (``binary``, built by :func:`~benchmarks.kit.forwarder.build_go_forwarder`)
    serving ``plan`` (:func:`write_hit_plan`) on ``cpu``, with ``GOMAXPROCS=1`` (one core, as a
    1-worker proxy has), and its base URL once ``ready_target`` answers; ``redis_url``: its
    limiter's Redis."""
    port = free_port()
    command = [str(binary), "hits", "--port", str(port)] + ([] if redis_url is None else ["--redis", redis_url])
    return started_go([*command, str(plan)], port, ready_target, {**os.environ, "GOMAXPROCS": "1"}, cpu)
