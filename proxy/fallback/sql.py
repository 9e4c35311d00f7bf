"""The Postgres fallback's SQL: statements built from parsed requests, rows turned into engine answers.

Pure functions. From a validated :class:`SearchRequest`, :class:`SuggestRequest` or an id they
build a :class:`Statement` (SQL text and bind arguments); from the row Postgres returns they
build a dict shaped like the engine's ``_search`` response — exactly what ``proxy.answers``
reads — so the API's answers are shaped by the same code whichever backend answered. Product
``_source``s come from ``catalog.document.product_document``, as the index's documents do.

Search (``proxy.fallback.postgres`` runs it), one statement per strategy:

- **Full text** first: every typed word as a prefix term (``wand:*``), all required, in one
  ``to_tsquery('simple', $n)`` against ``search_tsv`` and its GIN index in ``product_search``
  (migration 0008: the active products' search columns alone, kept by triggers; the page's
  product rows are then read from ``products`` by id); ranked by ``ts_rank`` (name words are
  weight A, fandom B, description C), whole typed words above longer words they start.
- **Typos** next, only when the full text matched nothing: each typed word is corrected to its
  nearest words in the catalog's vocabulary (``search_words``, migration 0007: the words of
  active names, fandoms and categories, with a trigram GiST index; :func:`corrections_statement`),
  then the full-text strategy runs with every typed word widened to its corrections
  (:func:`typo_strategy`), the nearest correction of each word ranking first. The proxy
  answers ``relaxed: true`` when this strategy found the items.
- Filters, facets and sorts as the engine's (``proxy.query``). The matches every facet can
  count (all filters applied but the facet filters — category, fandom, price — of which at
  most one may fail) are grouped once into small cells (category × fandom × price bucket,
  counted whole and, with a price filter, inside it); the total and each facet add up cells, each facet with every
  filter but its own (disjunctive). Every sort ends on the product id: pages never overlap.
- A browse without a seller filter may take its total and facets from counts held in memory
  (``proxy.fallback.facets``, from :data:`FACET_COUNTS_SQL`) and read only its page
  (:func:`browse_page_strategy`): the same page, the same counts as of when they were read.

Suggestions: product names whose words start with every typed word (the weight-A lexemes of
``search_tsv``), best rated first; for prefixes of ``FUZZY_MIN_CHARS`` or more, then names
within a typo (``pg_trgm``). Fandom and category names are matched here, folded as the
engine's analyzers fold them, and counted by a second statement only when some name matched.

Never: I/O, or user text inside SQL text. Typed words and filter values only travel as bind
arguments; the SQL text depends only on which parameters are present.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from itertools import combinations, pairwise
from typing import Any, Final

import orjson

from catalog.document import PRODUCT_ROWS_SQL, UnindexableRow, product_document
from catalog.mapping import PRICE_BUCKETS
from proxy.params import SearchRequest, Sort, SuggestRequest
from proxy.query import (
    FACET_SIZES,
    FACET_VALUES,
    FUZZY_MIN_CHARS,
    SELLER_TOP_VALUES,
    SOURCE_FIELDS,
    SUGGEST_HIT_FACTOR,
    SUGGEST_TAXONOMY,
    TAXONOMY_KINDS,
)
from proxy.synonyms import fold, words
from proxy.taxonomy import TaxonomyMatches, begins, starts_every, taxonomy_aggregations

# Session settings the statements rely on (``proxy.fallback.postgres`` sets them on connect).
# Typo suggestions' threshold: "hary poter" is 0.6 of "Harry Potter", but "pokmon" only 0.5
# of "Pokémon", because a C-locale database splits trigrams at the "é". A search's corrections
# (``%``, one word against one word): "hary" is 0.57 of "harry", "pokmon" 0.5 of "pokémon",
# "lightsabr" 0.67 of "lightsaber": pg_trgm's default 0.3 keeps all three, and a correction that
# is wrong rarely matches a product together with the other words typed.
SESSION_SETTINGS: Final = {"pg_trgm.word_similarity_threshold": "0.5", "pg_trgm.similarity_threshold": "0.3"}

# Corrections asked for per typed word: the nearest is the likeliest, and the next ones cover a
# vocabulary word left behind by a renamed product (migration 0007 only adds words).
CORRECTIONS_PER_WORD: Final = 3

# Letters and digits: what the 'simple' parser keeps of a word, and all that a tsquery
# operand may hold here — never an operator, quote or weight from the user.
_WORD: Final = re.compile(r"[^\W_]+")

# width_bucket() numbers buckets 0 (below the first bound) to len(bounds): PRICE_BUCKETS'
# order, as long as the buckets tile the price line.
if any(high != low for (_, _, high), (_, low, _) in pairwise(PRICE_BUCKETS)):
    raise ValueError("the fallback's price facet needs PRICE_BUCKETS to be contiguous")
_PRICE_BOUNDS: Final = "'{" + ",".join(str(low) for _, low, _ in PRICE_BUCKETS[1:]) + "}'::numeric[]"
_PRICE_KEYS: Final = tuple(key for key, _, _ in PRICE_BUCKETS)

# Every sort ends on the id as the engine's does: as text, in bytes (it sorts the ``id``
# keyword), so that a client paging on while the engine fails over sees the same order.
_BY_ID: Final = '{t}.id::text COLLATE "C"'
_ORDER: Final[dict[Sort, str]] = {
    "relevance": "{t}.score DESC, {t}.created_at DESC, " + _BY_ID,
    "newest": "{t}.created_at DESC, " + _BY_ID,
    "price_asc": "{t}.price, " + _BY_ID,
    "price_desc": "{t}.price DESC, " + _BY_ID,
    "rating": "{t}.rating DESC NULLS LAST, " + _BY_ID,
}

_EM_OPEN: Final = "<em>"
_EM_CLOSE: Final = "</em>"


@dataclass(frozen=True, slots=True)
class Statement:
    """One SQL statement and its bind arguments (``$1`` is ``args[0]``)."""

    sql: str
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class SearchStrategy:
    """One way of matching a search; ``typo``: the relaxed one. ``terms``: folded typed words."""

    statement: Statement
    typo: bool
    terms: tuple[str, ...]


class _Args:
    """Bind arguments in order; :meth:`add` returns the placeholder for the value."""

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def query_words(q: str) -> tuple[str, ...]:
    """The lower-cased words of ``q``, as tsquery operands."""
    return tuple(_WORD.findall(q.lower()))


def prefix_tsquery(terms: Sequence[str], weights: str = "") -> str:
    """``harry:* & pot:*``: every term as a prefix, all required (``weights``: only in those)."""
    return " & ".join(f"{term}:*{weights}" for term in terms)


# --- search -----------------------------------------------------------------------------------


def numeric(value: float) -> Decimal:
    """A price parameter as the statements compare it (``proxy.fallback.facets`` too)."""
    # repr: the shortest text that reads back as this float — 19.99, not 19.989999…
    return Decimal(repr(value))


def _facet_filters(req: SearchRequest, args: _Args) -> dict[str, str]:
    """The filters that are also facets, keyed by facet, as conditions on unqualified columns."""
    filters: dict[str, str] = {}
    if req.categories:
        filters["category"] = f"category = ANY({args.add(list(req.categories))}::text[])"
    if req.fandoms:
        filters["fandom"] = f"fandom = ANY({args.add(list(req.fandoms))}::text[])"
    bounds = []
    if req.min_price is not None:
        bounds.append(f"price >= {args.add(numeric(req.min_price))}::numeric")
    if req.max_price is not None:
        bounds.append(f"price <= {args.add(numeric(req.max_price))}::numeric")
    if bounds:
        filters["price"] = "(" + " AND ".join(bounds) + ")"
    return filters


def _other_filters(req: SearchRequest, args: _Args) -> list[str]:
    conditions = []
    if req.seller_ids:
        conditions.append(f"seller_id = ANY({args.add([int(s) for s in req.seller_ids])}::bigint[])")
    if req.in_stock is not None:
        conditions.append("stock > 0" if req.in_stock else "stock = 0")
    return conditions


def _all(conditions: Iterable[str]) -> str:
    return " AND ".join(conditions) or "true"


def _counted_somewhere(facet_filters: Sequence[str]) -> list[str]:
    """A row counts in some facet only if it fails at most one facet filter."""
    if len(facet_filters) < 2:
        return []
    groups = (f"({_all(group)})" for group in combinations(facet_filters, len(facet_filters) - 1))
    return ["(" + " OR ".join(groups) + ")"]


def _top_values(column: str, counted: str, source: str, where: str, limit: int) -> str:
    """The ``limit`` most frequent values of ``column`` as a JSON array of [value, count]: by
    count, then by value in bytes, as the engine orders its terms buckets. A value counted 0
    is left out, as the engine's terms buckets leave it out: a cell can hold products counted in
    no facet's filter (``fandom=X&max_price=1`` listed X's categories at 0)."""
    return f"""(SELECT json_agg(json_build_array({column}, n) ORDER BY n DESC, {column} COLLATE "C")
          FROM (SELECT {column}, {counted} AS n FROM {source} WHERE {where}
                 GROUP BY {column} HAVING {counted} > 0
                 ORDER BY n DESC, {column} COLLATE "C" LIMIT {limit}) t) AS {column}"""


@dataclass(frozen=True, slots=True)
class _Matching:
    """What a search strategy matches and the page it reads: the parts of its statement."""

    facets: dict[str, str]  # the filters that are also facets, by facet
    base: list[str]  # every other condition a product must meet
    source: str  # the table matches are read from
    columns: str  # what the page orders by, from :attr:`source`
    order: str  # ORDER BY, on a table named {t}
    limit: str
    offset: str

    def page(self, rows: str) -> str:
        """The page CTE's body: ``rows`` (a table or subquery of :attr:`columns`) in order."""
        return f"""SELECT m.id, m.score, m.created_at, m.price, m.rating
      FROM {rows} m
     WHERE {_all(self.facets.values())}
     ORDER BY {self.order.format(t="m")}
     LIMIT {self.limit} OFFSET {self.offset}"""

    def browsed(self) -> str:
        """Every product the page may show when nothing is typed: read through an index in sort order."""
        return f"(SELECT {self.columns} FROM {self.source} WHERE {_all(self.base)})"

    def hits(self) -> str:
        """The page CTE's products, with their sellers, as one JSON array in page order."""
        return f"""(SELECT json_agg(r ORDER BY {self.order.format(t="page")})
          FROM page JOIN ({PRODUCT_ROWS_SQL}) r ON r.id = page.id) AS hits"""


