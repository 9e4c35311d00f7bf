"""Fandom and category names for suggestions: matched by the proxy against a vocabulary it holds.

A suggestion lists the fandoms and categories whose names start with what was typed (or nearly
do, for prefixes of ``FUZZY_MIN_CHARS`` or more), each with its number of products. The catalog
has tens of such names, so the proxy holds them with their counts (:class:`Taxonomy`, read from
one terms aggregation, :func:`taxonomy_body`, and re-read every ``SUGGEST_TAXONOMY_REFRESH_S``)
and matches them here, folded as the engine's analyzers fold them. The engine is then asked only
for product names. Asking the engine instead (``proxy.query.build_suggest`` without a taxonomy)
costs, on every keystroke, visiting every product of each matching fandom or category: 60–68k
documents for "har" or "st" at 150k products (benchmarks/results/engine-profile-2026-12-06.md).

Held names and counts are as old as the last refresh: a new fandom is suggested, and counts
move, within ``SUGGEST_TAXONOMY_REFRESH_S``. A catalog with more names than
:data:`TAXONOMY_MAX_VALUES` of a kind is not held (:func:`read_taxonomy` answers None) and the
engine counts them per keystroke as before. The Postgres fallback matches the names it reads
with the same functions (``proxy.fallback.sql``).

Never: I/O (``proxy.app`` refreshes the vocabulary).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from proxy.answers import starts_near
from proxy.params import SuggestRequest
from proxy.query import FACET_VALUES, FUZZY_MIN_CHARS, FUZZY_SUFFIX, TAXONOMY_KINDS
from proxy.synonyms import words

# Names of each kind the proxy holds at most: a bound on the refresh's answer and on the work of
# matching a keystroke (the sample catalog has 20 fandoms and 16 categories).
TAXONOMY_MAX_VALUES: Final = 1000


def begins(word: str, term: str, typo: bool) -> bool:
    """Whether folded ``word`` starts with ``term`` or, with ``typo``, nearly does."""
    return word.startswith(term) or (typo and starts_near(word, term))


def starts_every(name: str, typed: Sequence[str], typo: bool) -> bool:
    """Whether every typed word starts (or, with ``typo``, nearly starts) a word of ``name``."""
    name_words = words(name)
    return bool(typed) and all(any(begins(word, term, typo) for word in name_words) for term in typed)


@dataclass(frozen=True, slots=True)
class TaxonomyMatches:
    """Fandom and category names a prefix matches, by kind: exactly, or only within a typo."""

    exact: Mapping[str, tuple[str, ...]]
    near: Mapping[str, tuple[str, ...]]

    def names(self, kind: str) -> list[str]:
        return sorted({*self.exact.get(kind, ()), *self.near.get(kind, ())})

    def __bool__(self) -> bool:
        return any(self.names(kind) for kind in TAXONOMY_KINDS)


def match_taxonomy(q: str, names: Mapping[str, Iterable[str] | None]) -> TaxonomyMatches:
    """The fandom and category ``names`` (by kind) matching the typed prefix ``q``, ignoring case
    and accents like the engine's edge n-grams; within a typo for long enough prefixes."""
    typed = words(q)
    fuzzy = len(q) >= FUZZY_MIN_CHARS
    exact: dict[str, tuple[str, ...]] = {}
    near: dict[str, tuple[str, ...]] = {}
    for kind in TAXONOMY_KINDS:
        candidates = tuple(names.get(kind) or ())
        exact[kind] = tuple(name for name in candidates if starts_every(name, typed, typo=False))
        near[kind] = tuple(
            name for name in candidates if fuzzy and name not in exact[kind] and starts_every(name, typed, typo=True)
        )
    return TaxonomyMatches(exact, near)


