"""Reading a proxy's and the engine's counters during a bench: ``/metrics`` samples and their deltas.

A bench checks what it measured against what the server counted (cache hits, engine calls);
these are the readers. Read-only: never changes a server.
"""

from __future__ import annotations

import urllib.request

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

Samples = list[tuple[str, dict[str, str], float]]

ENGINE_CALLS = "search_proxy_backend_duration_seconds_count"
LOOKUPS = "search_proxy_cache_lookups_total"


def parse_metrics(text: str) -> Samples:
    """Every sample of a Prometheus text page: ``(name, labels, value)``."""
    return [(s.name, dict(s.labels), s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def scrape_sync(base: str) -> Samples:
    with urllib.request.urlopen(base + "/metrics", timeout=5) as response:
        return parse_metrics(response.read().decode())


async def scrape(session: aiohttp.ClientSession, base: str) -> Samples:
    async with session.get(base + "/metrics") as response:
        return parse_metrics(await response.text())


def metric(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items()))


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return metric(after, name, **labels) - metric(before, name, **labels)


def deltas_by(before: Samples, after: Samples, name: str, label: str, **fixed: str) -> str:
    """The non-zero deltas of ``name`` per value of ``label`` ("hit 3 miss 1"), or "none"."""
    values = sorted({lab.get(label, "") for n, lab, _ in after if n == name})
    deltas = [(value, delta(before, after, name, **fixed, **{label: value})) for value in values]
    return " ".join(f"{value} {d:,.0f}" for value, d in deltas if d) or "none"


async def engine_queries(session: aiohttp.ClientSession, engine_url: str, alias: str) -> int:
    """The engine's own count of search queries on the index behind ``alias``."""
    async with session.get(f"{engine_url}/{alias}/_stats/search") as response:
        body = await response.json()
    return int(body["_all"]["primaries"]["search"]["query_total"])
