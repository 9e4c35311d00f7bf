"""Suggestions' fandom and category names matched by the proxy (``proxy.taxonomy``): pure logic."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.answers import shape_suggest
from proxy.params import SuggestRequest
from proxy.query import FACET_VALUES, TAXONOMY_KINDS
from proxy.taxonomy import (
    TAXONOMY_MAX_VALUES,
    Taxonomy,
    match_taxonomy,
    read_taxonomy,
    taxonomy_aggregations,
    taxonomy_body,
)

_COUNTS = {
    "fandom": [("Harry Potter", 900), ("Star Wars", 800), ("Pokémon", 500), ("Hardcore Heroes", 3)],
    "category": [("stickers", 300), ("stationery", 120), ("plush", 200)],
}


def _answer(counts: dict[str, list[tuple[str, int]]], other: int = 0) -> dict[str, Any]:
    """The engine's answer to ``taxonomy_body()`` for these names and counts."""
    return {
        "aggregations": {
            kind: {
                "sum_other_doc_count": other,
                "buckets": [{"key": name, "doc_count": count} for name, count in counts[kind]],
            }
            for kind in TAXONOMY_KINDS
        }
    }


def _held() -> Taxonomy:
    taxonomy = read_taxonomy(_answer(_COUNTS))
    assert taxonomy is not None
    return taxonomy


def _keys(aggregations: dict[str, Any], name: str) -> list[str]:
    return [bucket["key"] for bucket in aggregations[name][FACET_VALUES]["buckets"]]


def test_the_vocabulary_is_read_with_one_bounded_terms_aggregation_per_kind() -> None:
    body = taxonomy_body()
    assert body["size"] == 0
    assert {kind: agg["terms"] for kind, agg in body["aggs"].items()} == {
        kind: {"field": kind, "size": TAXONOMY_MAX_VALUES} for kind in TAXONOMY_KINDS
    }


def test_more_names_than_can_be_held_are_not_held() -> None:
    assert read_taxonomy(_answer(_COUNTS, other=1)) is None
    assert read_taxonomy({"aggregations": {}}) is None


def test_a_prefix_lists_the_names_it_starts_most_products_first() -> None:
    aggregations = _held().aggregations(SuggestRequest(q="har", size=8))
    assert _keys(aggregations, "fandom") == ["Harry Potter", "Hardcore Heroes"]
    assert _keys(aggregations, "category") == []
    assert aggregations["fandom"][FACET_VALUES]["buckets"][0] == {"key": "Harry Potter", "doc_count": 900}
    assert "fandom_fuzzy" not in aggregations  # typos only from FUZZY_MIN_CHARS characters


def test_every_typed_word_must_start_a_word_of_the_name_ignoring_case_and_accents() -> None:
    held = _held()
    assert _keys(held.aggregations(SuggestRequest(q="WARS st", size=8)), "fandom") == ["Star Wars"]
    assert _keys(held.aggregations(SuggestRequest(q="poké", size=8)), "fandom") == ["Pokémon"]
    assert _keys(held.aggregations(SuggestRequest(q="pokemon", size=8)), "fandom") == ["Pokémon"]


def test_a_typo_matches_under_the_fuzzy_buckets_only() -> None:
    aggregations = _held().aggregations(SuggestRequest(q="pokmon", size=8))
    assert _keys(aggregations, "fandom") == []
    assert _keys(aggregations, "fandom_fuzzy") == ["Pokémon"]
    shaped = shape_suggest(SuggestRequest(q="pokmon"), {"aggregations": aggregations})
    assert shaped["suggestions"][0] == {"text": "Pokémon", "type": "fandom"}


@pytest.mark.parametrize("size", [1, 2])
def test_at_most_size_names_of_each_kind(size: int) -> None:
    aggregations = _held().aggregations(SuggestRequest(q="st", size=size))
    assert _keys(aggregations, "category") == ["stickers", "stationery"][:size]


@given(q=st.text(alphabet="harypotesw kmnéHP-", min_size=1, max_size=20))
def test_checking_only_names_with_the_typed_initials_loses_no_match(q: str) -> None:
    held, req = _held(), SuggestRequest(q=q, size=8)
    every_name = taxonomy_aggregations(req, match_taxonomy(q, held.names), held.counts)
    assert held.aggregations(req) == every_name
