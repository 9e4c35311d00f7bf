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

from catalog.mapping import INDEX_SORT, PRICE_BUCKETS, index_settings
from proxy.errors import InvalidParameters
from proxy.params import MAX_SUGGEST_QUERY_CHARS, SearchRequest, SuggestRequest, parse_search
from proxy.query import FACET_VALUES, SUGGEST_FUZZY_WORDS, TAXONOMY_ONLY_SCORE, build_search, build_suggest
from proxy.synonyms import DEFAULT_SYNONYMS_PATH, SynonymError, load_synonyms, parse_synonyms, words

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


def _multi_matches(node: Any) -> list[dict[str, Any]]:
    """Every multi_match clause in a query tree, in order."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "multi_match":
                found.append(value)
            found.extend(_multi_matches(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_multi_matches(value))
    return found


def test_every_word_must_match_in_some_field_with_typo_tolerance() -> None:
    body = build_search(SearchRequest(q="hary poter", sort="relevance"))
    must = body["query"]["bool"]["must"]
    assert len(must) == 2  # one clause per word: every word is required
    for clause, word in zip(must, ["hary", "poter"], strict=True):
        exact, typo = (c["multi_match"] for c in clause["bool"]["should"][:2])
        # Cross-field: the word may be in the name, the fandom, the category or the description.
        assert exact == {"query": word, "type": "cross_fields", "fields": exact["fields"]}
        assert {f.split("^")[0] for f in exact["fields"]} == {"name", "fandom.text", "category.text", "description"}
        assert typo["query"] == word and typo["fuzziness"] == 1 and typo["prefix_length"] == 1


def test_name_and_fandom_outweigh_category_and_description() -> None:
    (clause,) = build_search(SearchRequest(q="plush", sort="relevance"))["query"]["bool"]["must"]
    fields = dict(f.split("^") for f in _multi_matches(clause)[0]["fields"])
    weights = {name: float(weight) for name, weight in fields.items()}
    assert weights["name"] == weights["fandom.text"] > weights["category.text"] > weights["description"]


def test_typo_matches_score_far_below_exact_words() -> None:
    (clause,) = build_search(SearchRequest(q="wands", sort="relevance"))["query"]["bool"]["must"]
    exact, typo, _prefix = _multi_matches(clause)
    assert "fuzziness" not in exact and exact.get("boost", 1.0) == 1.0
    assert typo["boost"] <= 0.1
    assert "description" not in {f.split("^")[0] for f in typo["fields"]}


@pytest.mark.parametrize(
    ("word", "edits"), [("pikachu", 2), ("pokmon", 1), ("wras", 1), ("scarves", 1), ("hermoine", 2)]
)
def test_typo_distance_follows_the_typed_word(word: str, edits: int) -> None:
    (clause,) = build_search(SearchRequest(q=word, sort="relevance"))["query"]["bool"]["must"]
    assert [m["fuzziness"] for m in _multi_matches(clause) if "fuzziness" in m] == [edits]


@pytest.mark.parametrize("q", ["tee", "mug", "t-shirt", "a", "60cm"])
def test_short_words_and_numbers_get_no_typo_matching(q: str) -> None:
    body = build_search(SearchRequest(q=q + " marvel", sort="relevance"))
    first = body["query"]["bool"]["must"][0]
    assert all("fuzziness" not in m for m in _multi_matches(first))


def test_the_typed_phrase_in_the_name_ranks_first() -> None:
    should = build_search(SearchRequest(q="elder wand", sort="relevance"))["query"]["bool"]["should"]
    phrase = next(c["match_phrase"]["name"] for c in should if "match_phrase" in c)
    assert phrase["query"] == "elder wand" and phrase["boost"] > 1


def test_the_last_word_may_be_a_prefix_still_being_typed() -> None:
    first, last = build_search(SearchRequest(q="harry pot", sort="relevance"))["query"]["bool"]["must"]
    assert not any("name.prefix" in m["fields"] for m in _multi_matches(first))
    prefix = next(m for m in _multi_matches(last) if "name.prefix" in m["fields"])
    assert prefix["query"] == "pot" and prefix["boost"] < 0.1


def test_query_of_only_punctuation_matches_nothing() -> None:
    query = build_search(SearchRequest(q="*", sort="relevance"))["query"]
    assert query == {
        "bool": {
            "must": [
                {
                    "match_phrase": {
                        "name": {"query": "*", "boost": query["bool"]["must"][0]["match_phrase"]["name"]["boost"]}
                    }
                }
            ]
        }
    }


# --- synonyms ------------------------------------------------------------------------------------

SYNONYMS = parse_synonyms(
    """
    # comment
    plush, plushie, soft toy
    tee, t-shirt, tshirt
    lightsabre => lightsaber
    """
)


def test_synonym_file_groups_and_replacements() -> None:
    assert SYNONYMS.rules[("plushie",)] == (("plushie",), ("plush",), ("soft", "toy"))
    assert SYNONYMS.rules[("t", "shirt")] == (("t", "shirt"), ("tee",), ("tshirt",))
    assert SYNONYMS.rules[("lightsabre",)] == (("lightsaber",),)  # replaced, not kept
    assert SYNONYMS.longest == 2


@pytest.mark.parametrize("text", ["a b", "a, ,b", "x => y => z", ", ,", "a, b c d e f"])
def test_a_bad_synonym_line_is_reported_with_its_number(text: str) -> None:
    with pytest.raises(SynonymError, match="line 2"):
        parse_synonyms("ok, fine\n" + text)


def test_synonyms_expand_typed_words_longest_first_plurals_included() -> None:
    units = SYNONYMS.expand(words("Pokémon soft toys T-Shirt"))
    assert [u.typed for u in units] == [("pokemon",), ("soft", "toys"), ("t", "shirt")]
    assert units[0].alternatives == ()
    assert ("plush",) in units[1].alternatives
    assert ("tshirt",) in units[2].alternatives


def test_synonym_alternatives_are_one_clause_scored_by_the_best_one() -> None:
    body = build_search(SearchRequest(q="pokemon soft toy", sort="relevance"), SYNONYMS)
    _word, synonyms = body["query"]["bool"]["must"]
    alternatives = synonyms["dis_max"]["queries"]
    phrase = alternatives[0]["multi_match"]
    assert phrase["query"] == "soft toy" and phrase["type"] == "phrase"  # what was typed, as a phrase
    singles = [a["multi_match"] for a in alternatives[1:]]
    assert {m["query"] for m in singles} == {"plush", "plushie"}
    assert all(m["boost"] < 1 for m in singles)  # synonyms count a little less than the typed words


def test_replacement_synonyms_search_only_the_replacement() -> None:
    (clause,) = build_search(SearchRequest(q="lightsabre", sort="relevance"), SYNONYMS)["query"]["bool"]["must"]
    assert [m["query"] for m in _multi_matches(clause)] == ["lightsaber"]


def test_the_shipped_synonym_file_parses() -> None:
    synonyms = load_synonyms(DEFAULT_SYNONYMS_PATH)
    assert len(synonyms) > 50
    assert ("plushie",) in synonyms.rules[("plush",)]


# --- zero-result recovery --------------------------------------------------------------------------


def test_relaxed_search_requires_all_but_one_word_and_asks_for_a_spelling() -> None:
    req = SearchRequest(q="gryffindor wool scarf", sort="relevance", categories=("apparel",))
    body = build_search(req, relaxed=True)
    (required,) = body["query"]["bool"]["must"]
    assert required["bool"]["minimum_should_match"] == 2
    assert len(required["bool"]["should"]) == 3
    # All but the last word together rank first: a flat bonus over any text score.
    head = next(c["constant_score"] for c in body["query"]["bool"]["should"] if "constant_score" in c)
    assert len(head["filter"]["bool"]["must"]) == 2 and head["boost"] >= 100
    suggester = body["suggest"]
    assert suggester["text"] == "gryffindor wool scarf"
    assert suggester["spelling"]["term"]["field"] == "spell"
    assert suggester["spelling"]["term"]["suggest_mode"] == "missing"
    # Filters and facets are the strict search's.
    strict = build_search(req)
    assert body["post_filter"] == strict["post_filter"] and body["aggs"] == strict["aggs"]


def test_a_single_word_relaxes_to_itself() -> None:
    (required,) = build_search(SearchRequest(q="okemon", sort="relevance"), relaxed=True)["query"]["bool"]["must"]
    assert required["bool"]["minimum_should_match"] == 1


def test_a_corrected_search_is_the_strict_search_for_the_correction() -> None:
    req = SearchRequest(q="okemon plush", sort="relevance")
    assert build_search(req, text="pokemon plush") == build_search(SearchRequest(q="pokemon plush", sort="relevance"))
    assert "suggest" not in build_search(req)


def test_a_pasted_paragraph_stays_within_the_clause_budget() -> None:
    q = " ".join(f"word{i}x" for i in range(60))[:200]
    body = build_search(SearchRequest(q=q, sort="relevance"))
    clauses = body["query"]["bool"]["must"]
    assert len(clauses) <= 25
    assert sum("fuzziness" in m for m in _multi_matches(body)) <= 6


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
    """The filters a facet's aggregation applies on top of the query (none: the bare aggregation)."""
    agg = body["aggs"][facet]
    return agg["filter"]["bool"]["filter"] if "filter" in agg else []


