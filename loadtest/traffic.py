"""The storefront traffic both runners send: a seeded Zipf mix of queries and seeded sessions.

The queries come from the sample catalog's own vocabulary (``catalog.generator``): fandom names,
characters, items and places, and "<fandom or character> <product word>" pairs whose product
words come from the catalog's name templates, ranked by the fandom's popularity and the term's
place in its fandom, then drawn with Zipf weights ``1 / rank ** QUERY_ZIPF_EXPONENT``; a few are
typed with a typo, as shoppers do.

A session (one iteration) is drawn up front from the VU's generator — the query, each
keystroke's delay, the think times and every choice's roll — so the random stream never depends
on what the server answered: with the same global seed, VU n draws the same sessions on every
run, in Locust (loadtest/locustfile.py) and in k6 (loadtest/k6/traffic.js, the same generator and
arithmetic; the query list is generated into loadtest/k6/vocabulary.js). Pure.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Final

from catalog.generator import CATEGORIES_SPEC, FANDOM_VOCAB

QUERY_ZIPF_EXPONENT: Final = 1.0
TYPO_SHARE: Final = 0.05
# Seconds, before think_time_scale: between keystrokes, and between pages.
KEYSTROKE_S: Final = (0.08, 0.2)
THINK_S: Final = (0.5, 2.0)
THINKS: Final = 6
MIN_PREFIX: Final = 2
FACET_SHARE: Final = 0.6
FACET_TOP: Final = 5
PAGE_SHARE: Final = 0.25
SORT_SHARE: Final = 0.2
MAX_OPENS: Final = 3
SELLER_SHARE: Final = 0.35
_STOPWORDS: Final = frozenset({"with", "of", "the", "and", "set", "series", "edition"})


# --- the generator (mulberry32, as loadtest/k6/traffic.js) -----------------------------------------

_MASK: Final = 0xFFFFFFFF


def _imul(a: int, b: int) -> int:
    return (a * b) & _MASK


class Mulberry32:
    """A tiny 32-bit generator that JavaScript computes bit for bit the same (Math.imul)."""

    def __init__(self, seed: int) -> None:
        self.state = seed & _MASK

    def random(self) -> float:
        self.state = (self.state + 0x6D2B79F5) & _MASK
        a = self.state
        t = _imul(a ^ (a >> 15), 1 | a)
        t = ((t + _imul(t ^ (t >> 7), 61 | t)) & _MASK) ^ t
        return ((t ^ (t >> 14)) & _MASK) / 4294967296

    def between(self, low: float, high: float) -> float:
        return low + (high - low) * self.random()


def vu_seed(global_seed: int, vu: int) -> int:
    """VU ``vu``'s seed (1-based, as k6's ``__VU``), derived from the run's global seed."""
    return (_imul(global_seed & _MASK, 1_000_003) + vu) & _MASK


# --- the query mix -----------------------------------------------------------------------------


def _product_words() -> list[str]:
    """One word per catalog name template: its last plain word ("{c} T-Shirt" -> "t-shirt")."""
    words: dict[str, None] = {}
    for category in CATEGORIES_SPEC:
        for template in category.templates:
            plain = [
                word.lower()
                for word in template.replace(":", " ").split()
                if "{" not in word and word.replace("-", "").isalpha() and len(word) >= 3
            ]
            plain = [word for word in plain if word not in _STOPWORDS]
            if plain:
                words.setdefault(plain[-1])
    return list(words)


def build_queries() -> list[str]:
    """The ranked query list: most popular first (fandom rank, then the term's rank in it)."""
    words = _product_words()
    ranked: list[tuple[float, int, int, str]] = []
    for fandom_rank, fandom in enumerate(FANDOM_VOCAB, start=1):
        terms = [fandom.name]
        for i in range(max(len(fandom.characters), len(fandom.items), len(fandom.places))):
            word = words[(fandom_rank + i) % len(words)]
            if i < len(fandom.characters):
                terms.append(fandom.characters[i])
            if i < len(fandom.items):
                terms.append(fandom.items[i])
            terms.append(f"{fandom.name} {word}")
            if i < len(fandom.characters):
                terms.append(f"{fandom.characters[i]} {words[(fandom_rank + i + 1) % len(words)]}")
            if i < len(fandom.places):
                terms.append(fandom.places[i])
        for term_rank, term in enumerate(terms, start=1):
            ranked.append((1.0 / (fandom_rank * term_rank), fandom_rank, term_rank, term.lower()))
    ranked.sort(key=lambda entry: (-entry[0], entry[1], entry[2]))
    queries: dict[str, None] = {}
    for *_, query in ranked:
        queries.setdefault(query)
    return list(queries)


