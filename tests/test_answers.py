"""Shaping engine responses into the API's search and suggestion JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from catalog.mapping import PRICE_BUCKETS
from proxy.answers import correction, shape_search, shape_suggest, starts_near
from proxy.params import SearchRequest, SuggestRequest


def hit(doc_id: str, name: str, **source: Any) -> dict[str, Any]:
    full = {
        "id": doc_id,
        "name": name,
        "description": "A thing",
        "category": "props",
        "fandom": "Harry Potter",
        "price": 29.99,
        "currency": "GBP",
        "in_stock": True,
        "rating": 4.5,
        "seller": {"id": "9", "name": "Diagon Supplies"},
        "image_url": "https://img.example/1.jpg",
        "created_at": "2026-01-02T03:04:05Z",
    }
    full.update(source)
    return {"_index": "products_v1", "_id": doc_id, "_score": 3.2, "_source": full}


def engine_search(hits: list[dict[str, Any]], total: int = 57, **aggs: Any) -> dict[str, Any]:
    return {
        "took": 7,
        "timed_out": False,
        "hits": {"total": {"value": total, "relation": "eq"}, "max_score": 3.2, "hits": hits},
        "aggregations": aggs,
    }


def terms(*pairs: tuple[str, int]) -> dict[str, Any]:
    return {
        "doc_count": sum(c for _, c in pairs),
        "values": {"buckets": [{"key": k, "doc_count": c} for k, c in pairs]},
    }


def prices(**counts: int) -> dict[str, Any]:
    buckets = []
    for key, low, high in PRICE_BUCKETS:
        bucket: dict[str, Any] = {"key": key, "doc_count": counts.get(key, 0)}
        if low is not None:
            bucket["from"] = low
        if high is not None:
            bucket["to"] = high
        buckets.append(bucket)
    return {"doc_count": 57, "values": {"buckets": buckets}}


REQ = SearchRequest(q="hary poter", sort="relevance")


# --- search ------------------------------------------------------------------------------------------


def test_search_response_has_the_contract_shape() -> None:
    highlighted = hit("123", "Harry Potter Wand")
    highlighted["highlight"] = {"name": ["<em>Harry</em> <em>Potter</em> Wand"]}
    body = shape_search(
        REQ,
        engine_search(
            [highlighted],
            category=terms(("props", 12)),
            fandom=terms(("Harry Potter", 57)),
            price=prices(**{"20-50": 9}),
        ),
    )
    assert set(body) == {
        "query",
        "total",
        "total_relation",
        "page",
        "size",
        "pages",
        "items",
        "facets",
        "took_ms",
        "relaxed",
    }
    assert body["relaxed"] is False
    assert (body["query"], body["total"], body["total_relation"]) == ("hary poter", 57, "eq")
    assert (body["page"], body["size"], body["pages"], body["took_ms"]) == (1, 20, 3, 7)
    assert body["items"] == [
        {
            "id": "123",
            "name": "Harry Potter Wand",
            "description": "A thing",
            "category": "props",
            "fandom": "Harry Potter",
            "price": 29.99,
            "currency": "GBP",
            "in_stock": True,
            "rating": 4.5,
            "seller": {"id": "9", "name": "Diagon Supplies"},
            "image_url": "https://img.example/1.jpg",
            "created_at": "2026-01-02T03:04:05Z",
            "highlight": {"name": "<em>Harry</em> <em>Potter</em> Wand"},
        }
    ]
    assert body["facets"]["category"] == [{"value": "props", "count": 12}]
    assert body["facets"]["fandom"] == [{"value": "Harry Potter", "count": 57}]
    assert {"key": "20-50", "from": 20, "to": 50, "count": 9} in body["facets"]["price"]
    orjson.dumps(body)


def test_items_without_highlight_have_no_highlight_key() -> None:
    (item,) = shape_search(SearchRequest(), engine_search([hit("1", "Wand")]))["items"]
    assert "highlight" not in item


def test_missing_optional_fields_become_null() -> None:
    sparse = {"_id": "5", "_source": {"id": "5", "name": "Scarf", "price": 10, "seller": {"id": 9}}}
    (item,) = shape_search(SearchRequest(), engine_search([sparse]))["items"]
    assert item["rating"] is None
    assert item["image_url"] is None
    assert item["description"] == ""
    assert item["in_stock"] is False
    assert item["seller"] == {"id": "9", "name": None}


def test_null_rating_and_image_stay_null() -> None:
    (item,) = shape_search(SearchRequest(), engine_search([hit("1", "Wand", rating=None, image_url=None)]))["items"]
    assert item["rating"] is None and item["image_url"] is None


def test_escaped_highlight_is_passed_through() -> None:
    escaped = hit("1", "Wand <Elder> & Co")
    escaped["highlight"] = {"name": ["<em>Wand</em> &lt;Elder&gt; &amp; Co"]}
    (item,) = shape_search(REQ, engine_search([escaped]))["items"]
    assert item["highlight"] == {"name": "<em>Wand</em> &lt;Elder&gt; &amp; Co"}


def test_unescaped_highlight_is_dropped_rather_than_passed_on() -> None:
    raw = hit("1", "Wand <script>alert(1)</script>")
    raw["highlight"] = {"name": ["<em>Wand</em> <script>alert(1)</script>"]}
    (item,) = shape_search(REQ, engine_search([raw]))["items"]
    assert "highlight" not in item


def test_term_facets_are_sorted_by_count_then_value() -> None:
    body = shape_search(REQ, engine_search([], category=terms(("toys", 3), ("art", 5), ("books", 3), ("props", 9))))
    assert body["facets"]["category"] == [
        {"value": "props", "count": 9},
        {"value": "art", "count": 5},
        {"value": "books", "count": 3},
        {"value": "toys", "count": 3},
    ]


def test_price_facet_lists_every_bucket_in_order_with_null_open_ends() -> None:
    body = shape_search(REQ, engine_search([], price=prices(**{"0-10": 4, "250+": 1})))
    assert body["facets"]["price"] == [
        {"key": "0-10", "from": None, "to": 10, "count": 4},
        {"key": "10-20", "from": 10, "to": 20, "count": 0},
        {"key": "20-50", "from": 20, "to": 50, "count": 0},
        {"key": "50-100", "from": 50, "to": 100, "count": 0},
        {"key": "100-250", "from": 100, "to": 250, "count": 0},
        {"key": "250+", "from": 250, "to": None, "count": 1},
    ]


def test_facets_read_bare_aggregations_as_well_as_filtered_ones() -> None:
    # proxy.query sends a facet no other filter applies to as the bare aggregation.
    filtered = terms(("toys", 3), ("art", 5))
    bare = filtered["values"]
    shaped = shape_search(REQ, engine_search([], category=bare, fandom=filtered, price=prices(**{"0-10": 4})["values"]))
    assert (
        shaped["facets"]["category"]
        == shaped["facets"]["fandom"]
        == [
            {"value": "art", "count": 5},
            {"value": "toys", "count": 3},
        ]
    )
    assert shaped["facets"]["price"][0] == {"key": "0-10", "from": None, "to": 10, "count": 4}


def test_missing_aggregations_give_empty_facets() -> None:
    engine = engine_search([hit("1", "Wand")])
    del engine["aggregations"]
    facets = shape_search(REQ, engine)["facets"]
    assert facets["category"] == [] and facets["fandom"] == []
    assert [b["count"] for b in facets["price"]] == [0] * len(PRICE_BUCKETS)


@pytest.mark.parametrize(
    ("total", "size", "pages"),
    [(0, 20, 0), (1, 20, 1), (20, 20, 1), (21, 20, 2), (57, 20, 3), (1_000_000, 20, 500), (1_000_000, 100, 100)],
)
def test_pages_counts_only_reachable_pages(total: int, size: int, pages: int) -> None:
    assert shape_search(SearchRequest(size=size), engine_search([], total=total))["pages"] == pages


def test_integer_total_and_gte_relation_are_understood() -> None:
    engine = engine_search([])
    engine["hits"]["total"] = 12
    assert shape_search(REQ, engine)["total"] == 12
    engine["hits"]["total"] = {"value": 10_000, "relation": "gte"}
    assert shape_search(REQ, engine)["total_relation"] == "gte"


def test_empty_engine_response_is_an_empty_result() -> None:
    body = shape_search(REQ, {})
    assert (body["total"], body["items"], body["took_ms"], body["pages"]) == (0, [], 0, 0)


# --- suggestions ------------------------------------------------------------------------------------------


def engine_suggest(
    names: list[tuple[str, str]],
    fandoms: Sequence[str] = (),
    categories: Sequence[str] = (),
    fuzzy_fandoms: Sequence[str] = (),
) -> dict[str, Any]:
    def agg(keys: Sequence[str]) -> dict[str, Any]:
        return {"doc_count": 1, "values": {"buckets": [{"key": k, "doc_count": 10 - i} for i, k in enumerate(keys)]}}

    return {
        "took": 2,
        "hits": {"hits": [{"_id": i, "_source": {"id": i, "name": n}} for i, n in names]},
        "aggregations": {
            "taxonomy": {
                "doc_count": 100,
                "fandom": agg(fandoms),
                "category": agg(categories),
                "fandom_fuzzy": agg(fuzzy_fandoms),
                "category_fuzzy": agg([]),
            }
        },
    }


def test_taxonomy_is_read_at_the_top_as_the_engine_answers_and_under_taxonomy_as_the_fallback() -> None:
    fallback = engine_suggest([("123", "Harry Potter Wand")], fandoms=["Harry Potter"])
    engine = {**fallback, "aggregations": fallback["aggregations"]["taxonomy"]}
    req = SuggestRequest(q="har", size=8)
    assert shape_suggest(req, engine) == shape_suggest(req, fallback)
    assert shape_suggest(req, engine)["suggestions"][0] == {"text": "Harry Potter", "type": "fandom"}


def test_hits_that_matched_only_a_fandom_or_category_name_are_not_product_suggestions() -> None:
    engine = engine_suggest([("1", "Elder Wand"), ("2", "Hogwarts Mug"), ("3", "Hedwig Plush")])
    for hit, score in zip(engine["hits"]["hits"], (2.0, 0.0, 0.0), strict=True):
        hit["_score"] = score
    shaped = shape_suggest(SuggestRequest(q="elder", size=8), engine)
    assert [s["text"] for s in shaped["suggestions"] if s["type"] == "product"] == ["Elder Wand"]


def test_fandom_starting_with_the_prefix_comes_first() -> None:
    body = shape_suggest(
        SuggestRequest(q="har", size=8),
        engine_suggest([("123", "Harry Potter Wand"), ("124", "Hardcover Journal")], fandoms=["Harry Potter"]),
    )
    assert body == {
        "query": "har",
        "suggestions": [
            {"text": "Harry Potter", "type": "fandom"},
            {"text": "Harry Potter Wand", "type": "product", "id": "123"},
            {"text": "Hardcover Journal", "type": "product", "id": "124"},
        ],
    }


def test_prefix_match_ignores_case_and_accents() -> None:
    body = shape_suggest(SuggestRequest(q="POKE", size=3), engine_suggest([("1", "Poke Ball")], fandoms=["Pokémon"]))
    assert body["suggestions"][0] == {"text": "Pokémon", "type": "fandom"}


def test_products_come_first_when_no_fandom_starts_with_the_prefix() -> None:
    products = [(str(i), f"Potter thing {i}") for i in range(10)]
    body = shape_suggest(SuggestRequest(q="potter", size=8), engine_suggest(products, fandoms=["Harry Potter"]))
    kinds = [s["type"] for s in body["suggestions"]]
    # The last slots are kept for the fandom, so a page of products cannot crowd it out.
    assert kinds == ["product"] * 7 + ["fandom"]


def test_exact_prefix_taxonomy_before_typo_matches() -> None:
    body = shape_suggest(
        SuggestRequest(q="pokmon", size=8),
        engine_suggest([], fandoms=[], categories=["pokmon cards"], fuzzy_fandoms=["Pokémon", "pokmon cards"]),
    )
    assert [s["text"] for s in body["suggestions"]] == ["pokmon cards", "Pokémon"]
    assert body["suggestions"][0]["type"] == "category"


def test_suggestions_are_deduplicated_case_insensitively() -> None:
    body = shape_suggest(
        SuggestRequest(q="elder", size=8),
        engine_suggest([("1", "Elder Wand"), ("2", "ELDER WAND"), ("3", " elder  wand "), ("4", "Elder Staff")]),
    )
    assert body["suggestions"] == [
        {"text": "Elder Wand", "type": "product", "id": "1"},
        {"text": "Elder Staff", "type": "product", "id": "4"},
    ]


def test_taxonomy_name_wins_over_a_product_with_the_same_text() -> None:
    body = shape_suggest(
        SuggestRequest(q="wand", size=8), engine_suggest([("1", "Wand")], categories=["wands", "WAND"])
    )
    assert body["suggestions"] == [{"text": "wands", "type": "category"}, {"text": "WAND", "type": "category"}]


def test_at_most_size_suggestions() -> None:
    products = [(str(i), f"Harry thing {i}") for i in range(40)]
    body = shape_suggest(SuggestRequest(q="har", size=5), engine_suggest(products, fandoms=["Harry Potter", "Hardy"]))
    assert len(body["suggestions"]) == 5


def test_only_products_carry_an_id() -> None:
    body = shape_suggest(SuggestRequest(q="har"), engine_suggest([("7", "Harp")], fandoms=["Harry Potter"]))
    for suggestion in body["suggestions"]:
        assert ("id" in suggestion) == (suggestion["type"] == "product")


def test_empty_engine_response_gives_no_suggestions() -> None:
    assert shape_suggest(SuggestRequest(q="zzz"), {}) == {"query": "zzz", "suggestions": []}


def test_a_relaxed_answer_says_so_and_names_the_correction_it_shows() -> None:
    body = shape_search(REQ, engine_search([hit("1", "Harry Potter Wand")]), relaxed=True, did_you_mean="harry potter")
    assert body["relaxed"] is True and body["did_you_mean"] == "harry potter"
    body = shape_search(REQ, engine_search([hit("1", "Harry Potter Wand")]), relaxed=True)
    assert body["relaxed"] is True and "did_you_mean" not in body


def _term_suggest(*entries: tuple[str, int, list[str]]) -> dict[str, Any]:
    return {
        "suggest": {
            "spelling": [
                {
                    "text": text,
                    "offset": offset,
                    "length": len(text),
                    "options": [{"text": o, "score": 0.8} for o in opts],
                }
                for text, offset, opts in entries
            ]
        }
    }


def test_correction_replaces_each_corrected_word_in_place() -> None:
    engine = _term_suggest(("okemon", 0, ["pokemon"]), ("plush", 7, []))
    assert correction("okemon plush", engine) == "pokemon plush"
    engine = _term_suggest(("hary", 2, ["harry"]), ("poter", 7, ["potter"]))
    assert correction("  hary poter!", engine) == "  harry potter!"


def test_no_correction_without_options_or_when_only_case_differs() -> None:
    assert correction("pokemon", {}) is None
    assert correction("pokemon", _term_suggest(("pokemon", 0, []))) is None
    assert correction("Pokemon", _term_suggest(("Pokemon", 0, ["pokemon"]))) is None


def test_correction_ignores_offsets_outside_the_query() -> None:
    assert correction("abc", _term_suggest(("abcdef", 0, ["abcdeg"]))) is None


@pytest.mark.parametrize(
    ("name", "typed", "near"),
    [
        ("pokemon", "pokmon", True),
        ("pokemon center", "pokmon", True),
        ("potion", "pokmon", False),
        ("star wars", "star wras", True),
        ("harry potter", "hary", True),
        ("harry potter", "hry", False),  # no typos under 4 letters
        ("sailor moon", "pokmon", False),
    ],
)
def test_a_name_starts_near_a_typo_of_its_beginning(name: str, typed: str, near: bool) -> None:
    assert starts_near(name, typed) is near


def test_the_corrected_fandom_leads_the_suggestions() -> None:
    products = [(str(i), f"Swallow Potion Earrings {i}") for i in range(10)]
    body = shape_suggest(SuggestRequest(q="pokmon", size=8), engine_suggest(products, fuzzy_fandoms=["Pokémon"]))
    assert body["suggestions"][0] == {"text": "Pokémon", "type": "fandom"}