def taxonomy_aggregations(
    req: SuggestRequest, matches: TaxonomyMatches, counts: Mapping[tuple[str, str], int]
) -> dict[str, Any]:
    """Engine-shaped buckets of the matched names (``counts``: products by (kind, name)), as
    ``proxy.answers.shape_suggest`` reads them: exact matches under the kind, typo matches under
    ``kind + FUZZY_SUFFIX``; most products first, at most ``req.size`` of each."""

    def top(kind: str, names: Iterable[str]) -> dict[str, Any]:
        counted = [(name, count) for name in names if (count := counts.get((kind, name)))]
        counted.sort(key=lambda pair: (-pair[1], pair[0]))
        return {FACET_VALUES: {"buckets": [{"key": key, "doc_count": count} for key, count in counted[: req.size]]}}

    taxonomy: dict[str, Any] = {}
    for kind in TAXONOMY_KINDS:
        taxonomy[kind] = top(kind, matches.exact.get(kind, ()))
        if len(req.q) >= FUZZY_MIN_CHARS:
            taxonomy[kind + FUZZY_SUFFIX] = top(kind, matches.near.get(kind, ()))
    return taxonomy


@dataclass(frozen=True, slots=True)
class Taxonomy:
    """Every fandom and category name of the searchable catalog, with its number of products."""

    names: Mapping[str, tuple[str, ...]]
    counts: Mapping[tuple[str, str], int]
    # Names by kind and by the first letter of each of their words: a typed word, exactly or
    # within a typo, starts only words with its own first letter (``starts_near``). Checking
    # only those names (and one distance table per word, ``proxy.answers``) took "hermoine"'s
    # matching from 1.6 to 0.44 ms per request (36 fandoms, 13 categories, a busy machine).
    by_initial: Mapping[str, Mapping[str, frozenset[str]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.by_initial:
            index: dict[str, dict[str, set[str]]] = {kind: {} for kind in TAXONOMY_KINDS}
            for kind, names in self.names.items():
                for name in names:
                    for word in words(name):
                        index.setdefault(kind, {}).setdefault(word[0], set()).add(name)
            frozen = {kind: {c: frozenset(n) for c, n in by.items()} for kind, by in index.items()}
            object.__setattr__(self, "by_initial", frozen)

    def aggregations(self, req: SuggestRequest) -> dict[str, Any]:
        """The fandom and category buckets of a suggestion, as the engine would count them."""
        typed = words(req.q)
        candidates = {kind: self._candidates(kind, typed) for kind in TAXONOMY_KINDS}
        return taxonomy_aggregations(req, match_taxonomy(req.q, candidates), self.counts)

    def _candidates(self, kind: str, typed: Sequence[str]) -> frozenset[str]:
        """The names of ``kind`` with a word of each typed word's first letter."""
        by_initial = self.by_initial.get(kind) or {}
        found: frozenset[str] | None = None
        for term in typed:
            names = by_initial.get(term[0], frozenset())
            found = names if found is None else found & names
            if not found:
                break
        return found or frozenset()


class TaxonomyHolder:
    """The vocabulary a worker holds now: None until it was first read (or when it is too big)."""

    __slots__ = ("current",)

    def __init__(self) -> None:
        self.current: Taxonomy | None = None


def taxonomy_body() -> dict[str, Any]:
    """The engine body that reads the vocabulary: every name of each kind and its count."""
    return {
        "size": 0,
        "track_total_hits": False,
        "aggs": {kind: {"terms": {"field": kind, "size": TAXONOMY_MAX_VALUES}} for kind in TAXONOMY_KINDS},
    }


def read_taxonomy(engine_body: Mapping[str, Any]) -> Taxonomy | None:
    """The vocabulary in the engine's answer to :func:`taxonomy_body`; None when a kind has more
    names than :data:`TAXONOMY_MAX_VALUES` (the engine must then count them per request)."""
    aggregations = engine_body.get("aggregations") or {}
    names: dict[str, tuple[str, ...]] = {}
    counts: dict[tuple[str, str], int] = {}
    for kind in TAXONOMY_KINDS:
        agg = aggregations.get(kind)
        if agg is None or agg.get("sum_other_doc_count"):
            return None
        buckets = [(str(bucket["key"]), int(bucket["doc_count"])) for bucket in agg.get("buckets") or ()]
        names[kind] = tuple(name for name, _ in buckets)
        counts.update(((kind, name), count) for name, count in buckets)
    return Taxonomy(names, counts)