def _matching(req: SearchRequest, args: _Args, match: str | None, rank: Callable[[], str]) -> _Matching:
    """``match`` selects the products, ``rank()`` (called only for the relevance sort, as it may
    add arguments) scores them."""
    facets = _facet_filters(req, args)
    # Text matches come from product_search, which holds the active products' search columns
    # alone (migration 0008): the matches of "harry potter" lay on 12,099 of products' 12,544
    # pages at 150,000 products, and lie on 1,806 of product_search's 6,844 in fandom order: the
    # statement 0.50-0.75x (fallback-narrow-2026-12-06.md). Browses read products' indexes.
    source, where = ("product_search", [match]) if match else ("products", ["status = 'active'"])
    base = [*where, *_other_filters(req, args)]
    limit, offset = args.add(req.size), args.add(req.offset)
    # Ranking costs a function call per match: only the relevance sort pays for it.
    score = rank() if req.sort == "relevance" else "NULL::real"
    columns = f"id, category, fandom, price, created_at, rating, {score} AS score"
    return _Matching(facets, base, source, columns, _ORDER[req.sort], limit, offset)


def _search_statement(req: SearchRequest, args: _Args, match: str | None, rank: Callable[[], str]) -> Statement:
    """The statement for one strategy: the page, the total and the facets."""
    m = _matching(req, args, match, rank)
    price = m.facets.get("price")
    # The category and fandom filters once more, on the cells. The price filter is no group
    # key but a second count per cell: grouping by it made Postgres hash every active product
    # of a browse, where grouping by (category, fandom, bucket) alone streams them in
    # products_active_cells_idx's order (migration 0006; fallback-profile-2026-12-06.md).
    on_cells = {facet: condition for facet, condition in m.facets.items() if facet != "price"}

    def all_but(facet: str | None) -> str:
        return _all(condition for name, condition in on_cells.items() if name != facet)

    def counted(facet: str | None) -> str:
        return "sum(n_priced)" if price and facet != "price" else "sum(n)"

    # Text matches are read once, for the cells and the page. Browsing reads the page through
    # an index in sort order instead, and the cells from an index-only scan.
    priced = f", count(*) FILTER (WHERE {price}) AS n_priced" if price else ""
    sql = f"""
WITH matched AS (
    SELECT {m.columns}
      FROM {m.source}
     WHERE {_all([*m.base, *_counted_somewhere(list(m.facets.values()))])}
), cells AS (
    SELECT category, fandom, width_bucket(price, {_PRICE_BOUNDS}) AS bucket, count(*) AS n{priced}
      FROM matched
     GROUP BY 1, 2, 3
), page AS (
    {m.page("matched" if match else m.browsed())}
)
SELECT (SELECT coalesce({counted(None)}, 0)::bigint FROM cells WHERE {all_but(None)}) AS total,
       {m.hits()},
       {_top_values("category", counted("category"), "cells", all_but("category"), FACET_SIZES["category"])},
       {_top_values("fandom", counted("fandom"), "cells", all_but("fandom"), FACET_SIZES["fandom"])},
       (SELECT json_agg(json_build_array(bucket, n))
          FROM (SELECT bucket, {counted("price")} AS n FROM cells WHERE {all_but("price")} GROUP BY bucket) f) AS price
"""
    return Statement(sql, tuple(args.values))


