"""Building engine request bodies: text matching, filters, disjunctive facets, sorts, suggestions."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from multidict import MultiDict

from catalog.mapping import PRICE_BUCKETS
from proxy.errors import InvalidParameters
from proxy.params import SearchRequest, SuggestRequest, parse_search
from proxy.query import FACET_VALUES, SUGGEST_TAXONOMY, build_search, build_suggest

# Where user text may appear: as the query of a match-type clause, nowhere else.
_TEXT_QUERIES = {"match", "multi_match", "match_phrase"}


def leaves(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every (path, value) in a JSON-like tree; dict keys are yielded as values too."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*path, "<key>"), key
            yield from leaves(value, (*path, key))
    elif isinstance(node, list | tuple):
        for value in node:
            yield from leaves(value, path)
    else:
        yield path, node


def is_text_query_path(path: tuple[str, ...]) -> bool:
    """…multi_match.query, or …match.<field>.query / …match_phrase.<field>.query."""
    if path[-1] != "query":
        return False
    if path[-2] == "multi_match":
        return True
    return len(path) >= 3 and path[-3] in _TEXT_QUERIES - {"multi_match"}


def user_text_paths(body: dict[str, Any], text: str) -> list[tuple[str, ...]]:
    return [path for path, value in leaves(body) if value == text]


def clause_kinds(body: dict[str, Any]) -> set[str]:
    return {value for path, value in leaves(body) if path and path[-1] == "<key>"}


# --- text ----------------------------------------------------------------------------------------


def test_browse_matches_everything_without_highlight() -> None:
    body = build_search(SearchRequest())
    assert body["query"] == {"match_all": {}}
    assert "highlight" not in body
    assert "post_filter" not in body


def test_text_search_requires_every_word_with_typo_tolerance() -> None:
    body = build_search(SearchRequest(q="hary poter", sort="relevance"))
    (must,) = body["query"]["bool"]["must"]
    assert must["multi_match"]["query"] == "hary poter"
    assert must["multi_match"]["fuzziness"] == "AUTO"
    assert must["multi_match"]["prefix_length"] == 1
    assert must["multi_match"]["operator"] == "and"
    assert must["multi_match"]["fields"][0].startswith("name^")
    assert "description" in must["multi_match"]["fields"]


def test_exact_phrases_and_exact_words_rank_above_fuzzy_matches() -> None:
    should = build_search(SearchRequest(q="elder wand", sort="relevance"))["query"]["bool"]["should"]
    phrase = next(c["match_phrase"]["name"] for c in should if "match_phrase" in c)
    exact = next(c["multi_match"] for c in should if "multi_match" in c)
    assert phrase["query"] == "elder wand" and phrase["boost"] > 1
    assert "fuzziness" not in exact and exact["boost"] > 1


@pytest.mark.parametrize(
    "text",
    [
        "name:*",
        '{"match_all":{}}',
        "*",
        "\\",
        '"',
        "AND OR NOT",
        "price:[0 TO 10] OR _exists_:stock",
        "query_string",
    ],
)
def test_query_syntax_reaches_the_engine_only_as_match_text(text: str) -> None:
    req = parse_search(MultiDict(q=text))
    body = build_search(req)
    paths = user_text_paths(body, text)
    assert paths, "the text is searched for"
    assert all(is_text_query_path(path) for path in paths), paths
    assert not clause_kinds(body) & {"query_string", "simple_query_string", "regexp", "wildcard"}


def test_highlight_wraps_name_matches_in_em_with_html_encoding() -> None:
    highlight = build_search(SearchRequest(q="wand", sort="relevance"))["highlight"]
    assert highlight["pre_tags"] == ["<em>"] and highlight["post_tags"] == ["</em>"]
    assert highlight["encoder"] == "html"
    assert highlight["fields"] == {"name": {"number_of_fragments": 0}}


def test_source_is_limited_to_the_fields_of_an_api_item() -> None:
    source = build_search(SearchRequest())["_source"]
    assert set(source) == {
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
    }


def test_paging_and_exact_totals() -> None:
    body = build_search(SearchRequest(page=3, size=10))
    assert (body["from"], body["size"], body["track_total_hits"]) == (20, 10, True)


# --- filters and facets ------------------------------------------------------------------------

FILTERED = SearchRequest(
    q="wand",
    categories=("props", "toys"),
    fandoms=("Harry Potter",),
    seller_ids=("9",),
    min_price=10.0,
    max_price=50.0,
    in_stock=True,
    sort="relevance",
)
CATEGORY_CLAUSE = {"terms": {"category": ["props", "toys"]}}
FANDOM_CLAUSE = {"terms": {"fandom": ["Harry Potter"]}}
PRICE_CLAUSE = {"range": {"price": {"gte": 10.0, "lte": 50.0}}}
SELLER_CLAUSE = {"terms": {"seller.id": ["9"]}}
STOCK_CLAUSE = {"term": {"in_stock": True}}


def facet_filters(body: dict[str, Any], facet: str) -> list[dict[str, Any]]:
    agg_filter = body["aggs"][facet]["filter"]
    return [] if "match_all" in agg_filter else agg_filter["bool"]["filter"]


def test_filters_go_in_post_filter_so_facets_see_unfiltered_matches() -> None:
    body = build_search(FILTERED)
    assert body["query"]["bool"]["must"]  # the text query, without the filters
    assert "filter" not in body["query"]["bool"]
    post = body["post_filter"]["bool"]["filter"]
    for clause in (CATEGORY_CLAUSE, FANDOM_CLAUSE, PRICE_CLAUSE, SELLER_CLAUSE, STOCK_CLAUSE):
        assert clause in post
    assert len(post) == 5


def test_price_filter_includes_both_bounds() -> None:
    assert PRICE_CLAUSE in build_search(SearchRequest(min_price=10.0, max_price=50.0))["post_filter"]["bool"]["filter"]


def test_open_price_bound_is_left_out() -> None:
    (clause,) = build_search(SearchRequest(min_price=5.0))["post_filter"]["bool"]["filter"]
    assert clause == {"range": {"price": {"gte": 5.0}}}
    (clause,) = build_search(SearchRequest(max_price=5.0))["post_filter"]["bool"]["filter"]
    assert clause == {"range": {"price": {"lte": 5.0}}}


def test_in_stock_false_filters_to_out_of_stock() -> None:
    body = build_search(SearchRequest(in_stock=False))
    assert body["post_filter"]["bool"]["filter"] == [{"term": {"in_stock": False}}]


def test_category_facet_applies_every_filter_but_its_own() -> None:
    filters = facet_filters(build_search(FILTERED), "category")
    assert CATEGORY_CLAUSE not in filters
    assert {orjson.dumps(c) for c in filters} == {
        orjson.dumps(c) for c in (FANDOM_CLAUSE, PRICE_CLAUSE, SELLER_CLAUSE, STOCK_CLAUSE)
    }


def test_fandom_facet_applies_every_filter_but_its_own() -> None:
    filters = facet_filters(build_search(FILTERED), "fandom")
    assert FANDOM_CLAUSE not in filters
    assert CATEGORY_CLAUSE in filters and PRICE_CLAUSE in filters
    assert SELLER_CLAUSE in filters and STOCK_CLAUSE in filters


def test_price_facet_applies_every_filter_but_its_own() -> None:
    filters = facet_filters(build_search(FILTERED), "price")
    assert PRICE_CLAUSE not in filters
    assert CATEGORY_CLAUSE in filters and FANDOM_CLAUSE in filters
    assert SELLER_CLAUSE in filters and STOCK_CLAUSE in filters


def test_only_filter_is_own_facet_filter_leaves_that_facet_unfiltered() -> None:
    body = build_search(SearchRequest(categories=("props",)))
    assert body["aggs"]["category"]["filter"] == {"match_all": {}}
    assert facet_filters(body, "fandom") == [{"terms": {"category": ["props"]}}]


def test_facet_aggregations_count_terms_and_labelled_price_ranges() -> None:
    aggs = build_search(SearchRequest())["aggs"]
    assert aggs["category"]["aggs"][FACET_VALUES]["terms"]["field"] == "category"
    assert aggs["category"]["aggs"][FACET_VALUES]["terms"]["size"] >= 50
    assert aggs["fandom"]["aggs"][FACET_VALUES]["terms"]["field"] == "fandom"
    assert aggs["fandom"]["aggs"][FACET_VALUES]["terms"]["size"] >= 100
    price = aggs["price"]["aggs"][FACET_VALUES]["range"]
    assert price["field"] == "price"
    assert [(r["key"], r.get("from"), r.get("to")) for r in price["ranges"]] == list(PRICE_BUCKETS)


# --- sorts ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("relevance", [{"_score": "desc"}, {"created_at": "desc"}, {"id": "asc"}]),
        ("newest", [{"created_at": "desc"}, {"id": "asc"}]),
        ("price_asc", [{"price": "asc"}, {"id": "asc"}]),
        ("price_desc", [{"price": "desc"}, {"id": "asc"}]),
        ("rating", [{"rating": {"order": "desc", "missing": "_last"}}, {"id": "asc"}]),
    ],
)
def test_every_sort_ends_with_the_id_tie_breaker(sort: str, expected: list[Any]) -> None:
    req = parse_search(MultiDict(q="wand", sort=sort))
    assert build_search(req)["sort"] == expected


def test_nothing_sorts_or_aggregates_on_underscore_id() -> None:
    # Elasticsearch 9 refuses _id in sorts and aggregations.
    for body in (build_search(FILTERED), build_suggest(SuggestRequest(q="harry"))):
        assert "_id" not in {value for _, value in leaves(body)}


def test_building_is_repeatable_and_json_serialisable() -> None:
    first = build_search(FILTERED)
    snapshot = copy.deepcopy(first)
    build_search(SearchRequest(q="other", categories=("x",), sort="rating"))
    assert first == snapshot, "shared constants must not be mutated by later builds"
    assert orjson.loads(orjson.dumps(first)) == snapshot


# --- suggestions --------------------------------------------------------------------------------


def test_short_prefix_suggest_is_exact_prefix_only() -> None:
    body = build_suggest(SuggestRequest(q="har", size=8))
    assert "fuzziness" not in clause_kinds(body)
    match = body["query"]["match"]["name.prefix"]
    assert match == {"query": "har", "operator": "and"}
    assert body["_source"] == ["id", "name"]
    assert body["size"] >= 8


def test_long_prefix_suggest_tolerates_typos() -> None:
    body = build_suggest(SuggestRequest(q="hermoi", size=8))
    should = body["query"]["bool"]["should"]
    exact, fuzzy = (c["match"]["name.prefix"] for c in should)
    assert "fuzziness" not in exact and exact["boost"] > 1  # exact prefixes rank first
    assert fuzzy["fuzziness"] == "AUTO" and fuzzy["query"] == "hermoi"
    taxonomy = body["aggs"][SUGGEST_TAXONOMY]["aggs"]
    assert {"fandom", "category", "fandom_fuzzy", "category_fuzzy"} <= set(taxonomy)


def test_suggest_finds_fandoms_and_categories_by_their_own_names_in_the_same_request() -> None:
    body = build_suggest(SuggestRequest(q="har", size=5))
    taxonomy = body["aggs"][SUGGEST_TAXONOMY]
    # global: fandom names match by themselves, not only within the matched products.
    assert taxonomy["global"] == {}
    for kind in ("fandom", "category"):
        agg = taxonomy["aggs"][kind]
        assert agg["filter"] == {"match": {f"{kind}.prefix": {"query": "har", "operator": "and"}}}
        assert agg["aggs"][FACET_VALUES]["terms"]["field"] == kind
        assert agg["aggs"][FACET_VALUES]["terms"]["size"] == 5


@pytest.mark.parametrize("text", ["har", "name:*", '{"match_all":{}}', "AND OR NOT", "hermione"])
def test_suggest_text_only_appears_as_match_text(text: str) -> None:
    body = build_suggest(SuggestRequest(q=text))
    paths = user_text_paths(body, text)
    assert paths and all(is_text_query_path(path) for path in paths), paths


# --- properties ---------------------------------------------------------------------------------

_STATIC = {value for _, value in leaves(build_search(FILTERED)) if isinstance(value, str)}


@given(
    q=st.text(max_size=220),
    category=st.text(max_size=30),
    sort=st.sampled_from(["", "relevance", "newest", "price_asc", "price_desc", "rating"]),
)
def test_user_text_never_appears_outside_match_queries(q: str, category: str, sort: str) -> None:
    try:
        req = parse_search(MultiDict(q=q, category=category, sort=sort))
    except InvalidParameters:
        return
    assume(req.q and req.q not in _STATIC and req.q not in req.categories)
    body = build_search(req)
    for path in user_text_paths(body, req.q):
        assert is_text_query_path(path), path
    for value in req.categories:
        assume(value not in _STATIC and value != req.q)
        for path in user_text_paths(body, value):
            assert path[-1] == "category" and path[-2] == "terms", path
    assert not clause_kinds(body) & {"query_string", "simple_query_string"}