@dataclass(frozen=True)
class QueryMix:
    queries: tuple[str, ...]
    cumulative: tuple[float, ...]

    @classmethod
    def of(cls, queries: Sequence[str], exponent: float = QUERY_ZIPF_EXPONENT) -> QueryMix:
        return cls(tuple(queries), tuple(accumulate(1.0 / rank**exponent for rank in range(1, len(queries) + 1))))

    def pick(self, rng: Mulberry32) -> str:
        index = bisect_right(self.cumulative, rng.random() * self.cumulative[-1])
        return self.queries[min(index, len(self.queries) - 1)]


def with_typo(rng: Mulberry32, query: str) -> str:
    """Now and then a dropped or swapped letter in a word of 5+ letters (draws always 4 rolls)."""
    typo, which, where, how = rng.random(), rng.random(), rng.random(), rng.random()
    words = query.split(" ")
    long_words = [i for i, word in enumerate(words) if len(word) >= 5]
    if typo >= TYPO_SHARE or not long_words:
        return query
    index = long_words[int(which * len(long_words))]
    word = words[index]
    at = 1 + int(where * (len(word) - 2))
    dropped, swapped = word[:at] + word[at + 1 :], word[:at] + word[at + 1] + word[at] + word[at + 2 :]
    word = dropped if how < 0.5 else swapped
    words[index] = word
    return " ".join(words)


# --- sessions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionPlan:
    """Everything random about one storefront session, drawn before it starts."""

    query: str
    keystrokes: tuple[tuple[str, float], ...]  # (what the box holds, seconds before sending it)
    thinks: tuple[float, ...]  # seconds between pages, used in order
    facet_roll: float
    facet_kind_roll: float
    facet_pick_roll: float
    page_roll: float
    sort_roll: float
    opens: int
    open_rolls: tuple[float, ...]
    seller_roll: float

    def facet(self, facets: Mapping[str, Any]) -> tuple[str, str] | None:
        """The (parameter, value) a shopper narrows by, from the facets of the answer, or None."""
        if self.facet_roll >= FACET_SHARE:
            return None
        kind = "category" if self.facet_kind_roll < 0.5 else "fandom"
        buckets = [bucket for bucket in facets.get(kind) or () if bucket.get("count")][:FACET_TOP]
        if not buckets:
            return None
        return kind, str(buckets[int(self.facet_pick_roll * len(buckets))]["value"])

    def opened(self, items: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The products of ``items`` the shopper opens, in order."""
        if not items:
            return []
        return [items[int(roll * len(items))] for roll in self.open_rolls[: self.opens]]


def draw_session(rng: Mulberry32, mix: QueryMix) -> SessionPlan:
    query = with_typo(rng, mix.pick(rng))
    keystrokes = tuple(
        (query[:length], rng.between(*KEYSTROKE_S))
        for length in range(MIN_PREFIX, len(query) + 1)
        if query[length - 1] != " "
    )
    thinks = tuple(rng.between(*THINK_S) for _ in range(THINKS))
    facet_roll, facet_kind_roll, facet_pick_roll = rng.random(), rng.random(), rng.random()
    page_roll, sort_roll = rng.random(), rng.random()
    opens = 1 + int(rng.random() * MAX_OPENS)
    open_rolls = tuple(rng.random() for _ in range(MAX_OPENS))
    return SessionPlan(
        query,
        keystrokes,
        thinks,
        facet_roll,
        facet_kind_roll,
        facet_pick_roll,
        page_roll,
        sort_roll,
        opens,
        open_rolls,
        rng.random(),
    )


def vocabulary_js(queries: Sequence[str]) -> str:
    """loadtest/k6/vocabulary.js: the ranked query list for the k6 scripts."""
    body = ",\n".join(f"  {json.dumps(query, ensure_ascii=False)}" for query in queries)
    return (
        "// Generated by `python -m loadtest --write-vocabulary` from catalog/generator.py: do not edit.\n"
        "// The storefront's queries, most popular first (loadtest/traffic.py build_queries).\n"
        f"export const QUERIES = [\n{body},\n];\n"
    )