def counts_held(req: SearchRequest) -> bool:
    """Whether ``req``'s total and facets may come from counts held in memory
    (``proxy.fallback.facets``): a browse, without a seller filter (counts are not kept per seller)."""
    return not req.q and not req.seller_ids


def browse_page_strategy(req: SearchRequest) -> SearchStrategy:
    """A browse's page alone, its total and facets being held (:func:`counts_held`): read through
    an index in sort order, where the full statement also groups every active product."""
    args = _Args()
    m = _matching(req, args, None, lambda: "0")
    sql = f"""
WITH page AS (
    {m.page(m.browsed())}
)
SELECT {m.hits()}
"""
    return SearchStrategy(Statement(sql, tuple(args.values)), False, ())


# Every active product's facet values and price, grouped by what a browse filters on besides
# price (``proxy.fallback.facets`` sorts each group's prices: ordered aggregates made Postgres
# sort all 127,531 on disk, 450 ms against 145 ms unsorted at 150,000 products). Prices are
# numeric(10, 2): as whole cents they compare exactly as Postgres compares them. A 'NaN' price
# (a row older than migration 0005's constraint) compares above every number in Postgres, and so
# does its stand-in here, above any cents numeric(10, 2) holds.
_NAN_CENTS: Final = 2**63 - 1
FACET_COUNTS_SQL: Final = f"""
SELECT category, fandom, stock > 0 AS in_stock,
       array_agg(CASE WHEN price = 'NaN' THEN {_NAN_CENTS} ELSE (price * 100)::bigint END) AS cents
  FROM products
 WHERE status = 'active'
 GROUP BY 1, 2, 3
"""


