"""Generates the Grafana dashboards in ``grafana/dashboards/`` from the panel lists below.

    python grafana/build.py          # rewrite the JSON files
    python grafana/build.py --check  # exit 1 if the committed JSON differs (used by the tests)

Dashboards are code so that a metric rename shows up as a diff here and the test suite can
check every query against the metrics the services really export.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}


def _panel(
    title: str, exprs: list[tuple[str, str]], unit: str, *, kind: str = "timeseries", description: str = ""
) -> dict[str, Any]:
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend, "datasource": DATASOURCE}
            for i, (expr, legend) in enumerate(exprs)
        ],
    }


def _dashboard(uid: str, title: str, description: str, panels: list[dict[str, Any]]) -> dict[str, Any]:
    laid_out = []
    for i, panel in enumerate(panels):
        width = 6 if panel["type"] == "stat" else 12
        laid_out.append({**panel, "id": i + 1, "gridPos": {"h": 8, "w": width, "x": (i % 2) * 12, "y": (i // 2) * 8}})
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
        "templating": {"list": []},
        "annotations": {"list": []},
        "panels": laid_out,
    }


PROXY = _dashboard(
    "hos-search-proxy",
    "Search proxy",
    "What the storefront experiences: traffic, errors, latency, and the engine behind it.",
    [
        _panel(
            "Requests per second by route and status",
            [("route_status:search_proxy_requests:rate5m", "{{route}} {{status}}")],
            "reqps",
        ),
        _panel(
            "5xx ratio",
            [("job:search_proxy_requests_5xx:ratio_rate5m", "5xx")],
            "percentunit",
            description="Alert SearchProxyErrorRateHigh fires above 5% for 5 minutes.",
        ),
        _panel(
            "Search latency p50 / p99",
            [
                ('route:search_proxy_request_duration_seconds:p50_5m{route="/api/search"}', "p50"),
                ('route:search_proxy_request_duration_seconds:p99_5m{route="/api/search"}', "p99"),
            ],
            "s",
        ),
        _panel(
            "Suggestion latency p50 / p99",
            [
                ('route:search_proxy_request_duration_seconds:p50_5m{route="/api/search/suggestions"}', "p50"),
                ('route:search_proxy_request_duration_seconds:p99_5m{route="/api/search/suggestions"}', "p99"),
            ],
            "s",
        ),
        _panel(
            "Engine latency p99 by operation",
            [
                (
                    "histogram_quantile(0.99, sum by (operation, le) "
                    '(rate(search_proxy_backend_duration_seconds_bucket{backend="elasticsearch"}[5m])))',
                    "{{operation}}",
                )
            ],
            "s",
            description="Proxy latency minus this is the proxy's own overhead.",
        ),
        _panel(
            "Backend errors per second",
            [
                (
                    "sum by (backend, operation) (rate(search_proxy_backend_errors_total[5m]))",
                    "{{backend}} {{operation}}",
                )
            ],
            "ops",
        ),
        _panel(
            "Responses by backend",
            [("sum by (backend) (rate(search_proxy_search_responses_total[5m]))", "{{backend}}")],
            "reqps",
        ),
        _panel("Requests in flight", [("sum(search_proxy_requests_in_flight)", "in flight")], "short"),
        _panel(
            "Engine breaker, shedding and the Postgres fallback",
            [
                ("max(search_proxy_engine_breaker_state)", "breaker (0 closed, 1 half-open, 2 open)"),
                ("sum by (reason) (rate(search_proxy_engine_skipped_total[5m]))", "engine skipped: {{reason}}"),
                ('sum(rate(search_proxy_search_responses_total{backend="postgres"}[5m]))', "fallback answers/s"),
                ("sum(rate(search_proxy_fallback_rejected_total[5m]))", "fallback refused/s (503)"),
            ],
            "short",
            description=(
                "The engine guard skips the engine while its breaker is open (breaker_open) or when no "
                "engine slot frees within ENGINE_QUEUE_MS (engine_busy: shed); those requests are served "
                "stale from the cache, by the Postgres fallback, or refused with a quick 503."
            ),
        ),
        _panel(
            "Rate limiting: refused share, Redis round trips",
            [
                (
                    'sum(rate(search_proxy_ratelimit_decisions_total{decision="limited"}[5m]))'
                    " / sum(rate(search_proxy_ratelimit_decisions_total[5m]))",
                    "refused share",
                ),
                ("max(search_proxy_ratelimit_fallback_active)", "fallback active"),
                (
                    "histogram_quantile(0.99, sum by (le) (rate(search_proxy_ratelimit_duration_seconds_bucket[5m])))",
                    "round trip p99 (s)",
                ),
                ("sum(rate(search_proxy_ratelimit_redis_errors_total[5m]))", "failed round trips/s"),
            ],
            "short",
            description=(
                "Fallback active: a worker's limiter answers from RATE_LIMIT_FALLBACK because Redis fails. "
                "A round trip carries every decision asked for while the previous one was out."
            ),
        ),
        _panel(
            "Cache: answers from the cache by route",
            [
                (
                    'sum by (route) (rate(search_proxy_cache_responses_total{cache=~"hit|stale"}[5m]))'
                    " / sum by (route) (rate(search_proxy_cache_responses_total[5m]))",
                    "{{route}}",
                )
            ],
            "percentunit",
            description="HIT and STALE answers over all answers of the cached routes.",
        ),
        _panel(
            "Cache: responses by X-Cache",
            [("sum by (cache) (rate(search_proxy_cache_responses_total[5m]))", "{{cache}}")],
            "reqps",
            description="STALE: served while one background refresh runs, or in place of an engine error.",
        ),
        _panel(
            "Cache: lookups by tier and result",
            [("sum by (tier, result) (rate(search_proxy_cache_lookups_total[5m]))", "{{tier}} {{result}}")],
            "ops",
            description="l2 bypass: Redis skipped while it fails (breaker open).",
        ),
        _panel(
            "Cache: coalesced requests and background refreshes",
            [
                ("sum by (scope) (rate(search_proxy_cache_coalesced_total[5m]))", "coalesced {{scope}}"),
                ("sum by (outcome) (rate(search_proxy_cache_refreshes_total[5m]))", "refresh {{outcome}}"),
            ],
            "ops",
        ),
        _panel(
            "Cache: L1 size",
            [("sum(search_proxy_cache_l1_bytes)", "bytes")],
            "bytes",
            description="Summed over the live workers; each is capped by CACHE_L1_MAX_MB.",
        ),
        _panel(
            "Cache: following the catalog generation",
            [
                ("min(search_proxy_cache_following)", "following (1 = every worker)"),
                ("sum(rate(search_proxy_cache_redis_errors_total[5m]))", "Redis errors/s"),
            ],
            "short",
            description="0: a worker lost the announcements and serves nothing older than CACHE_MAX_STALE_MS.",
        ),
    ],
)

INDEXER = _dashboard(
    "hos-search-indexer",
    "Search indexer",
    "How fresh search is: catalog changes streamed from Postgres into the index.",
    [
        _panel(
            "Lag (now − oldest unindexed change)",
            [("max(search_indexer_lag_seconds)", "lag")],
            "s",
            description="Alert SearchIndexerLagging fires above 30 s for 5 minutes.",
        ),
        _panel(
            "Seconds since the last successful batch",
            [("time() - max(search_indexer_last_success_timestamp_seconds)", "since last batch")],
            "s",
        ),
        _panel(
            "Changes read and documents written per second",
            [
                ("job:search_indexer_changes:rate5m", "changes read"),
                ("job:search_indexer_documents_written:rate5m", "documents written"),
                ("sum(rate(search_indexer_version_conflicts_total[5m]))", "skipped: newer data already indexed"),
            ],
            "ops",
        ),
        _panel(
            "Bulk request p50 / p99",
            [
                ("histogram_quantile(0.5, sum by (le) (rate(search_indexer_bulk_duration_seconds_bucket[5m])))", "p50"),
                (
                    "histogram_quantile(0.99, sum by (le) (rate(search_indexer_bulk_duration_seconds_bucket[5m])))",
                    "p99",
                ),
            ],
            "s",
        ),
        _panel(
            "Batch size (mean)",
            [
                (
                    "sum(rate(search_indexer_batch_size_sum[5m])) / sum(rate(search_indexer_batch_size_count[5m]))",
                    "changes per batch",
                )
            ],
            "short",
        ),
        _panel("Errors by kind", [("sum by (kind) (rate(search_indexer_errors_total[5m]))", "{{kind}}")], "ops"),
        _panel(
            "Reconnects by server",
            [("sum by (server) (increase(search_indexer_reconnects_total[15m]))", "{{server}}")],
            "short",
        ),
        _panel(
            "Checkpoint and outbox pruning",
            [
                ("max(search_indexer_checkpoint_seq)", "checkpoint seq"),
                ("sum(increase(search_indexer_outbox_pruned_total[1h]))", "rows pruned / h"),
            ],
            "short",
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
