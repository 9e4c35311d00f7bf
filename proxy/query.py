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

Shape of the engine request the result shaper (``proxy.answers``) relies on:

- ``aggregations.<facet>`` for ``category``, ``fandom`` (terms buckets) and ``price`` (range
  buckets keyed by ``catalog.mapping.PRICE_BUCKETS`` labels): the buckets themselves when no
  other filter applies to that facet, else under ``<facet>.<FACET_VALUES>`` (a ``filter``
  aggregation around them). Price facet buckets are ``[from, to)`` as the engine's range
  aggregation counts them, while the ``min_price``/``max_price`` filter includes both ends
  (``gte``/``lte``): ``max_price=20`` includes a 20.00 product that the "20-50" chip counts.
- Suggestions: ``aggregations.<kind>[_fuzzy].<FACET_VALUES>`` (the Postgres fallback answers
  them under ``aggregations.<SUGGEST_TAXONOMY>``).

Elasticsearch 9 refuses to sort or aggregate on ``_id``: the tie-breaker is the ``id`` keyword.

The text query (:func:`text_query`), in one sentence: every typed word (or synonym term, see
``proxy.synonyms``) must match in *some* field — name, fandom, category or description — as if
they were one field (``multi_match`` ``cross_fields``; ``combined_fields`` would be BM25F-purer
but OpenSearch only has it from 3.2), weighted name = fandom > category > description; a word
that matches no field exactly may match within an edit or two (only words of 4+ letters,
scored far below exact words); the typed phrase in the name ranks first. Plurals, compounds
("t-shirt" = "tshirt" = "t shirt") and accents are the analyzers' job (``catalog.mapping``).
When that finds nothing, ``proxy.relaxation`` asks again with :func:`build_search`'s
``relaxed=True`` (fewer words must match, plus a spelling suggestion) and possibly with
``text=`` a corrected query.
"""

from __future__ import annotations

import re
from typing import Any, Final

from catalog.mapping import PRICE_BUCKETS, SPELL_FIELD
from proxy.params import SearchRequest, Sort, SuggestRequest
from proxy.synonyms import EMPTY as NO_SYNONYMS
from proxy.synonyms import Synonyms, Unit, words

# Names the result shaper reads back.
FACET_VALUES: Final = "values"
SUGGEST_TAXONOMY: Final = "taxonomy"
FUZZY_SUFFIX: Final = "_fuzzy"
TAXONOMY_KINDS: Final = ("fandom", "category")
# The term suggester's name in a relaxed search (read back by ``proxy.answers.correction``).
SPELLING: Final = "spelling"

# Where a word may match, and how much each field counts. Name and fandom are what a shopper
# names; category is the product type ("plush", "posters"); description only supports.
# Lists, not tuples: some JSON encoders and engine mocks only accept lists.
_TEXT_FIELDS: Final = ["name^3", "fandom.text^3", "category.text^2", "description^0.5"]
# Typo matching skips the description: its many generic words make false friends.
_FUZZY_FIELDS: Final = ["name^3", "fandom.text^3", "category.text^2"]
# An exact word outweighs any typo match of it many times over: a typo match only decides
# among products that lack the word itself ("wands": wands, not "Wanda").
_FUZZY_BOOST: Final = 0.05
# A synonym counts a little less than the word typed.
_SYNONYM_BOOST: Final = 0.9
# The typed words as a phrase in the name: "elder wand" -> "Elder Wand Replica" first.
_PHRASE_BOOST: Final = 4.0
# Typos: none below 4 letters (short words are too close to everything), one edit from 4,
# two from 7 ("pokmon" -> "pokemon", not "potion"). Counted on the word as typed, not as the
# engine stems it ("wras" is 4 letters, though its stem "wra" has 3). The first letter is
# rarely the typo, and fixing it makes fuzzy expansion far cheaper.
FUZZY_MIN_WORD_CHARS: Final = 4
FUZZY_TWO_EDITS_CHARS: Final = 7
_PREFIX_LENGTH: Final = 1
_MAX_EXPANSIONS: Final = 10
# The last word as a prefix of a name or fandom word (edge n-grams, ``catalog.mapping``), from
# three letters: "harry pot", "dragon bal". Scored below exact and typo matches.
_PREFIX_MATCH_FIELDS: Final = ["name.prefix", "fandom.prefix"]
_PREFIX_MIN_CHARS: Final = 3
_PREFIX_BOOST: Final = 0.03
# Relaxed search: matching all but the last unit outranks any other partial match (a flat
# bonus above any text score), and each typed word inside a multi-word term adds a little.
_RELAXED_HEAD_BONUS: Final = 1000.0
_RELAXED_WORD_BOOST: Final = 1.0
# Bounds the clauses of a long query (the engine caps a query's total clauses at 1024).
_MAX_FUZZY_WORDS: Final = 6
_MAX_UNITS: Final = 24

FACET_SIZES: Final = {"category": 50, "fandom": 100}
# Filters no facet counts without: every facet applies them, so they belong in the query itself.
_NON_FACET_FILTERS: Final = frozenset({"seller_id", "in_stock"})
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
        for facet, size in FACET_SIZES.items()
    },
    "price": {"range": {"field": "price", "ranges": _PRICE_RANGES}},
}

# Suggestions: typo tolerance starts at this many characters; shorter prefixes are too
# ambiguous for edits to help ("ha" is one edit away from half the catalogue).
FUZZY_MIN_CHARS: Final = 4
# Words of a suggestion prefix that get typo expansion (each expands to up to 50 terms per
# field, on every keystroke): a 100-character prefix of 50 words expanded every one (issue 23).
# Words after these must match exactly. Words as the engine's analyzer splits them.
SUGGEST_FUZZY_WORDS: Final = 4
_SUGGEST_WORD: Final = re.compile(r"\w+")
# Edge n-gram fields (catalog.mapping): every prefix of every word is a term.
_PREFIX_FIELDS: Final = {"name": "name.prefix", "fandom": "fandom.prefix", "category": "category.prefix"}
_EXACT_PREFIX_BOOST: Final = 2.0
_SUGGEST_SOURCE: Final = ["id", "name"]
# Among names that match equally, the better-rated product first (the catalog's popularity
# signal); then the id, so equal answers come back in the same order.
_SUGGEST_SORT: Final = [{"_score": "desc"}, {"rating": {"order": "desc", "missing": "_last"}}, _TIE_BREAK]
# When every hit scores alike (exact prefixes only, no taxonomy matches): the index's own order
# (``catalog.mapping.INDEX_SORT``), so the engine stops after the first hits of each segment.
_SUGGEST_INDEX_ORDER: Final = _SUGGEST_SORT[1:]
# A suggestion hit scoring this matched a fandom or category name only, not its own name:
# every name match scores at least 1 (``_exact_or_fuzzy``).
TAXONOMY_ONLY_SCORE: Final = 0.0
# Several sellers list the same name; shaping de-duplicates names, so fetch spare hits.
SUGGEST_HIT_FACTOR: Final = 2


def _filters(req: SearchRequest) -> dict[str, dict[str, Any]]:
    """Each active filter clause, keyed by the facet it belongs to (or by the filter's name for
    non-facet ones, :data:`_NON_FACET_FILTERS`)."""
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


def _word(word: str, *, fuzzy: bool, prefix: bool = False, boost: float | None = None) -> dict[str, Any]:
    """One word in any field; with ``fuzzy``, a typo'd spelling matches too, far below; with
    ``prefix``, a word of a name or fandom that starts with it (the word still being typed)."""
    exact: dict[str, Any] = {"query": word, "type": "cross_fields", "fields": _TEXT_FIELDS}
    if boost is not None:
        exact["boost"] = boost
    if not fuzzy and not prefix:
        return {"multi_match": exact}
    alternatives: list[dict[str, Any]] = [{"multi_match": exact}]
    if fuzzy:
        typo = {
            "query": word,
            "fields": _FUZZY_FIELDS,
            "fuzziness": typo_edits(word),
            "prefix_length": _PREFIX_LENGTH,
            "max_expansions": _MAX_EXPANSIONS,
            "boost": _FUZZY_BOOST,
        }
        alternatives.append({"multi_match": typo})
    if prefix:
        alternatives.append({"multi_match": {"query": word, "fields": _PREFIX_MATCH_FIELDS, "boost": _PREFIX_BOOST}})
    return {"bool": {"should": alternatives}}


def typo_edits(word: str) -> int:
    """Edits a typed word of 4+ letters may be off by: 1, or 2 from 7 letters — counting its
    singular, as the engine compares stems ("scarves" is "scarf": one edit, not two)."""
    singular = word
    if len(word) > 4 and word.endswith("s") and not word.endswith(("ss", "us")):
        singular = word[:-3] if word.endswith(("ves", "xes", "ches", "shes", "sses")) else word[:-1]
    return 2 if len(singular) >= FUZZY_TWO_EDITS_CHARS else 1


def _phrase(term: tuple[str, ...], boost: float | None) -> dict[str, Any]:
    """A synonym alternative: one word across fields, or several as a phrase in one field."""
    if len(term) == 1:
        return _word(term[0], fuzzy=False, boost=boost)
    clause: dict[str, Any] = {"query": " ".join(term), "type": "phrase", "fields": _TEXT_FIELDS}
    if boost is not None:
        clause["boost"] = boost
    return {"multi_match": clause}


def _unit_clauses(units: list[Unit]) -> list[dict[str, Any]]:
    clauses = []
    fuzzy_left = _MAX_FUZZY_WORDS
    last = min(len(units), _MAX_UNITS) - 1
    for position, unit in enumerate(units[:_MAX_UNITS]):
        if not unit.alternatives:
            (word,) = unit.typed
            fuzzy = fuzzy_left > 0 and len(word) >= FUZZY_MIN_WORD_CHARS and word.isalpha()
            fuzzy_left -= fuzzy
            # The last word may be unfinished ("harry pot"): it may also be a prefix.
            prefix = position == last and len(word) >= _PREFIX_MIN_CHARS and word.isalpha()
            clauses.append(_word(word, fuzzy=fuzzy, prefix=prefix))
        else:
            # Any alternative satisfies the unit, and the best one scores it (dis_max: "action
            # figure" must not count twice for "figure"); the typed term counts fully,
            # synonyms a little less.
            alternatives = [_phrase(alt, None if alt == unit.typed else _SYNONYM_BOOST) for alt in unit.alternatives]
            clauses.append(alternatives[0] if len(alternatives) == 1 else {"dis_max": {"queries": alternatives}})
    if len(units) > _MAX_UNITS:
        # A pasted paragraph: the rest must still match, as plain words in one clause.
        rest = " ".join(word for unit in units[_MAX_UNITS:] for word in unit.typed)
        rest_clause = {"query": rest, "type": "cross_fields", "fields": _TEXT_FIELDS, "operator": "and"}
        clauses.append({"multi_match": rest_clause})
    return clauses


def units_of(q: str, synonyms: Synonyms) -> list[Unit]:
    """What a query asks for: its words, with synonym terms grouped (``proxy.synonyms``)."""
    return synonyms.expand(words(q))


def relaxed_minimum(units: int) -> int:
    """How many of a query's units a relaxed search requires: one fewer, at least one."""
    return max(1, units - 1)


