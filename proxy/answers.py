"""Shaping the engine's search responses into the API's JSON, per the HTTP API contract.

Pure functions from a validated request and the engine's decoded ``_search`` response to the
dict the handler serialises. They read only what ``proxy.query`` asked for and tolerate
anything optional being absent (no ``rating``, no ``image_url``, no aggregations — e.g. a
fallback backend that cannot count facets).

Decisions, part of the API contract:

- ``pages`` counts the pages a client can actually request: at most
  ``MAX_RESULT_WINDOW // size``, because deeper pages are refused with a 400.
- Price facet buckets are ``{"key", "from", "to", "count"}`` in ``PRICE_BUCKETS`` order, every
  bucket present (zero counts included, so chips don't jump around), ``from``/``to`` always
  present and ``null`` for an open end. Counts are ``[from, to)``; the min/max_price filter
  is inclusive at both ends.
- ``took_ms`` is the engine's own ``took``: the milliseconds the backend spent computing these
  results, not the request's wall time (that is ``search_proxy_request_duration_seconds``).
  It belongs to the answer, so a cached body can be served as stored bytes and stay true.
- ``relaxed`` is always present: ``true`` when the strict query matched nothing and the items
  come from a relaxed one (``proxy.relaxation``); then ``did_you_mean`` is present when that
  relaxed search was for a spelling correction, which it names (the storefront shows
  "showing results for …"). Facets and totals always describe the items shown.
- Suggestions: see :func:`shape_suggest`.

Never: I/O, raising on a well-formed but sparse engine response, passing engine error text
or raw engine fields through to the client.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from itertools import chain
from typing import Any, Final

from catalog.mapping import PRICE_BUCKETS
from proxy.images import ImageUrls, safe_image_url
from proxy.params import MAX_RESULT_WINDOW, SearchRequest, SuggestRequest
from proxy.query import (
    FACET_VALUES,
    FUZZY_MIN_WORD_CHARS,
    FUZZY_SUFFIX,
    FUZZY_TWO_EDITS_CHARS,
    SPELLING,
    SUGGEST_TAXONOMY,
    TAXONOMY_KINDS,
    TAXONOMY_ONLY_SCORE,
)
from proxy.synonyms import fold

_EMPTY: Final[Mapping[str, Any]] = {}


def _number(value: float | None) -> float | int | None:
    """20.0 -> 20, as the contract's examples write bucket bounds."""
    if value is None:
        return None
    return int(value) if float(value).is_integer() else value


# (key, from, to) per bucket, with presentation-ready numbers, computed once.
_PRICE_FACET: Final = tuple((key, _number(low), _number(high)) for key, low, high in PRICE_BUCKETS)
_TERM_FACETS: Final = ("category", "fandom")

# Highlight safety. With ``"encoder": "html"`` the engine's highlighter (Lucene's
# SimpleHTMLEncoder) escapes the field text — & < > " ' / — both around and inside the tags, so
# the only markup left is our own <em>/</em>. An engine that ignored the encoder would hand us
# raw product text inside HTML; we check cheaply and drop such a highlight rather than pass it on.
_EM_OPEN: Final = "<em>"
_EM_CLOSE: Final = "</em>"


def _safe_highlight(fragment: str) -> str | None:
    rest = fragment.replace(_EM_OPEN, "").replace(_EM_CLOSE, "")
    if "<" in rest or ">" in rest:
        return None
    return fragment