def search_strategy(req: SearchRequest) -> SearchStrategy | None:
    """The full-text search for ``req``; None when it cannot match anything.

    No ``q``: every active product. A ``q`` without a letter or digit ("*", "\\") matches
    nothing, as on the engine.
    """
    if not req.q:
        return SearchStrategy(_search_statement(req, _Args(), None, lambda: "0"), False, ())
    terms = query_words(req.q)
    if not terms:
        return None
    return _full_text(req, terms, [f"{term}:*" for term in terms], terms, typo=False)


def _full_text(
    req: SearchRequest, terms: Sequence[str], operands: Sequence[str], whole: Sequence[str], *, typo: bool
) -> SearchStrategy:
    """Products matching every one of ``operands`` (tsquery text), ranked with the ``whole``
    words above the rest; ``terms``: the typed words, for the highlights."""
    args = _Args()
    matching = f"to_tsquery('simple', {args.add(' & '.join(operands))})"

    def rank() -> str:
        # Whole typed words rank above longer words they start: "wand" finds wands before Wanda.
        # ts_rank, not ts_rank_cd: cover density cost 1.1 s of a 1.8 s "harry potter"
        # (30,000 matches at 150,000 products), ts_rank 0.2 s (fallback-profile-2026-12-06.md).
        best = f"to_tsquery('simple', {args.add(' | '.join(whole))})"
        return f"ts_rank(search_tsv, {matching}) + ts_rank(search_tsv, {best})"

    statement = _search_statement(req, args, f"search_tsv @@ {matching}", rank)
    return SearchStrategy(statement, typo, tuple(fold(term) for term in terms))


