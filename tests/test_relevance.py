"""Search quality on the judged query set (``relevance``), on the real engine.

The judgments come from the sample catalog's ground truth (what the generator meant each
product to be), never from search results; the committed baseline records per-query scores
and the floors this test enforces. ``make relevance`` prints the same numbers with per-query
changes. On ``osmem`` (an imitation engine whose scoring is not Lucene's) the floor is skipped;
the correctness checks still run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from catalog.engine import create_engine_client
from catalog.generator import generate_catalog
from devstack.stack import StackUrls
from proxy.synonyms import DEFAULT_SYNONYMS_PATH, load_synonyms
from relevance.__main__ import floors_failed, load_baseline
from relevance.judgments import (
    JudgedQuery,
    QueryScore,
    judge,
    load_queries,
    ndcg_at_k,
    reciprocal_rank,
    summarise,
)
from relevance.runner import PRODUCTS, SEED, index_catalog, run_queries


@dataclass(frozen=True)
class Scored:
    scores: list[QueryScore]
    lucene: bool  # False on osmem, whose scores are not Lucene's


def _is_osmem(root: dict[str, Any]) -> bool:
    return (root.get("version") or {}).get("build_hash") == "osmem" or root.get("cluster_name") == "osmem"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def scored(stack_urls: StackUrls) -> AsyncIterator[Scored]:
    """The judged set run once against the baseline's catalog, indexed on the test engine."""
    client, _ = await create_engine_client(stack_urls.elasticsearch_node)
    try:
        root = (await client.info()).body
        catalog = await index_catalog(client, products=PRODUCTS, seed=SEED, prefix=f"t{__name__[-9:]}")
        try:
            scores = await run_queries(
                client, catalog.index, load_queries(), load_synonyms(DEFAULT_SYNONYMS_PATH), PRODUCTS, SEED
            )
        finally:
            await client.indices.delete(index=catalog.index, ignore_unavailable=True)
        yield Scored(scores, lucene=not _is_osmem(root))
    finally:
        await client.close()


# --- the judged set itself (pure) ------------------------------------------------------------------


def test_the_judged_set_is_storefront_shaped() -> None:
    queries = load_queries()
    assert len(queries) >= 60
    shapes = Counter(q.shape for q in queries)
    for shape in ("fandom", "franchise+type", "character", "typo", "plural", "hyphenation", "accent", "british"):
        assert shapes[shape] >= 1, shape
    assert shapes["half-typed"] >= 3 and shapes["typo"] >= 5


def test_judgments_come_from_the_generators_ground_truth() -> None:
    catalog = generate_catalog(2000, seed=SEED)
    rows = {row[0]: row for row in catalog.iter_products()}
    pokemon_plush = next(q for q in load_queries() if q.id == "pokemon-plush")
    grades = judge([pokemon_plush], catalog.iter_truth())["pokemon-plush"]
    best = {int(pid) for pid, grade in grades.items() if grade == 3}
    # Exactly the active Pokémon plush products, as the rows themselves say.
    assert best == {
        pid for pid, row in rows.items() if row[9] == "active" and row[5] == "Pokémon" and row[4] == "plush"
    }
    assert all(rows[int(pid)][5] == "Pokémon" for pid in grades)


def test_a_character_is_judged_by_what_the_product_features() -> None:
    catalog = generate_catalog(2000, seed=SEED)
    rows = {row[0]: row for row in catalog.iter_products()}
    pikachu = JudgedQuery("p", "pikachu", "character", ((3, {"character": "Pikachu", "in_name": "c"}),))
    grades = judge([pikachu], catalog.iter_truth())["p"]
    assert grades and all("Pikachu" in rows[int(pid)][2] for pid in grades)


def test_ndcg_and_reciprocal_rank() -> None:
    grades = {"a": 3, "b": 1}
    assert ndcg_at_k(["a", "b", "x"], grades) == pytest.approx(1.0)
    assert ndcg_at_k(["b", "a"], grades) < 1.0
    assert ndcg_at_k(["x", "y"], grades) == 0.0
    assert reciprocal_rank(["x", "b", "a"], grades) == pytest.approx(1 / 3)  # the best grade counts


# --- on the engine ---------------------------------------------------------------------------------


def test_the_baseline_was_measured_on_this_catalog() -> None:
    baseline = load_baseline()
    assert baseline["catalog"] == {"products": PRODUCTS, "seed": SEED}
    assert set(baseline["queries"]) == {q.id for q in load_queries()}


def test_every_query_with_products_finds_some(scored: Scored) -> None:
    if not scored.lucene:
        # Seen on osmem 0.1.6: a field whose analysis emits a multi-position token (the
        # compound "spiderman" of "Spider-Man", flattened for indexing) loses that value's tokens.
        pytest.skip("osmem drops compound (multi-position) tokens at index time; measured on a real engine")
    missed = [s.q for s in scored.scores if s.relevant and s.total == 0]
    assert not missed, f"found nothing although the catalog has products for: {missed}"
    assert summarise(scored.scores).zero_rate <= load_baseline()["floor"]["zero_rate"]


def test_the_judged_set_meets_the_committed_floor(scored: Scored) -> None:
    if not scored.lucene:
        pytest.skip("osmem does not score like Lucene: the relevance floor is measured on a real engine")
    baseline = load_baseline()
    summary = summarise(scored.scores)
    before = baseline["queries"]
    worse = [
        f"{s.q!r}: nDCG@10 {before[s.id]['ndcg']:.3f} -> {s.ndcg:.3f}"
        for s in scored.scores
        if s.id in before and s.ndcg < before[s.id]["ndcg"] - 0.005
    ]
    failed = floors_failed(summary, baseline["floor"])
    assert not failed, "; ".join(failed) + " — queries that got worse: " + "; ".join(worse)


def test_the_issues_queries_rank_relevant_products_first(scored: Scored) -> None:
    if not scored.lucene:
        pytest.skip("osmem does not score like Lucene")
    by_id = {s.id: s for s in scored.scores}
    for qid in (
        "pokemon-plush",
        "star-wars-poster",
        "marvel-t-shirt",
        "marvel-tshirt",
        "wands",
        "scarves",
        "typo-pokmon",
    ):
        assert by_id[qid].rr == 1.0 and by_id[qid].ndcg >= 0.9, by_id[qid]
    assert by_id["gryffindor-scarf"].relaxed and by_id["gryffindor-scarf"].ndcg > 0
