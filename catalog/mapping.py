"""Index settings and mapping for product documents, and the names of versioned indexes.

`SEARCH_INDEX` names an alias; the real index behind it is versioned
(``products_v20261125T200000123456``) so a rebuild can swap it atomically. This module is pure
data and naming: it never talks to the engine.

Text analysis is static, identical at index and search time where it matters: folding (case,
accents), splitting on punctuation with compounds kept ("T-Shirt" is also "tshirt"), and light
plural stemming. A change here needs a rebuild (``hos-search reindex``). Synonyms are *not*
here: the proxy applies ``catalog/synonyms.txt`` at search time (``proxy.synonyms`` explains
why), so editing them needs no reindex.
"""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from typing import Any

# Fixed, labelled price buckets: the storefront shows them as facet chips.
PRICE_BUCKETS: tuple[tuple[str, float | None, float | None], ...] = (
    ("0-10", None, 10.0),
    ("10-20", 10.0, 20.0),
    ("20-50", 20.0, 50.0),
    ("50-100", 50.0, 100.0),
    ("100-250", 100.0, 250.0),
    ("250+", 250.0, None),
)

# Plurals the minimal English stemmer gets wrong (it only strips "s", and turns "-ies" into
# "-y"): irregular "-ves" plurals and "-ie" nouns. Applied before it, at index and search time.
_PLURAL_EXCEPTIONS: tuple[str, ...] = (
    "scarves => scarf",
    "knives => knife",
    "elves => elf",
    "dwarves => dwarf",
    "wolves => wolf",
    "leaves => leaf",
    "shelves => shelf",
    "thieves => thief",
    "halves => half",
    "hoodies => hoodie",
    "beanies => beanie",
    "plushies => plushie",
    "onesies => onesie",
    "goodies => goodie",
    "zombies => zombie",
    "cookies => cookie",
    "movies => movie",
    "pixies => pixie",
    "shoes => shoe",
    "heroes => hero",
    "tomatoes => tomato",
)

_WORD_PARTS: dict[str, Any] = {
    "type": "word_delimiter_graph",
    "generate_word_parts": True,
    "generate_number_parts": True,
    "catenate_numbers": False,
    "catenate_all": False,
    # Lowercased before this filter, so "McCoy" is one word and "60cm" stays whole.
    "split_on_case_change": False,
    "split_on_numerics": False,
    "preserve_original": False,
    "stem_english_possessive": True,
}

_ANALYSIS: dict[str, Any] = {
    "filter": {
        "autocomplete_edge": {"type": "edge_ngram", "min_gram": 1, "max_gram": 20},
        # Index time: "T-Shirt" -> t, shirt and the compound "tshirt" (a multi-position token,
        # flattened below), so "t-shirt", "t shirt" and "tshirt" all find it; "Spider-Man" alike.
        "compound_words": {**_WORD_PARTS, "catenate_words": True},
        # Search time: split on the same punctuation, without compounds (no token graph, so
        # multi_match cross_fields scores the words plainly).
        "word_parts": {**_WORD_PARTS, "catenate_words": False},
        "plural_exceptions": {"type": "stemmer_override", "rules": list(_PLURAL_EXCEPTIONS)},
        # Light stemming for plurals only ("wands" -> "wand", "figures" -> "figure"): no
        # suffix stripping beyond that, so names and typed words stay recognisable.
        "plural": {"type": "stemmer", "language": "minimal_english"},
        # minimal_english leaves "boxes" as "boxe"; finish the "-es" plural of sibilant endings
        # (box/boxes, glass/glasses, watch/watches) the same way on both sides.
        "plural_es": {"type": "pattern_replace", "pattern": "^(.*(?:x|ch|sh|ss|zz))e$", "replacement": "$1"},
    },
    "analyzer": {
        # Lowercased and accent-folded words: "Pokémon" matches "pokemon". Unstemmed: for the
        # spelling suggester, whose corrections must be real words.
        "folded": {
            "type": "custom",
            "tokenizer": "standard",
            "filter": ["lowercase", "asciifolding"],
        },
        # Product text at index time: folded, split on punctuation with compounds kept,
        # plurals stemmed.
        "product_text": {
            "type": "custom",
            "tokenizer": "whitespace",
            "filter": [
                "lowercase",
                "asciifolding",
                "compound_words",
                "flatten_graph",
                "plural_exceptions",
                "plural",
                "plural_es",
            ],
        },
        # What a shopper types, analysed to the same terms (without compounds: see above).
        "product_search": {
            "type": "custom",
            "tokenizer": "whitespace",
            "filter": ["lowercase", "asciifolding", "word_parts", "plural_exceptions", "plural", "plural_es"],
        },
        # Index-time edge n-grams for typo-tolerant prefix autocomplete ("hermoi" -> Hermione).
        "autocomplete": {
            "type": "custom",
            "tokenizer": "standard",
            "filter": ["lowercase", "asciifolding", "autocomplete_edge"],
        },
    },
    "normalizer": {
        "folded_keyword": {"type": "custom", "filter": ["lowercase", "asciifolding"]},
    },
}