_CORRECTIONS_SQL: Final = """
SELECT t.ord::int AS ord, c.word
  FROM unnest($1::text[]) WITH ORDINALITY AS t(typed, ord)
 CROSS JOIN LATERAL (
       SELECT word FROM search_words
        WHERE word % t.typed
        ORDER BY word <-> t.typed, word
        LIMIT $2) c
 ORDER BY 1, word <-> t.typed, 2
"""


def corrections_statement(req: SearchRequest) -> Statement | None:
    """Each typed word's nearest vocabulary words (``ord``: the word's place from 1, ``word``),
    nearest first; None without a typed word. Served by ``search_words_trgm_idx`` nearest first."""
    terms = query_words(req.q or "")
    return Statement(_CORRECTIONS_SQL, (list(terms), CORRECTIONS_PER_WORD)) if terms else None


def typo_strategy(req: SearchRequest, corrections: Iterable[Mapping[str, Any]]) -> SearchStrategy | None:
    """The full-text search with each typed word widened to its ``corrections`` (the rows of
    :func:`corrections_statement`); the nearest correction of each word ranks first. None when
    nothing was corrected: the full text already failed with the words as typed."""
    terms = query_words(req.q or "")
    near: list[list[str]] = [[] for _ in terms]
    for row in corrections:
        # Vocabulary words are lexemes of the 'simple' parser; only plain words become
        # operands here ("time-turner" is in the vocabulary with "time" and "turner").
        if _WORD.fullmatch(row["word"]) and 0 < row["ord"] <= len(terms):
            near[row["ord"] - 1].append(row["word"])
    if not any(near):
        return None
    operands = ["(" + " | ".join([f"{term}:*", *words]) + ")" for term, words in zip(terms, near, strict=True)]
    whole = [words[0] if words else f"{term}:*" for term, words in zip(terms, near, strict=True)]
    return _full_text(req, terms, operands, whole, typo=True)


def _json(value: str | None) -> Any:
    return None if value is None else orjson.loads(value)


def _source(row: Mapping[str, Any]) -> dict[str, Any]:
    """The engine ``_source`` of a product row (``PRODUCT_ROWS_SQL``'s columns)."""
    document = product_document(row)
    return {field: document[field] for field in SOURCE_FIELDS}


def _decoded_source(row: Mapping[str, Any]) -> dict[str, Any]:
    """The same for a product row that came back as JSON, with its timestamps as text."""
    try:
        stamps = {c: datetime.fromisoformat(row[c]) for c in ("created_at", "updated_at")}
    except (TypeError, ValueError):  # "-infinity" as Postgres writes it (issue 23)
        raise UnindexableRow(row.get("id"), "a timestamp is not finite") from None
    return _source({**row, **stamps})


def highlight(name: str, terms: Sequence[str], *, typo: bool) -> str | None:
    """``name`` as safe HTML, each word a term matched in ``<em>``; None when none did.

    A term matches a word it starts ("pot": Potter) or, with ``typo``, nearly starts
    ("poter": Potter); words compare folded, as the engine's analyzers compare them.
    """
    parts: list[str] = []
    position = 0
    for match in _WORD.finditer(name):
        word = fold(match.group())
        if any(begins(word, term, typo) for term in terms):
            parts += (html.escape(name[position : match.start()]), _EM_OPEN, html.escape(match.group()), _EM_CLOSE)
            position = match.end()
    if not parts:
        return None
    parts.append(html.escape(name[position:]))
    return "".join(parts)


def _hit(row: Mapping[str, Any], strategy: SearchStrategy) -> dict[str, Any] | None:
    """The hit of a matched row; None for a row the index would not hold either (it is set
    aside by the indexer, which logs it: a search showing it must not fail)."""
    try:
        source = _decoded_source(row)
    except UnindexableRow:
        return None
    hit: dict[str, Any] = {"_id": source["id"], "_source": source}
    marked = highlight(source["name"], strategy.terms, typo=strategy.typo)
    if marked is not None:
        hit["highlight"] = {"name": [marked]}
    return hit


def _buckets(pairs: Iterable[Sequence[Any]] | None) -> dict[str, Any]:
    return {"buckets": [{"key": key, "doc_count": int(count)} for key, count in pairs or ()]}