def test_facet_filters_go_in_post_filter_so_facets_see_matches_without_them() -> None:
    body = build_search(FILTERED)
    post = body["post_filter"]["bool"]["filter"]
    for clause in (CATEGORY_CLAUSE, FANDOM_CLAUSE, PRICE_CLAUSE):
        assert clause in post
    assert len(post) == 3


def test_filters_no_facet_counts_without_go_in_the_query() -> None:
    body = build_search(FILTERED)
    (text,) = body["query"]["bool"]["must"]
    assert text == build_search(SearchRequest(q=FILTERED.q))["query"]
    assert body["query"]["bool"]["filter"] == [SELLER_CLAUSE, STOCK_CLAUSE]
    for facet in ("category", "fandom", "price"):
        assert SELLER_CLAUSE not in facet_filters(body, facet) and STOCK_CLAUSE not in facet_filters(body, facet)
    browse = build_search(SearchRequest(in_stock=True))
    assert browse["query"] == {"bool": {"filter": [STOCK_CLAUSE]}} and "post_filter" not in browse


def test_price_filter_includes_both_bounds() -> None:
    assert PRICE_CLAUSE in build_search(SearchRequest(min_price=10.0, max_price=50.0))["post_filter"]["bool"]["filter"]


def test_open_price_bound_is_left_out() -> None:
    (clause,) = build_search(SearchRequest(min_price=5.0))["post_filter"]["bool"]["filter"]
    assert clause == {"range": {"price": {"gte": 5.0}}}
    (clause,) = build_search(SearchRequest(max_price=5.0))["post_filter"]["bool"]["filter"]
    assert clause == {"range": {"price": {"lte": 5.0}}}