# Words indexed as all their prefixes (up to 20 characters), searched as whole typed words.
_PREFIX_FIELD: dict[str, Any] = {"type": "text", "analyzer": "autocomplete", "search_analyzer": "folded"}
# Searchable words of a field, stemmed: what the text query matches across fields.
_TEXT: dict[str, Any] = {"type": "text", "analyzer": "product_text", "search_analyzer": "product_search"}
# Name, fandom and category words are also copied, unstemmed, into `spell`: the vocabulary
# the spelling suggester corrects towards (a zero-result query's "did you mean").
SPELL_FIELD = "spell"
# Facet fields: every search and suggestion counts them (terms aggregations over global
# ordinals). Built at refresh rather than by the first search after it, which otherwise pays for
# the whole index's ordinals, once a second under a stream of updates (refresh 1 s). Not measured
# by the benches (their index is static); Elasticsearch's advice for fields aggregated on every
# search.
_FACET_KEYWORD: dict[str, Any] = {"copy_to": [SPELL_FIELD], "eager_global_ordinals": True}

_PROPERTIES: dict[str, Any] = {
    "id": {"type": "keyword"},
    "name": {
        **_TEXT,
        "copy_to": [SPELL_FIELD],
        "fields": {
            "keyword": {"type": "keyword", "ignore_above": 300},
            # Autocomplete: every prefix of every word is indexed, so "harry pot" matches
            # "Harry Potter …" and a fuzzy match forgives a typo inside the word being typed.
            # (Edge n-grams alone, not also search_as_you_type: on the dev engine that halves
            # bulk throughput and makes updates 2.5× slower, for no better suggestions.)
            "prefix": _PREFIX_FIELD,
        },
    },
    "description": dict(_TEXT),
    "category": {"type": "keyword", **_FACET_KEYWORD, "fields": {"prefix": _PREFIX_FIELD, "text": _TEXT}},
    "fandom": {"type": "keyword", **_FACET_KEYWORD, "fields": {"prefix": _PREFIX_FIELD, "text": _TEXT}},
    SPELL_FIELD: {"type": "text", "analyzer": "folded", "norms": False, "index_options": "freqs"},
    "price": {"type": "scaled_float", "scaling_factor": 100},
    "currency": {"type": "keyword"},
    "stock": {"type": "integer"},
    "in_stock": {"type": "boolean"},
    # float, not half_float: index sorting (below) refuses half_float fields.
    "rating": {"type": "float"},
    "seller": {
        "properties": {
            "id": {"type": "keyword"},
            "name": {"type": "keyword", "normalizer": "folded_keyword"},
        }
    },
    "image_url": {"type": "keyword", "index": False, "doc_values": False},
    "created_at": {"type": "date"},
    "updated_at": {"type": "date"},
}


DEFAULT_REFRESH_INTERVAL = "1s"  # as in Elasticsearch: a write is searchable within about this

# Each segment keeps its documents best-rated first (then by id): a query sorted exactly so that
# counts no total stops after the first hits of each segment. Suggestions for a short prefix
# sort so (``proxy.query``): "st" visited 16,128 documents to pick the 16 best-rated, 17 with
# this (benchmarks/results/2026-12-06-suggest-latency.md). Static: it takes a reindex.
INDEX_SORT: dict[str, list[str]] = {
    "field": ["rating", "id"],
    "order": ["desc", "asc"],
    "missing": ["_last", "_last"],
}


def index_settings(
    *, loading: bool = False, shards: int = 1, replicas: int = 1, refresh_interval: str = DEFAULT_REFRESH_INTERVAL
) -> dict[str, Any]:
    """Settings for a new product index.

    ``loading=True`` is for a bulk rebuild: no refresh and no replicas until the load is done
    (see :func:`live_settings`).
    """
    return {
        "number_of_shards": shards,
        "number_of_replicas": 0 if loading else replicas,
        "refresh_interval": "-1" if loading else refresh_interval,
        "max_result_window": 10_000,
        "analysis": copy.deepcopy(_ANALYSIS),
        "sort": copy.deepcopy(INDEX_SORT),
    }


def live_settings(*, replicas: int = 1, refresh_interval: str = DEFAULT_REFRESH_INTERVAL) -> dict[str, Any]:
    """The dynamic settings to put on a freshly loaded index before it goes live."""
    return {"number_of_replicas": replicas, "refresh_interval": refresh_interval}


def index_mappings() -> dict[str, Any]:
    """The product mapping (a fresh copy). ``dynamic: strict``: an unknown field is a bug."""
    return {"dynamic": "strict", "properties": copy.deepcopy(_PROPERTIES)}


_VERSION_SUFFIX = re.compile(r"_v\d{8}t\d{12}$")


def versioned_index_name(alias: str, now: datetime | None = None) -> str:
    """The concrete index name for a rebuild of ``alias`` started at ``now`` (UTC)."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{alias}_v{moment.strftime('%Y%m%dt%H%M%S%f')}"


def is_version_of(alias: str, index: str) -> bool:
    """Whether ``index`` is one of the versioned indexes behind ``alias``."""
    return index.startswith(alias + "_v") and bool(_VERSION_SUFFIX.search(index))
