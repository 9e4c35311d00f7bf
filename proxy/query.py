"""Building the engine's request bodies from validated requests: search and suggestions.

Pure functions from :class:`SearchRequest` / :class:`SuggestRequest` to the JSON-able dict the
engine client sends to ``POST /<index>/_search``; one round trip each.

Never: I/O, validation (``proxy.params`` did it), or a query type that parses user text as
syntax (``query_string``, ``simple_query_string``, ``regexp``, ``wildcard``…). User text only
ever appears as the ``query`` of ``match``, ``match_phrase`` and ``multi_match`` clauses, so
``name:*`` or ``{"match_all":{}}`` is just text to look for. Filter values appear only inside
``terms`` arrays, which are exact values, not syntax.

The returned dicts share their static parts (sorts, ``_source``, highlight, aggregation
templates) with module constants, so building a query allocates only what depends on the
request. Callers must treat the result as read-only.

Shape of the engine request the result shaper (``proxy.results``) relies on:

- ``aggregations.<facet>.<FACET_VALUES>`` for ``category``, ``fandom`` (terms buckets) and
  ``price`` (range buckets keyed by ``catalog.mapping.PRICE_BUCKETS`` labels). Price facet
  buckets are ``[from, to)`` as the engine's range aggregation counts them, while the
  ``min_price``/``max_price`` filter includes both ends (``gte``/``lte``): ``max_price=20``
  includes a 20.00 product that the "20-50" chip counts.
- Suggestions: ``aggregations.<SUGGEST_TAXONOMY>.<kind>[_fuzzy].<FACET_VALUES>``.

Elasticsearch 9 refuses to sort or aggregate on ``_id``: the tie-breaker is the ``id`` keyword.
"""

from __future__ import annotations

from typing import Any, Final

from catalog.mapping import PRICE_BUCKETS
from proxy.params import SearchRequest, Sort, SuggestRequest

# Names the result shaper reads back.
FACET_VALUES: Final = "values"
SUGGEST_TAXONOMY: Final = "taxonomy"
FUZZY_SUFFIX: Final = "_fuzzy"
TAXONOMY_KINDS: Final = ("fandom", "category")

# Name matches outrank description matches; a typo'd word still finds the product.
# Lists, not tuples: some JSON encoders and engine mocks only accept lists.
_TEXT_FIELDS: Final = ["name^3", "description"]
_PHRASE_BOOST: Final = 4.0
_EXACT_BOOST: Final = 2.0
# The first letter is rarely the typo, and fixing it makes fuzzy expansion far cheaper.
_PREFIX_LENGTH: Final = 1

_FACET_SIZES: Final = {"category": 50, "fandom": 100}
# Highest count first, then alphabetical, so equal counts list in a stable order.
_FACET_ORDER: Final = ({"_count": "desc"}, {"_key": "asc"})

# Exactly the fields of an API item: no stock count, no updated_at.
SOURCE_FIELDS: Final = (
    "id",
    "name",
    "description",
    "category",
    "fandom",
    "price",
    "currency",
    "in_stock",
    "rating",
    "seller",
    "image_url",
    "created_at",
)
_SOURCE: Final = list(SOURCE_FIELDS)

_HIGHLIGHT: Final[dict[str, Any]] = {
    "pre_tags": ["<em>"],
    "post_tags": ["</em>"],
    # The html encoder escapes the field text around the tags, so the result is safe HTML.
    "encoder": "html",
    # 0 fragments: the whole name, highlighted, rather than a snippet of it.
    "fields": {"name": {"number_of_fragments": 0}},
}

# Every sort ends on the `id` keyword so pages never overlap or skip on ties.
_TIE_BREAK: Final = {"id": "asc"}
_SORTS: Final[dict[Sort, list[Any]]] = {
    "relevance": [{"_score": "desc"}, {"created_at": "desc"}, _TIE_BREAK],
    "newest": [{"created_at": "desc"}, _TIE_BREAK],
    "price_asc": [{"price": "asc"}, _TIE_BREAK],
    "price_desc": [{"price": "desc"}, _TIE_BREAK],
    "rating": [{"rating": {"order": "desc", "missing": "_last"}}, _TIE_BREAK],
}

_MATCH_ALL: Final[dict[str, Any]] = {"match_all": {}}

_PRICE_RANGES: Final = [
    {"key": key} | ({} if low is None else {"from": low}) | ({} if high is None else {"to": high})
    for key, low, high in PRICE_BUCKETS
]
_FACET_AGGS: Final[dict[str, dict[str, Any]]] = {
    **{
        facet: {"terms": {"field": facet, "size": size, "order": list(_FACET_ORDER)}}
        for facet, size in _FACET_SIZES.items()
    },
    "price": {"range": {"field": "price", "ranges": _PRICE_RANGES}},
}

# Suggestions: typo tolerance starts at this many characters; shorter prefixes are too
# ambiguous for edits to help ("ha" is one edit away from half the catalogue).
FUZZY_MIN_CHARS: Final = 4
# Edge n-gram fields (catalog.mapping): every prefix of every word is a term.
_PREFIX_FIELDS: Final = {"name": "name.prefix", "fandom": "fandom.prefix", "category": "category.prefix"}
_EXACT_PREFIX_BOOST: Final = 2.0
_SUGGEST_SOURCE: Final = ["id", "name"]
# Several sellers list the same name; shaping de-duplicates names, so fetch spare hits.
SUGGEST_HIT_FACTOR: Final = 2