def text_query(q: str, synonyms: Synonyms = NO_SYNONYMS, *, relaxed: bool = False) -> dict[str, Any]:
    """Every word (or synonym term) must match in some field; the phrase in the name ranks first.

    ``relaxed`` (for a query that found nothing): all but one of them must match, and products
    matching all but the *last* rank first. The last word is the likeliest to be unfinished or
    mistyped, and in "[franchise] [product type]" the franchise is the firmer intent: for
    "gryffindor scarf" with no such scarf, Gryffindor things before other fandoms' scarves.
    Every typed word matched adds a little, so more of the query matched ranks higher.
    """
    phrase = {"match_phrase": {"name": {"query": q, "boost": _PHRASE_BOOST}}}
    units = units_of(q, synonyms)
    clauses = _unit_clauses(units)
    if not clauses:
        # Nothing but punctuation: the phrase (which analyses to nothing) matches nothing.
        return {"bool": {"must": [phrase]}}
    if not relaxed:
        return {"bool": {"must": clauses, "should": [phrase]}}
    should: list[dict[str, Any]] = [phrase]
    if len(clauses) > 1:
        head = {"bool": {"must": clauses[:-1]}}
        should.append({"constant_score": {"filter": head, "boost": _RELAXED_HEAD_BONUS}})
    # Words inside multi-word synonym terms count one by one too ("board" of "board game").
    should.extend(
        _word(word, fuzzy=False, boost=_RELAXED_WORD_BOOST)
        for unit in units[:_MAX_UNITS]
        if len(unit.typed) > 1
        for word in unit.typed
    )
    required = {"bool": {"should": clauses, "minimum_should_match": relaxed_minimum(len(clauses))}}
    return {"bool": {"must": [required], "should": should}}


