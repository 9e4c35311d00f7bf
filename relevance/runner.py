"""Running the judged query set against a real engine, the way the proxy searches.

:func:`index_catalog` loads a deterministic sample catalog straight from the generator into a
fresh index (with the catalog's own mapping and document builder: no Postgres needed), and
:func:`run_queries` sends every judged query through the proxy's own search path
(``proxy.relaxation.search_with_recovery``: strict query, zero-result recovery, synonyms) and
scores the first page against the ground-truth judgments.

Used by ``make relevance`` (``python -m relevance``) and by ``tests/test_relevance.py``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from elasticsearch import AsyncElasticsearch
from elasticsearch.helpers import async_bulk

from catalog.document import is_searchable, product_document
from catalog.generator import PRODUCT_COLUMNS, generate_catalog
from catalog.mapping import index_mappings, index_settings, live_settings
from proxy.answers import shape_search
from proxy.params import SearchRequest
from proxy.relaxation import search_with_recovery
from proxy.synonyms import Synonyms
from relevance.judgments import JudgedQuery, K, QueryScore, judge, ndcg_at_k, reciprocal_rank

# The catalog the committed baseline was measured on: change it only with the baseline.
PRODUCTS = 8000
SEED = 42


@dataclass(frozen=True)
class IndexedCatalog:
    index: str
    products: int
    seed: int


def _documents(products: int, seed: int, index: str) -> Iterator[dict[str, Any]]:
    catalog = generate_catalog(products, seed=seed)
    sellers = {seller[0]: seller[1] for seller in catalog.sellers}
    for values in catalog.iter_products():
        row: dict[str, Any] = dict(zip(PRODUCT_COLUMNS, values, strict=True))
        row["seller_name"] = sellers[values[1]]
        if is_searchable(row):
            yield {"_index": index, "_id": str(row["id"]), "_source": product_document(row)}


async def index_catalog(
    engine: AsyncElasticsearch,
    *,
    products: int = PRODUCTS,
    seed: int = SEED,
    prefix: str = "relevance",
    shards: int = 1,
) -> IndexedCatalog:
    """A new index holding the active products of the sample catalog, refreshed and searchable."""
    index = f"{prefix}_{uuid.uuid4().hex[:10]}"
    await engine.indices.create(
        index=index, settings=index_settings(loading=True, shards=shards, replicas=0), mappings=index_mappings()
    )
    # A 2,000-document bulk can outlast the client's 5 s default on a shared, busy engine (make
    # relevance failed with ConnectionTimeout at a load average of 14); loading is not the hot path.
    await async_bulk(engine.options(request_timeout=120), _documents(products, seed, index), chunk_size=2000)
    await engine.indices.put_settings(index=index, settings=live_settings(replicas=0))
    # An explicit refresh: the documents are searchable when this returns (no sleeping).
    await engine.indices.refresh(index=index)
    return IndexedCatalog(index, products, seed)


async def run_queries(
    engine: AsyncElasticsearch,
    index: str,
    queries: Sequence[JudgedQuery],
    synonyms: Synonyms,
    products: int,
    seed: int,
    *,
    search_type: str | None = None,
    latencies: list[float] | None = None,
) -> list[QueryScore]:
    """Each query through the proxy's search path; scores of its first page (K results).

    ``search_type`` (e.g. ``dfs_query_then_fetch``) is passed to every search; ``latencies``,
    if given, receives each engine round trip's seconds.
    """
    judged = judge(queries, generate_catalog(products, seed=seed).iter_truth())

    async def search(body: dict[str, Any], operation: str) -> dict[str, Any]:
        started = time.perf_counter()
        answer = dict((await engine.search(index=index, body=body, search_type=search_type)).body)
        if latencies is not None:
            latencies.append(time.perf_counter() - started)
        return answer

    scores = []
    for query in queries:
        req = SearchRequest(q=query.q, sort="relevance", size=K)
        answer = await search_with_recovery(req, synonyms, search)
        shaped = shape_search(req, answer.engine_body, relaxed=answer.relaxed, did_you_mean=answer.did_you_mean)
        ranked = [item["id"] for item in shaped["items"]]
        grades = judged[query.id]
        scores.append(
            QueryScore(
                id=query.id,
                q=query.q,
                total=shaped["total"],
                relevant=len(grades),
                ndcg=ndcg_at_k(ranked, grades),
                rr=reciprocal_rank(ranked, grades),
                relaxed=shaped["relaxed"],
                did_you_mean=shaped.get("did_you_mean"),
            )
        )
    return scores