def test_in_stock_false_filters_to_out_of_stock() -> None:
    body = build_search(SearchRequest(in_stock=False))
    assert body["query"]["bool"]["filter"] == [{"term": {"in_stock": False}}]


def test_category_facet_applies_every_filter_but_its_own() -> None:
    filters = facet_filters(build_search(FILTERED), "category")
    assert CATEGORY_CLAUSE not in filters
    assert {orjson.dumps(c) for c in filters} == {orjson.dumps(c) for c in (FANDOM_CLAUSE, PRICE_CLAUSE)}


def test_fandom_facet_applies_every_filter_but_its_own() -> None:
    filters = facet_filters(build_search(FILTERED), "fandom")
    assert FANDOM_CLAUSE not in filters
    assert CATEGORY_CLAUSE in filters and PRICE_CLAUSE in filters


def test_price_facet_applies_every_filter_but_its_own() -> None:
    filters = facet_filters(build_search(FILTERED), "price")
    assert PRICE_CLAUSE not in filters
    assert CATEGORY_CLAUSE in filters and FANDOM_CLAUSE in filters


def test_only_filter_is_own_facet_filter_leaves_that_facet_unfiltered() -> None:
    body = build_search(SearchRequest(categories=("props",)))
    # The bare aggregation, not one under a match_all filter: that wrapper cost a check per match.
    assert body["aggs"]["category"] == build_search(SearchRequest())["aggs"]["category"]
    assert "filter" not in body["aggs"]["category"]
    assert facet_filters(body, "fandom") == [{"terms": {"category": ["props"]}}]


