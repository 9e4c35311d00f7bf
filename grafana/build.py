"""Generates the Grafana dashboards in ``grafana/dashboards/`` from the panel lists below.

    python grafana/build.py          # rewrite the JSON files
    python grafana/build.py --check  # exit 1 if the committed JSON differs (used by the tests)

Dashboards are code so that a metric rename shows up as a diff here and the test suite can
check every query against the metrics the services really export — and that every metric
family they export is shown somewhere (``tests/test_dashboards.py``).

Conventions: a ``datasource`` variable (any Prometheus), ``$__rate_interval`` in every rate
(so a panel stays right at any scrape interval and zoom), stable uids (dashboards and panel
ids), and a unit and a description on every panel. SLO panels read the recording rules of
``prometheus/rules/`` (``docs/operations.md`` defines the SLOs).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"


def _panel(
    title: str,
    exprs: list[tuple[str, str]],
    unit: str,
    *,
    description: str,
    kind: str = "timeseries",
) -> dict[str, Any]:
    if not description:
        raise ValueError(f"panel {title!r} needs a description")
    targets = [
        {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend, "datasource": DATASOURCE}
        for i, (expr, legend) in enumerate(exprs)
    ]
    panel: dict[str, Any] = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": targets,
    }
    if kind == "heatmap":
        for target in targets:
            target["format"] = "heatmap"
        panel["options"] = {"calculate": False, "yAxis": {"unit": unit}, "cellGap": 1}
    return panel


def _quantiles(metric: str, by: str, selector: str = "") -> list[tuple[str, str]]:
    """p50, p90 and p99 of a histogram, per ``by`` label (or overall when empty)."""
    group = f"{by}, le" if by else "le"
    legend = f"{{{{{by}}}}} " if by else ""
    return [
        (f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{selector}[{RATE}])))", f"{legend}p{name}")
        for q, name in (("0.5", "50"), ("0.9", "90"), ("0.99", "99"))
    ]


def _dashboard(uid: str, title: str, description: str, panels: list[dict[str, Any]]) -> dict[str, Any]:
    laid_out = []
    for i, panel in enumerate(panels):
        laid_out.append({**panel, "id": i + 1, "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8}})
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["hos-search"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": laid_out,
    }


_REQ = "search_proxy_requests_total"
# SLO objectives (prometheus/rules/slo.yml, docs/operations.md): the error budget is 1 − objective.
_BUDGET = {"availability": 0.001, "latency": 0.01, "freshness": 0.01}


def _slo_panels(slos: tuple[str, ...]) -> list[dict[str, Any]]:
    burn = [
        (f"slo:search_{slo}:error_ratio_rate{window} / {_BUDGET[slo]}", f"{slo} {window}")
        for slo in slos
        for window in ("5m", "1h", "6h")
    ]
    left = [(f"1 - avg_over_time(slo:search_{slo}:error_ratio_rate1h[30d]) / {_BUDGET[slo]}", slo) for slo in slos]
    return [
        _panel(
            "SLO burn rate: " + ", ".join(slos),
            burn,
            "short",
            description="How fast the error budget burns (1 = exactly on budget over 30 days). Pages at 14.4x "
            "over 1 h and 5 m, tickets at 6x over 6 h and 30 m (docs/operations.md).",
        ),
        _panel(
            "SLO error budget left (30 days): " + ", ".join(slos),
            left,
            "percentunit",
            description="The share of the 30-day error budget not yet spent; below 0 the SLO is missed.",
        ),
    ]


_SEARCHES = 'route=~"/api/search|/api/search/suggestions"'

PROXY = _dashboard(
    "hos-search-proxy",
    "Search proxy",
    "What the storefront experiences: traffic, errors, latency, the cache, rate limiting, and "
    "the engine (or its Postgres fallback) behind it.",
    [
        *_slo_panels(("availability", "latency")),
        _panel(
            "Requests per second by route and status",
            [(f"sum by (route, status) (rate({_REQ}[{RATE}]))", "{{route}} {{status}}")],
            "reqps",
            description="Rate: every answered request, by route template and status class, summed over workers.",
        ),
        _panel(
            "Error ratio (5xx) by route",
            [
                (
                    f'sum by (route) (rate({_REQ}{{status="5xx"}}[{RATE}])) / sum by (route) (rate({_REQ}[{RATE}]))',
                    "{{route}}",
                )
            ],
            "percentunit",
            description="Errors: the share of requests answered 5xx (503: neither engine nor fallback answered).",
        ),
        _panel(
            "Latency p50 / p90 / p99 by route",
            _quantiles("search_proxy_request_duration_seconds", "route"),
            "s",
            description="Duration: the proxy's own time per request, from the request histogram.",
        ),
        _panel(
            "Search latency heatmap",
            [
                (
                    "sum by (le) (increase(search_proxy_request_duration_seconds_bucket"
                    f'{{route="/api/search"}}[{RATE}]))',
                    "{{le}}",
                )
            ],
            "s",
            kind="heatmap",
            description="Where /api/search requests fall among the histogram's buckets over time.",
        ),
        _panel(
            "Requests in flight",
            [("sum(search_proxy_requests_in_flight)", "in flight")],
            "short",
            description="Requests being handled right now, summed over the live workers.",
        ),
        _panel(
            "Zero-result searches by outcome",
            [("sum by (outcome) (rate(search_proxy_zero_result_searches_total[" + RATE + "]))", "{{outcome}}")],
            "ops",
            description="Text searches whose strict query matched nothing, by what was shown instead.",
        ),
        _panel(
            "Answers by backend: engine vs Postgres fallback",
            [
                (
                    "sum by (route, backend) (rate(search_proxy_search_responses_total[" + RATE + "]))",
                    "{{route}} {{backend}}",
                )
            ],
            "reqps",
            description="Search and suggestion answers by what produced them (cache hits count as the engine's).",
        ),
        _panel(
            "Engine breaker, shedding and the Postgres fallback",
            [
                ("max(search_proxy_engine_breaker_state)", "breaker (0 closed, 1 half-open, 2 open)"),
                (f"sum by (reason) (rate(search_proxy_engine_skipped_total[{RATE}]))", "engine skipped: {{reason}}"),
                (f"sum(rate(search_proxy_fallback_rejected_total[{RATE}]))", "fallback refused/s (503)"),
            ],
            "short",
            description=(
                "The engine guard skips the engine while its breaker is open (breaker_open) or when no "
                "engine slot frees within ENGINE_QUEUE_MS (engine_busy: shed); those requests are served "
                "stale from the cache, by the Postgres fallback, or refused with a quick 503."
            ),
        ),
        _panel(
            "Upstream latency p99: engine and Postgres by operation, Redis (limiter)",
            [
                (
                    "histogram_quantile(0.99, sum by (backend, operation, le) "
                    f"(rate(search_proxy_backend_duration_seconds_bucket[{RATE}])))",
                    "{{backend}} {{operation}}",
                ),
                (
                    "histogram_quantile(0.99, sum by (le) "
                    f"(rate(search_proxy_ratelimit_duration_seconds_bucket[{RATE}])))",
                    "redis (rate-limit round trip)",
                ),
            ],
            "s",
            description="How long the proxy waits on each dependency, at the 99th percentile.",
        ),
        _panel(
            "Upstream errors per second",
            [
                (
                    f"sum by (backend, operation) (rate(search_proxy_backend_errors_total[{RATE}]))",
                    "{{backend}} {{operation}}",
                ),
                (
                    f"sum by (operation) (rate(search_proxy_cache_redis_errors_total[{RATE}]))",
                    "redis cache {{operation}}",
                ),
                (f"sum(rate(search_proxy_ratelimit_redis_errors_total[{RATE}]))", "redis rate limiter"),
            ],
            "ops",
            description="Failed or timed-out calls to the engine, the Postgres fallback and Redis.",
        ),
        _panel(
            "Cache: answers by X-Cache",
            [(f"sum by (route, cache) (rate(search_proxy_cache_responses_total[{RATE}]))", "{{route}} {{cache}}")],
            "reqps",
            description="HIT and STALE come from the cache; MISS from the engine; BYPASS skipped Redis or the cache.",
        ),
        _panel(
            "Cache: hit ratio by tier",
            [
                (
                    f'sum by (tier) (rate(search_proxy_cache_lookups_total{{result="hit"}}[{RATE}]))'
                    f" / sum by (tier) (rate(search_proxy_cache_lookups_total[{RATE}]))",
                    "{{tier}}",
                ),
                (
                    f'sum(rate(search_proxy_cache_responses_total{{cache="stale"}}[{RATE}]))'
                    f" / sum(rate(search_proxy_cache_responses_total[{RATE}]))",
                    "stale share of answers",
                ),
            ],
            "percentunit",
            description="L1 is per worker, L2 is Redis; stale answers are served while one refresh runs.",
        ),
        _panel(
            "Cache: coalesced fills and background refreshes",
            [
                (f"sum by (scope) (rate(search_proxy_cache_coalesced_total[{RATE}]))", "coalesced {{scope}}"),
                (f"sum by (outcome) (rate(search_proxy_cache_refreshes_total[{RATE}]))", "refresh {{outcome}}"),
            ],
            "ops",
            description="Requests that joined another's fill (worker, cluster), and refreshes of stale entries.",
        ),
        _panel(
            "Cache: misses by reason",
            [(f"sum by (reason) (rate(search_proxy_cache_misses_total[{RATE}]))", "{{reason}}")],
            "ops",
            description="Why the engine was asked: absent (first request), expired (past CACHE_TTL_S), changed "
            "(a product shown changed over CACHE_MAX_STALE_MS ago), blind (announcements lost).",
        ),
        _panel(
            "Cache: L1 size",
            [("sum(search_proxy_cache_l1_bytes)", "bytes")],
            "bytes",
            description="Summed over the live workers; each is capped by CACHE_L1_MAX_MB.",
        ),
        _panel(
            "Cache: L1 entries",
            [("sum(search_proxy_cache_l1_entries)", "entries")],
            "short",
            description="Summed over the live workers; each is capped by CACHE_L1_MAX_ENTRIES.",
        ),
        _panel(
            "Cache: following the catalog generation",
            [
                ("min(search_proxy_cache_following)", "following (1 = every worker)"),
                ("max(search_proxy_cache_generation)", "generation"),
            ],
            "short",
            description="0: a worker lost the announcements and serves nothing older than CACHE_MAX_STALE_MS.",
        ),
        _panel(
            "Rate limiting: decisions by route",
            [
                (
                    f"sum by (route, decision) (rate(search_proxy_ratelimit_decisions_total[{RATE}]))",
                    "{{route}} {{decision}}",
                )
            ],
            "reqps",
            description="Allowed and limited (429) decisions per second.",
        ),
        _panel(
            "Rate limiting: refused share and fallback",
            [
                (
                    f'sum(rate(search_proxy_ratelimit_decisions_total{{decision="limited"}}[{RATE}]))'
                    f" / sum(rate(search_proxy_ratelimit_decisions_total[{RATE}]))",
                    "refused share",
                ),
                ("max(search_proxy_ratelimit_fallback_active)", "fallback active"),
            ],
            "percentunit",
            description=(
                "Fallback active (1): a worker's limiter answers from RATE_LIMIT_FALLBACK because Redis fails. "
                "A Redis round trip carries every decision asked for while the previous one was out."
            ),
        ),
    ],
)

INDEXER = _dashboard(
    "hos-search-indexer",
    "Search indexer",
    "How fresh search is: catalog changes streamed from Postgres into the index.",
    [
        *_slo_panels(("freshness",)),
        _panel(
            "Lag (now − oldest unindexed change)",
            [("max(search_indexer_lag_seconds)", "lag")],
            "s",
            description="How far search is behind the catalog; the freshness SLO wants it under 5 s.",
        ),
        _panel(
            "Seconds since the last successful batch",
            [("time() - max(search_indexer_last_success_timestamp_seconds)", "since last batch")],
            "s",
            description="Grows while the indexer is idle too; read it together with the lag.",
        ),
        _panel(
            "Changes read and documents written per second",
            [
                (f"sum(rate(search_indexer_changes_seen_total[{RATE}]))", "changes read"),
                (f"sum(rate(search_indexer_documents_indexed_total[{RATE}]))", "documents written"),
                (f"sum(rate(search_indexer_documents_deleted_total[{RATE}]))", "documents deleted"),
                (f"sum(rate(search_indexer_version_conflicts_total[{RATE}]))", "skipped: newer data already indexed"),
            ],
            "ops",
            description="Outbox rows read, and what they did to the index.",
        ),
        _panel(
            "Bulk request p50 / p90 / p99",
            _quantiles("search_indexer_bulk_duration_seconds", ""),
            "s",
            description="One bulk request per batch (and per chunk of a reindex).",
        ),
        _panel(
            "Batch size (mean)",
            [
                (
                    f"sum(rate(search_indexer_batch_size_sum[{RATE}]))"
                    f" / sum(rate(search_indexer_batch_size_count[{RATE}]))",
                    "changes per batch",
                )
            ],
            "short",
            description="Outbox changes per batch: bursts become big batches (INDEXER_LINGER_MS, INDEXER_BATCH_SIZE).",
        ),
        _panel(
            "Errors by kind",
            [(f"sum by (kind) (rate(search_indexer_errors_total[{RATE}]))", "{{kind}}")],
            "ops",
            description="Engine and database failures, and documents the engine rejected (bulk_item_rejected).",
        ),
        _panel(
            "Products set aside",
            [("sum by (stage) (increase(search_indexer_dead_lettered_total[1h]))", "{{stage}} / h")],
            "short",
            description="Products not indexed: no document could be built from the row (document) or the engine "
            "refused it for its own fault (engine). Each is in the table search_dead_letters.",
        ),
        _panel(
            "Reconnects by server",
            [("sum by (server) (increase(search_indexer_reconnects_total[15m]))", "{{server}}")],
            "short",
            description="Reconnections to Postgres (the LISTEN connection) and the engine, per 15 minutes.",
        ),
        _panel(
            "Checkpoint and outbox pruning",
            [
                ("max(search_indexer_checkpoint_seq)", "checkpoint seq"),
                ("sum(increase(search_indexer_outbox_pruned_total[1h]))", "rows pruned / h"),
                ("sum(increase(search_indexer_checkpoints_expired_total[1h]))", "abandoned checkpoints forgotten / h"),
            ],
            "short",
            description="The checkpoint only moves forward; pruned rows are behind every checkpoint. The "
            "checkpoint of an indexer name not seen for INDEXER_CHECKPOINT_EXPIRY_S is forgotten.",
        ),
        _panel(
            "Active indexer and hot standby",
            [
                ("sum(search_indexer_active)", "active indexers (should be 1)"),
                ("count(search_indexer_standby_since_timestamp_seconds > 0)", "standing by"),
                ("sum(increase(search_indexer_lock_acquisitions_total[15m]))", "takeovers / 15 min"),
            ],
            "short",
            description="One indexer holds the Postgres advisory lock and streams; the others wait and take over "
            "within INDEXER_LEASE_S. More than one takeover in a while means the role is flapping.",
        ),
        _panel(
            "Reindexes and generation announcements",
            [
                (f"sum(rate(search_indexer_reindex_documents_total[{RATE}]))", "reindex documents/s"),
                ("max(search_indexer_reindex_duration_seconds)", "last reindex duration (s)"),
                (f"sum(rate(search_indexer_generation_bumps_total[{RATE}]))", "generation bumps/s"),
            ],
            "short",
            description="Full reindexes (zero-downtime rebuilds), and the catalog generation proxies' caches follow.",
        ),
    ],
)

DASHBOARDS = {"search-proxy.json": PROXY, "search-indexer.json": INDEXER}


def render(dashboard: dict[str, Any]) -> str:
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, dashboard in DASHBOARDS.items():
        path = OUT / name
        text = render(dashboard)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            OUT.mkdir(exist_ok=True)
            path.write_text(text)
    if stale:
        print(f"stale dashboards (run python grafana/build.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