def spelling_suggester(q: str) -> dict[str, Any]:
    """A term suggester over the unstemmed name, fandom and category words, for "did you mean"."""
    return {
        "text": q,
        SPELLING: {
            "term": {
                "field": SPELL_FIELD,
                # Only words the index does not have: a real word is not a typo.
                "suggest_mode": "missing",
                # Unlike the query's typo matching, the first letter may be wrong ("okemon").
                "prefix_length": 0,
                "min_word_length": FUZZY_MIN_WORD_CHARS,
                "max_edits": 2,
                "size": 1,
                "sort": "score",
            }
        },
    }


def build_search(
    req: SearchRequest,
    synonyms: Synonyms = NO_SYNONYMS,
    *,
    relaxed: bool = False,
    text: str | None = None,
) -> dict[str, Any]:
    """The engine body for one search: hits, total, disjunctive facets, highlight.

    ``relaxed``: the zero-result retry — fewer words required, and a spelling suggestion.
    ``text``: search for this instead of ``req.q`` (a spelling correction), otherwise alike.
    """
    filters = _filters(req)
    # Filters every facet applies go in the query: the engine then never scores, collects or
    # aggregates what they exclude (engine-profile-2026-12-06.md).
    everywhere = [clause for name, clause in filters.items() if name in _NON_FACET_FILTERS]
    facet_filters = {name: clause for name, clause in filters.items() if name not in _NON_FACET_FILTERS}
    q = req.q if text is None else text
    query = text_query(q, synonyms, relaxed=relaxed) if q else None
    if everywhere:
        query = {"bool": ({"must": [query]} if query else {}) | {"filter": everywhere}}
    body: dict[str, Any] = {
        "query": query or _MATCH_ALL,
        "from": req.offset,
        "size": req.size,
        "track_total_hits": True,
        "sort": _SORTS[req.sort],
        "_source": _SOURCE,
    }
    if facet_filters:
        # post_filter, not query: the facet aggregations below must see the matches without
        # these filters so each can apply every filter except its own.
        body["post_filter"] = _all_of(list(facet_filters.values()))
    body["aggs"] = {facet: _facet_agg(facet, agg, facet_filters) for facet, agg in _FACET_AGGS.items()}
    if q:
        body["highlight"] = _HIGHLIGHT
    if relaxed and q:
        body["suggest"] = spelling_suggester(q)
    return body