def test_facet_aggregations_count_terms_and_labelled_price_ranges() -> None:
    aggs = build_search(SearchRequest())["aggs"]
    assert aggs == {facet: agg["aggs"][FACET_VALUES] for facet, agg in build_search(FILTERED)["aggs"].items()}
    assert aggs["category"]["terms"]["field"] == "category"
    assert aggs["category"]["terms"]["size"] >= 50
    assert aggs["fandom"]["terms"]["field"] == "fandom"
    assert aggs["fandom"]["terms"]["size"] >= 100
    price = aggs["price"]["range"]
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
    name, *_ = body["query"]["bool"]["should"]
    match = name["constant_score"]["filter"]["match"]["name.prefix"]
    assert match == {"query": "har", "operator": "and"}
    assert body["_source"] == ["id", "name"]
    assert body["size"] >= 8


def test_long_prefix_suggest_tolerates_typos() -> None:
    body = build_suggest(SuggestRequest(q="hermoi", size=8))
    name, *_ = body["query"]["bool"]["should"]
    should = name["bool"]["should"]
    exact, fuzzy = should
    assert exact["constant_score"]["boost"] > fuzzy["constant_score"]["boost"]  # exact prefixes rank first
    assert "fuzziness" not in exact["constant_score"]["filter"]["match"]["name.prefix"]
    fuzzy_match = fuzzy["constant_score"]["filter"]["match"]["name.prefix"]
    assert fuzzy_match["fuzziness"] == "AUTO" and fuzzy_match["query"] == "hermoi"
    assert {"fandom", "category", "fandom_fuzzy", "category_fuzzy"} == set(body["aggs"])