def _price_buckets(pairs: Iterable[Sequence[Any]] | None) -> dict[str, Any]:
    counts = {int(bucket): int(count) for bucket, count in pairs or ()}
    return {"buckets": [{"key": key, "doc_count": counts.get(i, 0)} for i, key in enumerate(_PRICE_KEYS)]}


def _response(total: int, hits: list[dict[str, Any]], took_ms: int, **aggregations: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"took": took_ms, "hits": {"total": {"value": total, "relation": "eq"}, "hits": hits}}
    if aggregations:
        body["aggregations"] = aggregations
    return body


@dataclass(frozen=True, slots=True)
class Counts:
    """A search's total and facets: [value, count] pairs in facet order, price as
    [``width_bucket`` number, count] pairs — a search statement's columns, decoded."""

    total: int
    category: Sequence[Sequence[Any]] = ()
    fandom: Sequence[Sequence[Any]] = ()
    price: Sequence[Sequence[Any]] = ()


def search_response(
    row: Mapping[str, Any] | None, strategy: SearchStrategy | None, took_ms: int = 0, counts: Counts | None = None
) -> dict[str, Any]:
    """The engine-shaped answer from a search statement's row; without one, no match.
    ``counts``: the total and facets when the row only carries the page (:func:`browse_page_strategy`)."""
    if row is None or strategy is None:
        row, hits = {}, []
    else:
        hits = [hit for product in _json(row["hits"]) or () if (hit := _hit(product, strategy)) is not None]
    if counts is None:
        columns = {facet: _json(row.get(facet)) or () for facet in ("category", "fandom", "price")}
        counts = Counts(int(row.get("total", 0)), **columns)
    return _response(
        counts.total,
        hits,
        took_ms,
        category={FACET_VALUES: _buckets(counts.category)},
        fandom={FACET_VALUES: _buckets(counts.fandom)},
        price={FACET_VALUES: _price_buckets(counts.price)},
    )


# --- suggestions ------------------------------------------------------------------------------


def _distinct(column: str) -> str:
    """Every value of an indexed column among active products: one index probe per value (a
    "loose index scan"), where DISTINCT or GROUP BY would read every product."""
    return f"""(WITH RECURSIVE v(value) AS (
         (SELECT {column} FROM products WHERE status = 'active' ORDER BY {column} LIMIT 1)
         UNION ALL
         SELECT (SELECT p.{column} FROM products p
                  WHERE p.status = 'active' AND p.{column} > v.value ORDER BY p.{column} LIMIT 1)
           FROM v WHERE v.value IS NOT NULL)
     SELECT array_agg(value) FROM v WHERE value IS NOT NULL) AS {column}"""


_TAXONOMY_NAMES: Final = ",\n       ".join(_distinct(kind) for kind in TAXONOMY_KINDS)
# Equally matching names: the better-rated product first, as the engine's suggestions sort.
_SUGGEST_ORDER: Final = "{t}.rating DESC NULLS LAST, " + _BY_ID
# Typo candidates fetched per suggestion wanted: trigram similarity lets in names that no typed
# word nearly starts ("lightsabr": Night Light), and those are dropped.
_TYPO_CANDIDATES: Final = 4


def _names(rows: str) -> str:
    """The [id, name] pairs of ``rows`` (a table or subquery) as a JSON array, best first."""
    return f"(SELECT json_agg(json_build_array(n.id, n.name) ORDER BY {_SUGGEST_ORDER.format(t='n')}) FROM {rows} n)"


def suggest_statement(req: SuggestRequest) -> Statement:
    """Product names for a typed prefix, and every fandom and category name (to match here).

    ``hits``: names whose words start with every typed word, best rated first. ``typos``: for a
    prefix of ``FUZZY_MIN_CHARS`` or more, and only when there are too few of those, other
    names within a typo — candidates, which :func:`suggest_response` narrows down.
    """
    args = _Args()
    terms = query_words(req.q)
    exact = f"search_tsv @@ to_tsquery('simple', {args.add(prefix_tsquery(terms, 'A'))})" if terms else "false"
    limit = args.add(req.size * SUGGEST_HIT_FACTOR)
    typos = "NULL::json"
    if terms and len(req.q) >= FUZZY_MIN_CHARS:
        typed = args.add(" ".join(terms))
        candidates = args.add(req.size * SUGGEST_HIT_FACTOR * _TYPO_CANDIDATES)
        typos = _names(f"""(
             SELECT id, name, rating FROM products
              WHERE (SELECT count(*) FROM exact) < {limit}
                AND status = 'active' AND {typed} <% name AND NOT ({exact})
              ORDER BY {_SUGGEST_ORDER.format(t="products")} LIMIT {candidates})""")
    sql = f"""
WITH exact AS (
    SELECT id, name, rating FROM products
     WHERE status = 'active' AND {exact}
     ORDER BY {_SUGGEST_ORDER.format(t="products")} LIMIT {limit}
)
SELECT {_names("exact")} AS hits,
       {typos} AS typos,
       {_TAXONOMY_NAMES}
"""
    return Statement(sql, tuple(args.values))