def _facet_agg(facet: str, agg: dict[str, Any], facet_filters: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One facet's aggregation over the query's matches with every other facet's filter applied.

    With no other filter it is the bare aggregation, not one under a ``match_all`` ``filter``:
    the wrapper costs a check per matching document (4× the terms aggregation's own time over a
    150k catalog browse) and stops the engine answering a range aggregation from the index
    without visiting documents (engine-profile-2026-12-06.md).
    """
    others = [clause for name, clause in facet_filters.items() if name != facet]
    if not others:
        return agg
    return {"filter": _all_of(others), "aggs": {FACET_VALUES: agg}}


def _prefix_query(q: str, field: str, *, fuzzy: bool, boost: float | None = None) -> dict[str, Any]:
    """Every typed word must be a prefix of a word in ``field`` (within an edit or two if fuzzy,
    for the first :data:`SUGGEST_FUZZY_WORDS` words; the others exactly)."""
    if fuzzy:
        typed = _SUGGEST_WORD.findall(q)
        if len(typed) > SUGGEST_FUZZY_WORDS:
            head, tail = " ".join(typed[:SUGGEST_FUZZY_WORDS]), " ".join(typed[SUGGEST_FUZZY_WORDS:])
            parts = [_prefix_query(head, field, fuzzy=True), _prefix_query(tail, field, fuzzy=False)]
            capped: dict[str, Any] = {"bool": {"must": parts}}
            if boost is not None:
                capped["bool"]["boost"] = boost
            return capped
    clause: dict[str, Any] = {"query": q, "operator": "and"}
    if fuzzy:
        clause["fuzziness"] = "AUTO"
        clause["prefix_length"] = _PREFIX_LENGTH
    if boost is not None:
        clause["boost"] = boost
    return {"match": {field: clause}}


def _exact_or_fuzzy(q: str, field: str, fuzzy: bool) -> dict[str, Any]:
    """Names matching the prefix score alike (so popularity breaks the tie, see ``_SUGGEST_SORT``);
    exact prefixes score above typo matches ("hermoi" -> Hermione either way)."""
    exact = {"constant_score": {"filter": _prefix_query(q, field, fuzzy=False), "boost": _EXACT_PREFIX_BOOST}}
    if not fuzzy:
        return exact
    typo = {"constant_score": {"filter": _prefix_query(q, field, fuzzy=True), "boost": 1.0}}
    return {"bool": {"should": [exact, typo], "minimum_should_match": 1}}


def _taxonomy_agg(kind: str, query: dict[str, Any], size: int) -> dict[str, Any]:
    return {
        "filter": query,
        "aggs": {FACET_VALUES: {"terms": {"field": kind, "size": size, "order": list(_FACET_ORDER)}}},
    }


def build_suggest(req: SuggestRequest, *, count_taxonomy: bool = True) -> dict[str, Any]:
    """The engine body for autocomplete: product names, plus fandom and category names.

    ``count_taxonomy=False``: product names only — the proxy matches fandom and category names
    against the vocabulary it holds (``proxy.taxonomy``), which is the usual case. The
    engine then visits only the products whose name matches: at 150k products, "st" visited
    67,874 documents with the taxonomy counted, most of them for the fandom and category
    matches and their aggregations (benchmarks/results/2026-12-06-suggest-latency.md). A prefix
    too short for typos scores every hit alike, so it sorts in the index's own order and the
    engine stops after the first hits of each segment (17 documents for "st", not 16,128).

    With ``count_taxonomy`` (until the proxy holds the vocabulary, or when the catalog has too
    many names to hold):

    Product hits are the products whose name matches; fandoms and categories come from
    aggregations over the products whose fandom or category matches, so they match on their own
    names rather than only within the matched products. The query is the union of the two, the
    taxonomy part scoring :data:`TAXONOMY_ONLY_SCORE`: name matches score and sort as by their
    name alone, and a hit that matched only a fandom or category sorts after all of them and is
    dropped by the shaper. (Not a ``global`` aggregation: that visits every product of the
    catalog on every keystroke, 4 × 127k document checks at 150k products; the union visits
    only the products that match something. Not a ``post_filter`` on the name match either:
    the engine would expand its typos a second time, its costliest rewrite;
    engine-profile-2026-12-06.md.) Exact-prefix and typo-tolerant taxonomy matches are separate
    aggregations, so the shaper can rank exact ones first.
    """
    q = req.q
    fuzzy = len(q) >= FUZZY_MIN_CHARS
    name_query = _exact_or_fuzzy(q, _PREFIX_FIELDS["name"], fuzzy)
    if not count_taxonomy:
        return {
            "query": name_query,
            "size": req.size * SUGGEST_HIT_FACTOR,
            "_source": _SUGGEST_SOURCE,
            "sort": _SUGGEST_SORT if fuzzy else _SUGGEST_INDEX_ORDER,
            "track_total_hits": False,
        }
    taxonomy: dict[str, Any] = {}
    # What the taxonomy aggregations can count: a typo-tolerant match includes the exact one.
    taxonomy_matches: list[dict[str, Any]] = []
    for kind in TAXONOMY_KINDS:
        field = _PREFIX_FIELDS[kind]
        exact = _prefix_query(q, field, fuzzy=False)
        taxonomy[kind] = _taxonomy_agg(kind, exact, req.size)
        widest = exact
        if fuzzy:
            # Typos anywhere in a fandom or category name ("pokmon", "star wras").
            widest = _prefix_query(q, field, fuzzy=True)
            taxonomy[kind + FUZZY_SUFFIX] = _taxonomy_agg(kind, widest, req.size)
        taxonomy_matches.append({"constant_score": {"filter": widest, "boost": TAXONOMY_ONLY_SCORE}})
    return {
        "query": {"bool": {"should": [name_query, *taxonomy_matches]}},
        "size": req.size * SUGGEST_HIT_FACTOR,
        "_source": _SUGGEST_SOURCE,
        "sort": _SUGGEST_SORT,
        # No total needed: counting every match would cost more than the suggestions.
        "track_total_hits": False,
        "aggs": taxonomy,
    }


# How many fandoms and categories a seller page lists.
SELLER_TOP_VALUES: Final = 5


def build_product(product_id: int) -> dict[str, Any]:
    """The engine body for one product's detail page: its document, if it is searchable.

    A search by id rather than a realtime GET: the detail page then shows exactly what search
    results show (both see the index as of its last refresh), and one gateway call serves all.
    """
    return {"query": {"ids": {"values": [str(product_id)]}}, "size": 1, "_source": _SOURCE}


def build_seller(seller_id: int) -> dict[str, Any]:
    """The engine body for a seller page: its active product count, top fandoms and categories."""
    return {
        "query": {"term": {"seller.id": str(seller_id)}},
        "size": 1,
        "track_total_hits": True,
        "_source": ["seller"],
        "aggs": {kind: {"terms": {"field": kind, "size": SELLER_TOP_VALUES}} for kind in ("fandom", "category")},
    }