def _match_clauses(node: Any) -> Iterator[dict[str, Any]]:
    """Every ``match`` clause's field options in a body."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "match":
                yield from value.values()
            else:
                yield from _match_clauses(value)
    elif isinstance(node, list):
        for value in node:
            yield from _match_clauses(value)


def test_a_long_suggestion_prefix_expands_only_its_first_words_for_typos() -> None:
    # Issue 23: every word of a 100-character prefix got fuzzy expansion, on every keystroke.
    typed = [f"wrd{chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(16)]
    q = " ".join(typed)
    assert len(q) <= MAX_SUGGEST_QUERY_CHARS
    clauses = list(_match_clauses(build_suggest(SuggestRequest(q=q))))
    fuzzy = [clause for clause in clauses if "fuzziness" in clause]
    assert fuzzy and all(len(clause["query"].split()) <= SUGGEST_FUZZY_WORDS for clause in fuzzy)
    # Every word still has to match: the ones past the cap exactly, as a prefix.
    for clause in fuzzy:
        assert any(clause["query"] + " " + other["query"] == q for other in clauses if "fuzziness" not in other)


def test_equally_matching_names_are_ordered_by_rating() -> None:
    body = build_suggest(SuggestRequest(q="pikachu", size=8))
    assert body["sort"] == [{"_score": "desc"}, {"rating": {"order": "desc", "missing": "_last"}}, {"id": "asc"}]


def test_suggest_finds_fandoms_and_categories_by_their_own_names_in_the_same_request() -> None:
    body = build_suggest(SuggestRequest(q="har", size=5))
    name, *taxonomy = body["query"]["bool"]["should"]
    # The query also matches products by their fandom or category name, scoring nothing (the
    # shaper drops such hits), so those names are counted without a pass over the whole catalog,
    # and without a post_filter that would expand the name's typos twice.
    assert "post_filter" not in body
    assert name == build_suggest(SuggestRequest(q="har", size=5))["query"]["bool"]["should"][0]
    for kind, part in zip(("fandom", "category"), taxonomy, strict=True):
        prefix = {"match": {f"{kind}.prefix": {"query": "har", "operator": "and"}}}
        assert part == {"constant_score": {"filter": prefix, "boost": TAXONOMY_ONLY_SCORE}}
        agg = body["aggs"][kind]
        assert agg["filter"] == prefix
        assert agg["aggs"][FACET_VALUES]["terms"]["field"] == kind
        assert agg["aggs"][FACET_VALUES]["terms"]["size"] == 5
    assert "global" not in clause_kinds(body)


def test_suggest_query_matches_what_every_taxonomy_aggregation_counts() -> None:
    body = build_suggest(SuggestRequest(q="pokmon", size=5))
    _, *taxonomy = body["query"]["bool"]["should"]
    # The typo-tolerant match includes the exact one: it alone widens the query.
    assert [part["constant_score"]["filter"] for part in taxonomy] == [
        body["aggs"]["fandom_fuzzy"]["filter"],
        body["aggs"]["category_fuzzy"]["filter"],
    ]


@pytest.mark.parametrize("q", ["st", "har", "hermoine", "star wras"])
def test_with_the_taxonomy_held_the_engine_is_asked_for_product_names_only(q: str) -> None:
    # Counting fandoms and categories in the engine visited every product of each matching one
    # on every keystroke: 67,874 documents for "st" at 150k products, 16,128 without (issue 24).
    req = SuggestRequest(q=q, size=8)
    counted, names_only = build_suggest(req), build_suggest(req, count_taxonomy=False)
    assert "aggs" not in names_only
    assert names_only["query"] == counted["query"]["bool"]["should"][0]
    # The sort may differ (the index order for a short prefix, below); nothing else does.
    assert {k: v for k, v in names_only.items() if k not in ("query", "sort")} == {
        k: v for k, v in counted.items() if k not in ("query", "aggs", "sort")
    }


@pytest.mark.parametrize("q", ["h", "st", "har", "a b"])
def test_a_short_prefix_sorts_in_the_index_order_so_the_engine_can_stop_early(q: str) -> None:
    # Exact prefixes only, so every name match scores alike: sorting by score adds nothing, and
    # sorting exactly as the index is sorted lets the engine stop after the first hits per segment
    # ("st": 16,128 documents visited, 17 with the index order).
    body = build_suggest(SuggestRequest(q=q, size=8), count_taxonomy=False)
    assert "fuzziness" not in clause_kinds(body)
    fields = [next(iter(clause)) for clause in body["sort"]]
    orders = [
        clause[field] if isinstance(clause[field], str) else clause[field]["order"]
        for clause, field in zip(body["sort"], fields, strict=True)
    ]
    missing = [
        clause[field].get("missing", "_last") if isinstance(clause[field], dict) else "_last"
        for clause, field in zip(body["sort"], fields, strict=True)
    ]
    assert {"field": fields, "order": orders, "missing": missing} == INDEX_SORT
    assert index_settings()["sort"] == INDEX_SORT
    # Typo matches score below exact ones: a longer prefix still sorts by score first.
    assert build_suggest(SuggestRequest(q="hermoine"), count_taxonomy=False)["sort"][0] == {"_score": "desc"}


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
    # The query's own texts, as the body writes them ('0:' is searched as '0'): a category of the
    # same text rightly appears there too (Hypothesis found q='0:', category='0').
    query_texts = {value for path, value in leaves(body) if is_text_query_path(path)}
    for value in req.categories:
        assume(value not in _STATIC and value != req.q and value not in query_texts)
        for path in user_text_paths(body, value):
            assert path[-1] == "category" and path[-2] == "terms", path
    assert not clause_kinds(body) & {"query_string", "simple_query_string"}
