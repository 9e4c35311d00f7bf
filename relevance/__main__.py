"""``make relevance`` / ``python -m relevance``: score the judged query set on a real engine.

    python -m relevance [--products 8000] [--seed 42] [--write-baseline] [--all]
                        [--shards N] [--search-type dfs_query_then_fetch] [--json PATH]

Uses ``ELASTICSEARCH_NODE``, else runs ``hos-search dev`` on embedded servers for an engine
(``hos_search.dev_process``: never an import of ``devstack``), indexes the sample catalog,
runs every query of ``relevance/queries.json`` through the proxy's search path with the
synonym file in use (``SYNONYMS_PATH`` or ``catalog/synonyms.txt``), and prints nDCG@10, MRR
and the zero-result rate, then every query whose scores changed against the committed
baseline (``relevance/baseline.json``; ``--all`` prints every query). ``--write-baseline``
records this run as the new baseline (commit it with the change that moved the numbers); the
floors in it are edited by hand, and ``tests/test_relevance.py`` fails below them.
Exit status 1 when a floor is not met.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from catalog.engine import create_engine_client
from hos_search.dev_process import NAMED_SERVERS, DevStackFailed, dev_stack
from proxy.synonyms import DEFAULT_SYNONYMS_PATH, load_synonyms
from relevance.judgments import QueryScore, Summary, load_queries, summarise
from relevance.runner import PRODUCTS, SEED, index_catalog, run_queries

BASELINE_PATH = Path(__file__).with_name("baseline.json")
# Differences smaller than this are noise in the printout.
_CHANGED = 0.005


def load_baseline(path: Path = BASELINE_PATH) -> dict[str, Any]:
    return dict(json.loads(path.read_text(encoding="utf-8")))


def floors_failed(summary: Summary, floor: dict[str, float]) -> list[str]:
    """The floors this run does not meet, as readable lines (empty: all met)."""
    failed = []
    if summary.ndcg < floor["ndcg"]:
        failed.append(f"nDCG@10 {summary.ndcg:.3f} < floor {floor['ndcg']:.3f}")
    if summary.mrr < floor["mrr"]:
        failed.append(f"MRR {summary.mrr:.3f} < floor {floor['mrr']:.3f}")
    if summary.zero_rate > floor["zero_rate"]:
        failed.append(f"zero-result rate {summary.zero_rate:.3f} > ceiling {floor['zero_rate']:.3f}")
    if summary.zero_with_relevant:
        failed.append(f"{summary.zero_with_relevant} queries found nothing although the catalog has products for them")
    return failed


def baseline_document(
    scores: list[QueryScore], summary: Summary, floor: dict[str, float], products: int, seed: int
) -> str:
    document = {
        "about": "Per-query scores of the judged set (python -m relevance --write-baseline); "
        "'floor' is edited by hand and enforced by tests/test_relevance.py.",
        "catalog": {"products": products, "seed": seed},
        "floor": floor,
        "summary": {
            key: round(value, 4) if isinstance(value, float) else value for key, value in asdict(summary).items()
        },
        "queries": {s.id: {"q": s.q, "ndcg": round(s.ndcg, 4), "rr": round(s.rr, 4), "total": s.total} for s in scores},
    }
    return json.dumps(document, indent=1, ensure_ascii=False) + "\n"


def report(scores: list[QueryScore], summary: Summary, baseline: dict[str, Any] | None, show_all: bool) -> None:
    before = (baseline or {}).get("queries", {})
    print(f"{'query':<28} {'nDCG@10':>8} {'Δ':>7} {'RR':>5} {'Δ':>7} {'total':>6}  notes")
    for s in scores:
        old = before.get(s.id)
        d_ndcg = s.ndcg - old["ndcg"] if old else 0.0
        d_rr = s.rr - old["rr"] if old else 0.0
        changed = (
            old is None or abs(d_ndcg) >= _CHANGED or abs(d_rr) >= _CHANGED or (old["total"] == 0) != (s.total == 0)
        )
        if not (show_all or changed):
            continue
        notes = []
        if old is None:
            notes.append("new")
        if s.relaxed:
            notes.append("relaxed" + (f" → {s.did_you_mean!r}" if s.did_you_mean else ""))
        if not s.relevant:
            notes.append("no relevant product")
        print(f"{s.q[:28]:<28} {s.ndcg:8.3f} {d_ndcg:+7.3f} {s.rr:5.2f} {d_rr:+7.3f} {s.total:6d}  {', '.join(notes)}")
    old_summary = (baseline or {}).get("summary", {})

    def delta(key: str, value: float) -> str:
        return f" ({value - old_summary[key]:+.3f} vs baseline)" if key in old_summary else ""

    print()
    print(f"queries {summary.queries} (scored {summary.scored})")
    print(f"nDCG@10          {summary.ndcg:.3f}{delta('ndcg', summary.ndcg)}")
    print(f"MRR              {summary.mrr:.3f}{delta('mrr', summary.mrr)}")
    print(f"zero-result rate {summary.zero_rate:.3f}{delta('zero_rate', summary.zero_rate)}")


async def measure(
    node: str,
    products: int,
    seed: int,
    *,
    shards: int = 1,
    search_type: str | None = None,
    latencies: list[float] | None = None,
) -> list[QueryScore]:
    synonyms_path = Path(os.environ.get("SYNONYMS_PATH") or DEFAULT_SYNONYMS_PATH)
    engine, info = await create_engine_client(node, request_timeout=60)
    try:
        print(
            f"engine: {info.distribution} {info.version}; catalog: {products} products, seed {seed}; "
            f"{shards} shard(s), search type {search_type or 'query_then_fetch'}",
            file=sys.stderr,
        )
        catalog = await index_catalog(engine, products=products, seed=seed, shards=shards)
        try:
            queries, synonyms = load_queries(), load_synonyms(synonyms_path)
            # A first pass warms the caches; only the second is scored and timed.
            await run_queries(engine, catalog.index, queries, synonyms, products, seed, search_type=search_type)
            return await run_queries(
                engine, catalog.index, queries, synonyms, products, seed, search_type=search_type, latencies=latencies
            )
        finally:
            await engine.indices.delete(index=catalog.index, ignore_unavailable=True)
    finally:
        await engine.close()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m relevance", description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=PRODUCTS)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--write-baseline", action="store_true", help="record this run as the baseline")
    parser.add_argument("--all", action="store_true", help="print every query, not only the changed ones")
    parser.add_argument("--shards", type=int, default=1, help="primary shards of the scored index (default 1)")
    parser.add_argument("--search-type", choices=["query_then_fetch", "dfs_query_then_fetch"], default=None)
    parser.add_argument("--json", type=Path, help="also write the summary and latency percentiles here")
    args = parser.parse_args()

    latencies: list[float] = []

    def scored(engine_url: str) -> list[QueryScore]:
        return asyncio.run(
            measure(
                engine_url,
                args.products,
                args.seed,
                shards=args.shards,
                search_type=args.search_type,
                latencies=latencies,
            )
        )

    if os.environ.get("ELASTICSEARCH_NODE"):
        scores = scored(os.environ["ELASTICSEARCH_NODE"])
    else:
        # An engine of its own: ``hos-search dev`` on embedded servers, one sample product (this
        # command indexes its own catalog), stopped afterwards.
        stack_env = {key: value for key, value in os.environ.items() if key not in NAMED_SERVERS}
        try:
            with dev_stack(stack_env, products=1) as urls:
                scores = scored(urls["ELASTICSEARCH_NODE"])
        except DevStackFailed as exc:
            print(f"the dev stack did not get ready: {exc}", file=sys.stderr)
            return 1
    summary = summarise(scores)
    ordered = sorted(latencies)
    percentiles = {
        f"p{p}_ms": round(ordered[min(len(ordered) - 1, len(ordered) * p // 100)] * 1000, 2) for p in (50, 95, 99)
    }
    print(f"engine round trips: {len(ordered)}; " + ", ".join(f"{k} {v}" for k, v in percentiles.items()))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "shards": args.shards,
                    "search_type": args.search_type or "query_then_fetch",
                    "products": args.products,
                    "summary": asdict(summary),
                    "latency": percentiles,
                },
                indent=1,
            )
            + "\n"
        )
    baseline = load_baseline() if BASELINE_PATH.exists() else None
    comparable = baseline is not None and baseline.get("catalog") == {"products": args.products, "seed": args.seed}
    if baseline is not None and not comparable:
        print("(baseline was measured on another catalog: no per-query comparison)", file=sys.stderr)
    report(scores, summary, baseline if comparable else None, args.all)
    floor = (baseline or {}).get("floor") or {"ndcg": 0.9, "mrr": 0.85, "zero_rate": 0.02}
    if args.write_baseline:
        BASELINE_PATH.write_text(baseline_document(scores, summary, floor, args.products, args.seed), encoding="utf-8")
        print(f"baseline written to {BASELINE_PATH}", file=sys.stderr)
    failed = floors_failed(summary, floor)
    for line in failed:
        print("FLOOR NOT MET: " + line)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