def _item(hit: Mapping[str, Any], images: ImageUrls | None) -> dict[str, Any]:
    source: Mapping[str, Any] = hit.get("_source") or _EMPTY
    seller: Mapping[str, Any] = source.get("seller") or _EMPTY
    image_url = source.get("image_url")
    item: dict[str, Any] = {
        "id": str(source.get("id") or hit.get("_id", "")),
        "name": source.get("name", ""),
        "description": source.get("description") or "",
        "category": source.get("category"),
        "fandom": source.get("fandom"),
        "price": source.get("price"),
        "currency": source.get("currency"),
        "in_stock": bool(source.get("in_stock", False)),
        "rating": source.get("rating"),
        "seller": {"id": _str_or_none(seller.get("id")), "name": seller.get("name")},
        "image_url": safe_image_url(image_url) if images is None else images.url(image_url),
        "created_at": source.get("created_at"),
    }
    if images is not None and images.widths:
        item["image_srcset"] = images.srcset(image_url)
    fragments = (hit.get("highlight") or _EMPTY).get("name")
    if fragments:
        # number_of_fragments 0: one fragment, the whole name.
        safe = _safe_highlight(fragments[0])
        if safe is not None:
            item["highlight"] = {"name": safe}
    return item


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _total(hits: Mapping[str, Any]) -> tuple[int, str]:
    total = hits.get("total")
    if isinstance(total, Mapping):
        return int(total.get("value", 0)), str(total.get("relation", "eq"))
    if isinstance(total, int):  # engines answering with rest_total_hits_as_int
        return total, "eq"
    return 0, "eq"


def _buckets(aggregations: Mapping[str, Any], facet: str) -> list[Mapping[str, Any]]:
    agg = aggregations.get(facet) or _EMPTY
    # The buckets themselves, or under a filter aggregation (``proxy.query``'s facets).
    values = agg.get(FACET_VALUES) or agg
    buckets = values.get("buckets") or []
    # Range aggregations may be keyed (a dict of buckets) if someone flips "keyed" on.
    return list(buckets.values()) if isinstance(buckets, Mapping) else list(buckets)


def _term_facet(aggregations: Mapping[str, Any], facet: str) -> list[dict[str, Any]]:
    pairs = [(str(b["key"]), int(b.get("doc_count", 0))) for b in _buckets(aggregations, facet)]
    # The engine already orders so; sorting again makes the contract hold for any backend.
    pairs.sort(key=lambda pair: (-pair[1], pair[0]))
    return [{"value": value, "count": count} for value, count in pairs]


def _price_facet(aggregations: Mapping[str, Any]) -> list[dict[str, Any]]:
    counts = {str(b.get("key")): int(b.get("doc_count", 0)) for b in _buckets(aggregations, "price")}
    return [{"key": key, "from": low, "to": high, "count": counts.get(key, 0)} for key, low, high in _PRICE_FACET]


def total_hits(engine_body: Mapping[str, Any]) -> int:
    """How many products an engine ``_search`` response matched."""
    return _total(engine_body.get("hits") or _EMPTY)[0]


def correction(q: str, engine_body: Mapping[str, Any]) -> str | None:
    """``q`` with each word the spelling suggester corrected replaced; None if none was.

    Reads the term suggester ``proxy.query.spelling_suggester`` asked for: one entry per word
    of ``q`` with its ``offset`` and ``length`` in ``q``, and at most one option.
    """
    entries = (engine_body.get("suggest") or _EMPTY).get(SPELLING) or ()
    replacements: list[tuple[int, int, str]] = []
    for entry in entries:
        options = entry.get("options") or ()
        if not options:
            continue
        offset, length, text = entry.get("offset"), entry.get("length"), options[0].get("text")
        if not isinstance(offset, int) or not isinstance(length, int) or not isinstance(text, str) or not text:
            continue
        if 0 <= offset and offset + length <= len(q):
            replacements.append((offset, length, text))
    if not replacements:
        return None
    out, position = [], 0
    for offset, length, text in sorted(replacements):
        if offset < position:  # overlapping entries: keep the first
            continue
        out.append(q[position:offset])
        out.append(text)
        position = offset + length
    out.append(q[position:])
    corrected = "".join(out)
    return None if fold(corrected) == fold(q) else corrected


