"""Parsing and validating the query parameters of ``/api/search`` and its suggestions.

Turns a multidict of query parameters (aiohttp's ``request.query``) into a frozen, canonical
:class:`SearchRequest` or :class:`SuggestRequest`, or raises one :class:`InvalidParameters`
listing every problem at once. Everything downstream (query building, caching, the fallback)
trusts these objects, so all validation lives here.

Decisions, part of the API contract, and stated in the OpenAPI document (``proxy.openapi``,
built from the constants here; the tests generate requests from that document and check that
this parser accepts exactly what it calls valid):

- **Unknown parameters are ignored**, so storefront links carrying ``utm_*``, ``gclid`` or a
  cache-buster keep working. They never reach the cache key either.
- **An empty value means "not given"** (``min_price=&in_stock=``), because HTML forms send
  empty fields for unset filters; the document marks every optional parameter
  ``allowEmptyValue``. The suggestions' ``q`` is required, so empty is a 400 there.
- **Numbers and enumerations are exact**: ``page``, ``size``, ``min_price``, ``max_price``,
  ``in_stock`` and ``sort`` are not trimmed or case-folded (``size=%205``, ``in_stock=TRUE``: 400), so
  what the document calls valid is all that is accepted. Numbers are plain decimal notation.
- **Single-valued parameters** (``q``, ``min_price``, ``max_price``, ``in_stock``, ``sort``,
  ``page``, ``size``) given more than once are a 400 naming the parameter, even when the
  values agree: the client is confused, and guessing which one it meant hides the bug.
- **Multi-valued filters** (``category``, ``fandom``, ``seller_id``) may be repeated and/or
  comma-separated; values are trimmed, empties dropped, duplicates removed and the result
  sorted, so a value can never contain a comma. Category and fandom values are exact and
  case-sensitive (they are keyword fields). A value's length limit counts it as sent, and the
  limit on the number of values counts repeats too. Seller ids are integers from 1.
- ``in_stock`` accepts exactly ``true``, ``false``, ``1`` and ``0``; ``false`` filters to
  out-of-stock products (it is a filter value, not "don't care" — omit it or send it empty).
- ``q`` is NFC-normalised, stripped and its whitespace runs collapsed to one space; its length
  limit counts the text as sent (as an HTML ``maxlength`` does), before that normalisation.
  Control characters other than whitespace are rejected (:data:`TEXT_PATTERN`). Any other text,
  including ``name:*``, ``AND``, quotes or JSON, is plain text to search for. A suggestions
  prefix must hold something other than whitespace (:data:`PREFIX_PATTERN`).
- ``sort=relevance`` without ``q`` is ``newest`` (there is no relevance to rank by), and the
  request stores the sort actually used.

- Percent-escaped bytes that are not UTF-8 in a known parameter are a 400 (aiohttp would
  otherwise hand us U+FFFD replacement characters): see :func:`invalid_utf8_params`.
- **A known parameter's name must be sent plain**: ``pag%65=6`` is a 400 naming ``page``
  (:func:`encoded_param_names`). Decoded, it would be ``page=6``, but a CDN whose cache key lists
  parameter names (``docs/cdn.md``) does not decode names, would key it as the page-1 URL, and
  serve page 6 to everyone asking for page 1 (issue 23). Unknown names may be encoded as they like.

This module never builds engine queries, never performs I/O and never raises anything but
:class:`InvalidParameters` for bad input.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final, Literal, Protocol, cast, get_args
from urllib.parse import unquote_to_bytes

from proxy.errors import InvalidParameters

Sort = Literal["relevance", "newest", "price_asc", "price_desc", "rating"]
SORTS: Final[frozenset[str]] = frozenset(get_args(Sort))
_SORTS_TEXT = ", ".join(get_args(Sort))

MAX_QUERY_CHARS: Final = 200
MAX_SUGGEST_QUERY_CHARS: Final = 100
MAX_FILTER_VALUES: Final = 20
MAX_FILTER_VALUE_CHARS: Final = 100
MAX_PRICE: Final = 10_000_000.0
DEFAULT_PAGE_SIZE: Final = 20
MAX_PAGE_SIZE: Final = 100
DEFAULT_SUGGEST_SIZE: Final = 8
MAX_SUGGEST_SIZE: Final = 20
# The index's max_result_window: the engine refuses from + size beyond it.
MAX_RESULT_WINDOW: Final = 10_000
# Postgres bigint: a seller id beyond it cannot exist, and the fallback would choke on it.
MAX_ID: Final = 2**63 - 1

# Whitespace controls are allowed (and collapsed); every other control character is rejected.
# \x1c-\x1f and \x85 count as whitespace for str.split() but are controls, so they are rejected.
_WHITESPACE_CONTROLS: Final = frozenset("\t\n\r\v\f")
# The same rules as regular expressions, for the OpenAPI document's ``pattern``s (ECMA-262 and
# Python's re read these escapes alike). Controls: C0 and C1 (category Cc) minus \t\n\v\f\r.
_CONTROLS_CLASS: Final = r"\u0000-\u0008\u000e-\u001f\u007f-\u009f"
# What str.split() collapses, minus those controls: the whitespace of a prefix that is "empty".
_SPACES_CLASS: Final = r"\t\n\u000b\u000c\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
TEXT_PATTERN: Final = f"^[^{_CONTROLS_CLASS}]*$"
PREFIX_PATTERN: Final = f"^[^{_CONTROLS_CLASS}]*[^{_CONTROLS_CLASS}{_SPACES_CLASS}][^{_CONTROLS_CLASS}]*$"
FILTER_VALUE_PATTERN: Final = f"^[^,{_CONTROLS_CLASS}]*$"
_DIGITS = re.compile(r"[0-9]+")
# Plain decimal notation only: no exponent, "+", "nan", "inf", digit separators or spaces. A
# minus sign parses, so that "-5" is told "must not be negative" (and "-0" is 0).
_DECIMAL = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
# A number this long is out of range anyway; the cap keeps int()/float() on junk cheap.
MAX_NUMBER_CHARS: Final = 32
_INT_REASON: Final = "must be an integer ≥ 1"
_BOOLEANS: Final = {"true": True, "false": False, "1": True, "0": False}
IN_STOCK_VALUES: Final = tuple(_BOOLEANS)

# The parameters each endpoint reads; everything else is ignored.
SEARCH_PARAMS: Final = frozenset(
    {"q", "category", "fandom", "seller_id", "min_price", "max_price", "in_stock", "sort", "page", "size"}
)
SUGGEST_PARAMS: Final = frozenset({"q", "size"})


class QueryParams(Protocol):
    """What parsing needs from a multidict such as aiohttp's ``request.query``."""

    def getall(self, key: str, default: list[str], /) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """A validated ``/api/search`` request; filter tuples are sorted and de-duplicated."""

    q: str = ""
    categories: tuple[str, ...] = ()
    fandoms: tuple[str, ...] = ()
    seller_ids: tuple[str, ...] = ()
    min_price: float | None = None
    max_price: float | None = None
    in_stock: bool | None = None
    sort: Sort = "newest"
    page: int = 1
    size: int = DEFAULT_PAGE_SIZE

    @property
    def offset(self) -> int:
        """The engine's ``from``."""
        return (self.page - 1) * self.size