def _filters(req: SearchRequest) -> dict[str, dict[str, Any]]:
    """Each active filter clause, keyed by the facet it belongs to ("" for non-facet ones)."""
    clauses: dict[str, dict[str, Any]] = {}
    if req.categories:
        clauses["category"] = {"terms": {"category": list(req.categories)}}
    if req.fandoms:
        clauses["fandom"] = {"terms": {"fandom": list(req.fandoms)}}
    if req.min_price is not None or req.max_price is not None:
        bounds: dict[str, float] = {}
        if req.min_price is not None:
            bounds["gte"] = req.min_price
        if req.max_price is not None:
            bounds["lte"] = req.max_price
        clauses["price"] = {"range": {"price": bounds}}
    if req.seller_ids:
        clauses["seller_id"] = {"terms": {"seller.id": list(req.seller_ids)}}
    if req.in_stock is not None:
        clauses["in_stock"] = {"term": {"in_stock": req.in_stock}}
    return clauses


def _all_of(clauses: list[dict[str, Any]]) -> dict[str, Any]:
    if not clauses:
        return _MATCH_ALL
    return {"bool": {"filter": clauses}}


def _text_query(q: str) -> dict[str, Any]:
    """Every word must match (allowing typos); exact phrases and exact words rank higher."""
    return {
        "bool": {
            "must": [
                {
                    "multi_match": {
                        "query": q,
                        "fields": _TEXT_FIELDS,
                        "operator": "and",
                        "fuzziness": "AUTO",
                        "prefix_length": _PREFIX_LENGTH,
                    }
                }
            ],
            "should": [
                {"match_phrase": {"name": {"query": q, "boost": _PHRASE_BOOST}}},
                # The same words without fuzziness: exact spellings above typo'd ones.
                {
                    "multi_match": {
                        "query": q,
                        "fields": _TEXT_FIELDS,
                        "operator": "and",
                        "boost": _EXACT_BOOST,
                    }
                },
            ],
        }
    }


def build_search(req: SearchRequest) -> dict[str, Any]:
    """The engine body for one search: hits, total, disjunctive facets, highlight."""
    filters = _filters(req)
    body: dict[str, Any] = {
        "query": _text_query(req.q) if req.q else _MATCH_ALL,
        "from": req.offset,
        "size": req.size,
        "track_total_hits": True,
        "sort": _SORTS[req.sort],
        "_source": _SOURCE,
    }
    if filters:
        # post_filter, not query: the facet aggregations below must see the unfiltered
        # matches so each can apply every filter except its own.
        body["post_filter"] = _all_of(list(filters.values()))
    body["aggs"] = {
        facet: {
            "filter": _all_of([clause for name, clause in filters.items() if name != facet]),
            "aggs": {FACET_VALUES: agg},
        }
        for facet, agg in _FACET_AGGS.items()
    }
    if req.q:
        body["highlight"] = _HIGHLIGHT
    return body


def _prefix_query(q: str, field: str, *, fuzzy: bool, boost: float | None = None) -> dict[str, Any]:
    """Every typed word must be a prefix of a word in ``field`` (within an edit or two if fuzzy)."""
    clause: dict[str, Any] = {"query": q, "operator": "and"}
    if fuzzy:
        clause["fuzziness"] = "AUTO"
        clause["prefix_length"] = _PREFIX_LENGTH
    if boost is not None:
        clause["boost"] = boost
    return {"match": {field: clause}}


def _exact_or_fuzzy(q: str, field: str, fuzzy: bool) -> dict[str, Any]:
    if not fuzzy:
        return _prefix_query(q, field, fuzzy=False)
    # Exact prefixes rank above typo matches ("hermoi" -> Hermione either way).
    return {
        "bool": {
            "should": [
                _prefix_query(q, field, fuzzy=False, boost=_EXACT_PREFIX_BOOST),
                _prefix_query(q, field, fuzzy=True),
            ],
            "minimum_should_match": 1,
        }
    }


def _taxonomy_agg(kind: str, query: dict[str, Any], size: int) -> dict[str, Any]:
    return {
        "filter": query,
        "aggs": {FACET_VALUES: {"terms": {"field": kind, "size": size, "order": list(_FACET_ORDER)}}},
    }


def build_suggest(req: SuggestRequest) -> dict[str, Any]:
    """The engine body for autocomplete: product names plus fandom and category names.

    Product hits come from the query; fandoms and categories from aggregations under a
    ``global`` bucket, so they match on their own names rather than only within the matched
    products. Exact-prefix and typo-tolerant taxonomy matches are separate aggregations, so
    the shaper can rank exact ones first.
    """
    q = req.q
    fuzzy = len(q) >= FUZZY_MIN_CHARS
    name_query = _exact_or_fuzzy(q, _PREFIX_FIELDS["name"], fuzzy)
    taxonomy: dict[str, Any] = {}
    for kind in TAXONOMY_KINDS:
        field = _PREFIX_FIELDS[kind]
        taxonomy[kind] = _taxonomy_agg(kind, _prefix_query(q, field, fuzzy=False), req.size)
        if fuzzy:
            # Typos anywhere in a fandom or category name ("pokmon", "star wras").
            taxonomy[kind + FUZZY_SUFFIX] = _taxonomy_agg(kind, _prefix_query(q, field, fuzzy=True), req.size)
    return {
        "query": name_query,
        "size": req.size * SUGGEST_HIT_FACTOR,
        "_source": _SUGGEST_SOURCE,
        # No total needed: counting every match would cost more than the suggestions.
        "track_total_hits": False,
        "aggs": {SUGGEST_TAXONOMY: {"global": {}, "aggs": taxonomy}},
    }