def taxonomy_count_statement(matches: TaxonomyMatches) -> Statement:
    """Active products per matched fandom and category name."""
    args = _Args()
    counts = [
        f"SELECT '{kind}' AS kind, {kind} AS name, count(*) AS n FROM products"
        f" WHERE status = 'active' AND {kind} = ANY({args.add(matches.names(kind))}::text[]) GROUP BY {kind}"
        for kind in TAXONOMY_KINDS
    ]
    return Statement("\nUNION ALL\n".join(counts), tuple(args.values))


def suggest_response(
    req: SuggestRequest,
    row: Mapping[str, Any],
    matches: TaxonomyMatches,
    counts: Iterable[Mapping[str, Any]] = (),
    took_ms: int = 0,
) -> dict[str, Any]:
    """The engine-shaped suggestions: product hits, and fandom and category buckets under
    ``taxonomy`` — exact matches under the kind, typo matches under ``kind + FUZZY_SUFFIX``."""
    products = {(r["kind"], r["name"]): int(r["n"]) for r in counts}
    taxonomy = taxonomy_aggregations(req, matches, products)
    typed = words(req.q)
    names = [
        *(_json(row.get("hits")) or ()),
        *(p for p in _json(row.get("typos")) or () if starts_every(p[1], typed, True)),
    ]
    hits = [
        {"_id": str(i), "_source": {"id": str(i), "name": name}} for i, name in names[: req.size * SUGGEST_HIT_FACTOR]
    ]
    return {"took": took_ms, "hits": {"hits": hits}, "aggregations": {SUGGEST_TAXONOMY: taxonomy}}


# --- detail pages -----------------------------------------------------------------------------

_PRODUCT_SQL: Final = f"{PRODUCT_ROWS_SQL} WHERE p.id = $1 AND p.status = 'active'"


def product_statement(product_id: int) -> Statement:
    """The active product ``product_id``, with its seller's name."""
    return Statement(_PRODUCT_SQL, (product_id,))


def product_response(row: Mapping[str, Any] | None, took_ms: int = 0) -> dict[str, Any]:
    """The engine-shaped answer ``proxy.query.build_product`` asks for: one hit, or none."""
    try:
        source = None if row is None else _source(row)
    except UnindexableRow:
        source = None  # not in the index either: not found, as the engine would say
    if source is None:
        return _response(0, [], took_ms)
    return _response(1, [{"_id": source["id"], "_source": source}], took_ms)


_SELLER_SQL: Final = f"""
WITH listed AS (
    SELECT fandom, category FROM products WHERE seller_id = $1 AND status = 'active'
)
SELECT s.id, s.name, (SELECT count(*) FROM listed) AS total,
       {_top_values("fandom", "count(*)", "listed", "true", SELLER_TOP_VALUES)},
       {_top_values("category", "count(*)", "listed", "true", SELLER_TOP_VALUES)}
  FROM sellers s
 WHERE s.id = $1
"""


def seller_statement(seller_id: int) -> Statement:
    """A seller's name, active product count, and top fandoms and categories."""
    return Statement(_SELLER_SQL, (seller_id,))


def seller_response(row: Mapping[str, Any] | None, took_ms: int = 0) -> dict[str, Any]:
    """The engine-shaped answer ``proxy.query.build_seller`` asks for: the active product count,
    one hit carrying the ``seller``, and the top values; no hit when nothing is listed."""
    if row is None or not row["total"]:
        return _response(0, [], took_ms)
    seller = {"seller": {"id": str(row["id"]), "name": row["name"]}}
    return _response(
        int(row["total"]),
        [{"_source": seller}],
        took_ms,
        fandom=_buckets(_json(row["fandom"])),
        category=_buckets(_json(row["category"])),
    )
