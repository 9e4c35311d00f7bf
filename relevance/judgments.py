"""The judged query set: graded relevance computed from the sample catalog's ground truth.

``queries.json`` holds storefront-shaped queries, each with *grading rules*: an ordered list
of ``[grade, predicate]``; a product gets the grade of the first predicate it satisfies, else 0.
Predicates test what the generator meant by a product (``catalog.generator.ProductTruth``), never
what a search returns, so the judgments hold for any catalog size and any search code:

- ``fandom`` / ``category``: equal to the value (or one of a list of values);
- ``character`` / ``place`` / ``item``: the product features it (its name or description);
- ``in_name``: the name mentions these slots ("c" character, "p" place, "i" item, "f" fandom);
- ``item_word``: the featured item's name contains these words ("wand" in "Elder Wand");
- ``type``: the name template's own words contain these (the product type: "Mug", "T-Shirt").

Words compare folded and split on punctuation ("T-Shirt" is "t shirt"). Grades: 3 exactly what
was asked for, 2 clearly relevant, 1 somewhat relevant (a shopper would not mind seeing it).

Metrics, per query then averaged over the queries that have a relevant product:
nDCG@10 (gain 2^grade - 1, ideal from every judged product of the catalog) and reciprocal rank
of the first result carrying the query's best available grade. The zero-result rate counts
every query. Pure: no I/O but reading the set.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catalog.generator import ProductTruth

QUERIES_PATH = Path(__file__).with_name("queries.json")
K = 10

_WORD = re.compile(r"[^\W_]+")
_SLOT = re.compile(r"\{[a-z]\}")


def _words(text: str) -> tuple[str, ...]:
    decomposed = unicodedata.normalize("NFKD", text)
    return tuple(_WORD.findall("".join(c for c in decomposed if not unicodedata.combining(c)).lower()))


def _contains(haystack: Sequence[str], needle: Sequence[str]) -> bool:
    n = len(needle)
    return n > 0 and any(tuple(haystack[i : i + n]) == tuple(needle) for i in range(len(haystack) - n + 1))


def _one_of(value: Any) -> tuple[str, ...]:
    return tuple(value) if isinstance(value, list) else (value,)


def matches(truth: ProductTruth, predicate: Mapping[str, Any]) -> bool:
    """Whether a product satisfies every condition of a predicate (see the module docstring)."""
    for key, value in predicate.items():
        if key == "fandom":
            ok = truth.fandom in _one_of(value)
        elif key == "category":
            ok = truth.category in _one_of(value)
        elif key in ("character", "place", "item"):
            ok = getattr(truth, key) in _one_of(value)
        elif key == "in_name":
            ok = set(value) <= truth.in_name
        elif key == "item_word":
            ok = truth.item is not None and any(_contains(_words(truth.item), _words(v)) for v in _one_of(value))
        elif key == "type":
            fixed = _words(_SLOT.sub(" ", truth.template))
            ok = any(_contains(fixed, _words(v)) for v in _one_of(value))
        else:
            raise ValueError(f"unknown predicate key {key!r}")
        if not ok:
            return False
    return True


@dataclass(frozen=True)
class JudgedQuery:
    id: str
    q: str
    shape: str
    rules: tuple[tuple[int, Mapping[str, Any]], ...]

    def grade(self, truth: ProductTruth) -> int:
        for grade, predicate in self.rules:
            if matches(truth, predicate):
                return grade
        return 0


def load_queries(path: Path = QUERIES_PATH) -> list[JudgedQuery]:
    raw = json.loads(path.read_text(encoding="utf-8"))
    queries = [
        JudgedQuery(
            id=entry["id"],
            q=entry["q"],
            shape=entry["shape"],
            rules=tuple((int(grade), predicate) for grade, predicate in entry["grades"]),
        )
        for entry in raw["queries"]
    ]
    ids = [query.id for query in queries]
    if len(ids) != len(set(ids)):
        raise ValueError("duplicate query ids in the judged set")
    return queries


def judge(queries: Iterable[JudgedQuery], truths: Iterable[ProductTruth]) -> dict[str, dict[str, int]]:
    """{query id: {product id: grade > 0}} over the catalog's *active* (searchable) products."""
    queries = list(queries)
    judged: dict[str, dict[str, int]] = {query.id: {} for query in queries}
    for truth in truths:
        if not truth.active:
            continue
        for query in queries:
            grade = query.grade(truth)
            if grade:
                judged[query.id][str(truth.id)] = grade
    return judged


def _dcg(grades: Sequence[int]) -> float:
    return sum((2**grade - 1) / math.log2(rank + 2) for rank, grade in enumerate(grades[:K]))


def ndcg_at_k(ranked_ids: Sequence[str], grades: Mapping[str, int]) -> float:
    ideal = _dcg(sorted(grades.values(), reverse=True))
    return _dcg([grades.get(pid, 0) for pid in ranked_ids]) / ideal if ideal else 0.0


def reciprocal_rank(ranked_ids: Sequence[str], grades: Mapping[str, int]) -> float:
    best = max(grades.values(), default=0)
    for rank, pid in enumerate(ranked_ids[:K], start=1):
        if best and grades.get(pid, 0) == best:
            return 1.0 / rank
    return 0.0


@dataclass(frozen=True)
class QueryScore:
    id: str
    q: str
    total: int
    relevant: int  # judged products with a grade > 0 in the catalog
    ndcg: float
    rr: float
    relaxed: bool
    did_you_mean: str | None


@dataclass(frozen=True)
class Summary:
    queries: int
    scored: int  # queries with at least one relevant product
    ndcg: float
    mrr: float
    zero_rate: float
    zero_with_relevant: int  # zero-result queries that did have relevant products: failures


def summarise(scores: Sequence[QueryScore]) -> Summary:
    scored = [s for s in scores if s.relevant]
    zeros = [s for s in scores if s.total == 0]
    return Summary(
        queries=len(scores),
        scored=len(scored),
        ndcg=sum(s.ndcg for s in scored) / len(scored) if scored else 0.0,
        mrr=sum(s.rr for s in scored) / len(scored) if scored else 0.0,
        zero_rate=len(zeros) / len(scores) if scores else 0.0,
        zero_with_relevant=sum(1 for s in zeros if s.relevant),
    )