def shape_search(
    req: SearchRequest,
    engine_body: Mapping[str, Any],
    *,
    relaxed: bool = False,
    did_you_mean: str | None = None,
    images: ImageUrls | None = None,
) -> dict[str, Any]:
    """The ``/api/search`` response for ``req`` from the engine's ``_search`` response.

    ``relaxed`` and ``did_you_mean`` say how ``engine_body`` was obtained (``proxy.relaxation``);
    ``images`` how image URLs are given (``proxy.images``; None: as stored).
    """
    hits: Mapping[str, Any] = engine_body.get("hits") or _EMPTY
    total, relation = _total(hits)
    aggregations: Mapping[str, Any] = engine_body.get("aggregations") or _EMPTY
    pages = min(math.ceil(total / req.size), MAX_RESULT_WINDOW // req.size)
    body: dict[str, Any] = {
        "query": req.q,
        "total": total,
        "total_relation": relation,
        "page": req.page,
        "size": req.size,
        "pages": pages,
        "items": [_item(hit, images) for hit in hits.get("hits") or ()],
        "facets": {
            "category": _term_facet(aggregations, "category"),
            "fandom": _term_facet(aggregations, "fandom"),
            "price": _price_facet(aggregations),
        },
        "took_ms": int(engine_body.get("took") or 0),
        "relaxed": relaxed,
    }
    if did_you_mean is not None:
        body["did_you_mean"] = did_you_mean
    return body


def _taxonomy(aggregations: Mapping[str, Any], suffix: str) -> Iterator[tuple[str, str]]:
    """(text, type) for each fandom, then each category, of one match kind."""
    # The engine's answer has them at the top; the Postgres fallback's under SUGGEST_TAXONOMY.
    taxonomy = aggregations.get(SUGGEST_TAXONOMY) or aggregations
    for kind in TAXONOMY_KINDS:
        for bucket in _buckets(taxonomy, kind + suffix):
            yield str(bucket["key"]), kind


def shape_suggest(req: SuggestRequest, engine_body: Mapping[str, Any]) -> dict[str, Any]:
    """The ``/api/search/suggestions`` response: products, fandoms and categories, best first.

    At most ``req.size`` entries, de-duplicated by text ignoring case and spacing across types
    (the first wins, so a fandom listed first hides a product of the same name). Ordering:

    - When a fandom or category name *starts with* what was typed ("har" -> "Harry Potter",
      ignoring case and accents), the user is most likely typing that name: such names come
      first (at most half the list), then products, then the other fandoms and categories.
      A name that starts with a *corrected* spelling of what was typed ("pokmon" -> "Pokémon",
      within the edits of the query's typo matching) leads too, after the exact ones.
    - Otherwise products come first (in engine score order), with the last
      ``size // 4`` slots (at least one when ``size >= 4``) kept for fandoms and categories that
      matched a later word or a typo, so they are not crowded out.

    Among fandoms and categories: exact-prefix matches before typo matches, fandoms before
    categories, more products first.
    """
    prefix = fold(req.q)
    aggregations: Mapping[str, Any] = engine_body.get("aggregations") or _EMPTY
    taxonomy = _dedupe(
        (text, kind, None) for text, kind in chain(_taxonomy(aggregations, ""), _taxonomy(aggregations, FUZZY_SUFFIX))
    )
    hits: Mapping[str, Any] = engine_body.get("hits") or _EMPTY
    products = _dedupe(
        (str(source.get("name", "")), "product", str(source.get("id") or hit.get("_id", "")))
        for hit in hits.get("hits") or ()
        if (source := hit.get("_source") or _EMPTY).get("name") and not _taxonomy_only(hit)
    )

    exact = [t for t in taxonomy if fold(t[0]).startswith(prefix)]
    corrected = [t for t in taxonomy if t not in exact and starts_near(fold(t[0]), prefix)]
    leading = exact + corrected
    others = [t for t in taxonomy if t not in leading]
    if leading:
        # Half the list at most, so a prefix shared by many fandoms still shows products.
        lead = max(1, req.size // 2)
        ordered = leading[:lead] + products + leading[lead:] + others
    else:
        reserved = min(len(others), max(1, req.size // 4)) if req.size >= 4 else 0
        ordered = products[: req.size - reserved] + others + products[req.size - reserved :]

    suggestions: list[dict[str, Any]] = []
    for text, kind, product_id in _dedupe(ordered):
        entry: dict[str, Any] = {"text": text, "type": kind}
        if product_id is not None:
            entry["id"] = product_id
        suggestions.append(entry)
        if len(suggestions) == req.size:
            break
    return {"query": req.q, "suggestions": suggestions}


def _taxonomy_only(hit: Mapping[str, Any]) -> bool:
    """Whether a suggestion hit matched only a fandom or category name (``proxy.query.build_suggest``);
    hits without a score (the Postgres fallback's) matched by name."""
    score = hit.get("_score")
    return isinstance(score, int | float) and score <= TAXONOMY_ONLY_SCORE


def _edits_allowed(typed: str) -> int:
    """Edits forgiven in a typed prefix, as the query's typo matching forgives them."""
    return 0 if len(typed) < FUZZY_MIN_WORD_CHARS else 1 if len(typed) < FUZZY_TWO_EDITS_CHARS else 2


def _prefix_distances(a: str, b: str, limit: int) -> list[int]:
    """Optimal-string-alignment distances (a transposition is one edit) of ``a`` to every prefix
    of ``b``: item ``j`` is the distance to ``b[:j]`` — the last row of one table, where a table
    per prefix cost five times as much (the proxy matches every suggestion's fandom and category
    names with it, ``proxy.taxonomy``). Past ``limit`` the values are only known to be larger."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, start=1):
            cost = 0 if ca == cb else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        if min(current) > limit:  # every later row only grows
            return [limit + 1] * (len(b) + 1)
        previous2, previous = previous, current
    return previous


def starts_near(name: str, typed: str) -> bool:
    """Whether ``name`` starts with ``typed`` give or take a typo: "pokemon" for "pokmon"."""
    allowed = _edits_allowed(typed)
    if allowed == 0 or name[:1] != typed[:1]:
        return False
    distances = _prefix_distances(typed, name[: len(typed) + allowed], allowed)
    return min(distances[max(1, len(typed) - allowed) :], default=allowed + 1) <= allowed


def _dedupe(entries: Iterable[tuple[str, str, str | None]]) -> list[tuple[str, str, str | None]]:
    """First of each text equal ignoring case and spacing, in order (whatever its type)."""
    seen: set[str] = set()
    out: list[tuple[str, str, str | None]] = []
    for entry in entries:
        folded = " ".join(entry[0].split()).casefold()
        if folded not in seen:
            seen.add(folded)
            out.append(entry)
    return out


def shape_product(engine_body: Mapping[str, Any], images: ImageUrls | None = None) -> dict[str, Any] | None:
    """``/api/products/{id}``: the product as a search item shows it; None when not found."""
    hits = (engine_body.get("hits") or _EMPTY).get("hits") or ()
    return _item(hits[0], images) if hits else None


def shape_seller(seller_id: int, engine_body: Mapping[str, Any]) -> dict[str, Any] | None:
    """``/api/sellers/{id}``: name, active product count, top fandoms and categories.

    None when the seller has no active product: the storefront has nothing to show for it.
    """
    hits: Mapping[str, Any] = engine_body.get("hits") or _EMPTY
    total, _ = _total(hits)
    found = hits.get("hits") or ()
    if not total or not found:
        return None
    seller: Mapping[str, Any] = (found[0].get("_source") or _EMPTY).get("seller") or _EMPTY
    aggregations: Mapping[str, Any] = engine_body.get("aggregations") or _EMPTY

    def top(kind: str) -> list[dict[str, Any]]:
        buckets = (aggregations.get(kind) or _EMPTY).get("buckets") or ()
        pairs = sorted(((str(b["key"]), int(b.get("doc_count", 0))) for b in buckets), key=lambda p: (-p[1], p[0]))
        return [{"value": value, "count": count} for value, count in pairs]

    return {
        "id": str(seller_id),
        "name": seller.get("name"),
        "active_products": total,
        "top_fandoms": top("fandom"),
        "top_categories": top("category"),
    }