@dataclass(frozen=True, slots=True)
class SuggestRequest:
    """A validated ``/api/search/suggestions`` request."""

    q: str
    size: int = DEFAULT_SUGGEST_SIZE


class _Problems:
    """Collects (name, reason) pairs so one response lists every bad parameter."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, name: str, reason: str) -> None:
        self.items.append((name, reason))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidParameters(self.items)


def _single(params: QueryParams, name: str, problems: _Problems) -> str | None:
    """The one value of a single-valued parameter; None when absent or empty."""
    values = params.getall(name, [])
    if not values:
        return None
    if len(values) > 1:
        problems.add(name, "must be given at most once")
        return None
    return values[0] or None


def _control_character(text: str) -> str | None:
    """The first disallowed control (or lone surrogate) character in ``text``, if any."""
    for char in text:
        # Fast path: printable ASCII is by far the common case.
        if " " <= char <= "~":
            continue
        if char in _WHITESPACE_CONTROLS:
            continue
        # Cc: C0/C1 controls incl. NUL and DEL. Cs: lone surrogates, which no JSON encoder
        # (nor the engine) accepts.
        if unicodedata.category(char) in ("Cc", "Cs"):
            return char
    return None


def _text(raw: str, name: str, max_chars: int, problems: _Problems) -> str:
    """Normalised free text, or "" after recording why it is invalid."""
    bad = _control_character(raw)
    if bad is not None:
        problems.add(name, f"must not contain control characters (found U+{ord(bad):04X})")
        return ""
    # The limit counts what was sent, as the document's maxLength does: normalising first would
    # accept a longer value whose spaces collapse, and refuse one that NFC expands.
    if len(raw) > max_chars:
        problems.add(name, f"must be at most {max_chars} characters (got {len(raw)})")
        return ""
    return " ".join(unicodedata.normalize("NFC", raw).split())


def _int(raw: str | None, name: str, high: int | None, default: int, problems: _Problems) -> int:
    """A positive integer up to ``high`` (None: any size; a later check bounds it)."""
    if raw is None:
        return default
    if len(raw) > MAX_NUMBER_CHARS or not _DIGITS.fullmatch(raw) or int(raw) < 1:
        problems.add(name, _INT_REASON if high is None else f"must be an integer from 1 to {high}")
        return default
    value = int(raw)
    if high is not None and value > high:
        problems.add(name, f"must be an integer from 1 to {high}")
        return default
    return value


def _price(raw: str | None, name: str, problems: _Problems) -> float | None:
    if raw is None:
        return None
    if len(raw) > MAX_NUMBER_CHARS or not _DECIMAL.fullmatch(raw):
        problems.add(name, "must be a decimal number such as 19.99")
        return None
    value = float(raw)
    if value < 0:
        problems.add(name, "must not be negative")
        return None
    value = abs(value)  # -0.0 is 0: the same request, the same cache key
    if not math.isfinite(value) or value > MAX_PRICE:
        problems.add(name, f"must be at most {MAX_PRICE:.0f}")
        return None
    return value


def _values(params: QueryParams, name: str, problems: _Problems) -> tuple[str, ...]:
    """A repeatable, comma-separated filter: trimmed, de-duplicated, sorted."""
    seen: set[str] = set()
    count = 0
    for raw in params.getall(name, []):
        for part in raw.split(","):
            # Checked as sent, before trimming: strip() would remove \x1c-\x1f and \x85 at the
            # ends, which are controls, and the limit counts what was sent (the document's maxLength).
            bad = _control_character(part)
            if bad is not None:
                problems.add(name, f"must not contain control characters (found U+{ord(bad):04X})")
                return ()
            if len(part) > MAX_FILTER_VALUE_CHARS:
                problems.add(name, f"each value must be at most {MAX_FILTER_VALUE_CHARS} characters")
                return ()
            value = unicodedata.normalize("NFC", part.strip())
            if not value:
                continue
            # Every value counts, repeats too, as the document's maxItems counts items; and the
            # loop ends at the first value too many, however many were sent.
            count += 1
            if count > MAX_FILTER_VALUES:
                problems.add(name, f"must have at most {MAX_FILTER_VALUES} values")
                return ()
            seen.add(value)
    return tuple(sorted(seen))


def _seller_ids(params: QueryParams, problems: _Problems) -> tuple[str, ...]:
    ids: set[int] = set()
    for value in _values(params, "seller_id", problems):
        if len(value) > MAX_NUMBER_CHARS or not _DIGITS.fullmatch(value) or not 0 < int(value) <= MAX_ID:
            problems.add("seller_id", f"must be positive integers (got {value[:20]!r})")
            return ()
        ids.add(int(value))
    # As strings, because the index stores seller.id as a keyword; via int so "007" is "7".
    return tuple(str(i) for i in sorted(ids))


def parse_search(params: QueryParams) -> SearchRequest:
    """Validate ``/api/search`` parameters; raises InvalidParameters listing every problem."""
    problems = _Problems()

    raw_q = _single(params, "q", problems)
    q = "" if raw_q is None else _text(raw_q, "q", MAX_QUERY_CHARS, problems)

    categories = _values(params, "category", problems)
    fandoms = _values(params, "fandom", problems)
    seller_ids = _seller_ids(params, problems)

    min_price = _price(_single(params, "min_price", problems), "min_price", problems)
    max_price = _price(_single(params, "max_price", problems), "max_price", problems)
    if min_price is not None and max_price is not None and min_price > max_price:
        problems.add("min_price", f"must not be greater than max_price ({min_price:g} > {max_price:g})")

    in_stock: bool | None = None
    raw_in_stock = _single(params, "in_stock", problems)
    if raw_in_stock is not None:
        in_stock = _BOOLEANS.get(raw_in_stock)
        if in_stock is None:
            problems.add("in_stock", "must be true or false (or 1 or 0)")

    sort: Sort = "relevance" if q else "newest"
    raw_sort = _single(params, "sort", problems)
    if raw_sort is not None:
        if raw_sort in SORTS:
            sort = cast(Sort, raw_sort)
        else:
            problems.add("sort", f"must be one of {_SORTS_TEXT}")
    if sort == "relevance" and not q:
        sort = "newest"

    size = _int(_single(params, "size", problems), "size", MAX_PAGE_SIZE, DEFAULT_PAGE_SIZE, problems)
    page = _int(_single(params, "page", problems), "page", None, 1, problems)
    if page * size > MAX_RESULT_WINDOW:
        problems.add(
            "page",
            f"page × size must be at most {MAX_RESULT_WINDOW}; narrow the search instead of paging deeper",
        )

    problems.raise_if_any()
    return SearchRequest(
        q=q,
        categories=categories,
        fandoms=fandoms,
        seller_ids=seller_ids,
        min_price=min_price,
        max_price=max_price,
        in_stock=in_stock,
        sort=sort,
        page=page,
        size=size,
    )


def parse_suggest(params: QueryParams) -> SuggestRequest:
    """Validate ``/api/search/suggestions`` parameters; raises InvalidParameters."""
    problems = _Problems()
    raw_q = _single(params, "q", problems)
    q = "" if raw_q is None else _text(raw_q, "q", MAX_SUGGEST_QUERY_CHARS, problems)
    if not q and not any(name == "q" for name, _ in problems.items):
        problems.add("q", "is required (1 to 100 characters)")
    size = _int(_single(params, "size", problems), "size", MAX_SUGGEST_SIZE, DEFAULT_SUGGEST_SIZE, problems)
    problems.raise_if_any()
    return SuggestRequest(q=q, size=size)


def invalid_utf8_params(raw_query: str, names: Collection[str] = SEARCH_PARAMS) -> list[str]:
    """Which of ``names`` carry percent-escaped bytes that are not UTF-8, in query order.

    aiohttp (yarl) silently decodes such bytes to U+FFFD, so ``request.query`` cannot tell; this
    looks at ``request.rel_url.raw_query_string``. Unknown parameters are not reported, for the
    same reason they are ignored: a foreign tracking parameter must not break a search.
    """
    bad: list[str] = []
    for pair in raw_query.split("&"):
        if "%" not in pair:  # only escapes can carry non-UTF-8 bytes; the common case stops here
            continue
        raw_name, _, raw_value = pair.partition("=")
        try:
            name = unquote_to_bytes(raw_name.replace("+", " ")).decode("utf-8")
        except UnicodeDecodeError:
            continue  # a name that is not UTF-8 is not one of ours
        if name not in names or name in bad:
            continue
        try:
            unquote_to_bytes(raw_value.replace("+", " ")).decode("utf-8")
        except UnicodeDecodeError:
            bad.append(name)
    return bad


ENCODED_NAME_REASON: Final = "must be sent as its plain name, not percent-encoded"


def encoded_param_names(raw_query: str, names: Collection[str] = SEARCH_PARAMS) -> list[str]:
    """Which of ``names`` appear with a percent-encoded name (``pag%65``), in query order."""
    encoded: list[str] = []
    for pair in raw_query.split("&"):
        raw_name = pair.partition("=")[0]
        if "%" not in raw_name:
            continue
        try:
            name = unquote_to_bytes(raw_name.replace("+", " ")).decode("utf-8")
        except UnicodeDecodeError:
            continue  # a name that is not UTF-8 is not one of ours
        if name in names and name not in encoded:
            encoded.append(name)
    return encoded


def escape_problems(raw_query: str, names: Collection[str] = SEARCH_PARAMS) -> list[tuple[str, str]]:
    """What percent-escapes break in a raw query string: known names encoded, values not UTF-8."""
    if "%" not in raw_query:  # the common case: nothing escaped, nothing to check
        return []
    problems = [(name, ENCODED_NAME_REASON) for name in encoded_param_names(raw_query, names)]
    return problems + [(name, "is not valid UTF-8") for name in invalid_utf8_params(raw_query, names)]


_ID_REASON: Final = f"must be an integer from 1 to {MAX_ID}"


def parse_id(raw: str, name: str = "id") -> int:
    """A product or seller id from a path segment: plain decimal digits, 1 to ``MAX_ID``."""
    if len(raw) > MAX_NUMBER_CHARS or not _DIGITS.fullmatch(raw):
        raise InvalidParameters([(name, _ID_REASON)])
    value = int(raw)
    if not 1 <= value <= MAX_ID:
        raise InvalidParameters([(name, _ID_REASON)])
    return value
