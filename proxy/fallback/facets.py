"""Browse facets held in memory: a browse's total and facets counted without asking Postgres.

A browse (a search without ``q``) counts every active product, because its facets are
disjunctive (each counts with every filter but its own): at 150,000 products an index-only scan
and an aggregate of 50–130 ms per browse, the bulk of the fallback's browse latency
(``benchmarks/results/fallback-profile-2026-12-06.md``). The answer depends only on the
catalog, not on the request, until the catalog changes — so it is counted here, from a copy.

:class:`FacetCounts` holds every active product's category, fandom, stock state and price
(``proxy.fallback.sql.FACET_COUNTS_SQL``: a few hundred groups, each with its prices in
whole cents, sorted) and answers a browse's :class:`~proxy.fallback.sql.Counts` exactly as the
search statement counts them: price bounds inclusive, buckets as ``width_bucket`` numbers
them, facet values by count then value in bytes, at most ``FACET_SIZES``, none counted 0.

:class:`HeldFacets` keeps one at most ``max_age`` seconds old: once it is half that old, the
next browse starts a refresh in the background (one at a time) and is answered from the held
counts meanwhile; counts older than ``max_age`` are never served — a browse then waits for the
refresh, at most its queue budget (``counts(within=…)``), and counts in its own statement after.
While browses keep coming (one in the last :data:`KEEP_FRESH_S`), a task refreshes every half
``max_age`` too, so that a browse after a lull of a few seconds does not wait.
Pages are never held: ``proxy.fallback.postgres`` reads each from Postgres.

Never: read Postgres itself (the loader it is given does), or hold counts for a text search or
a seller filter (``proxy.fallback.sql.counts_held``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from array import array
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import pairwise
from typing import Any, Final

from catalog.mapping import PRICE_BUCKETS
from proxy.errors import BackendUnavailable
from proxy.fallback.sql import Counts, numeric
from proxy.params import SearchRequest
from proxy.query import FACET_SIZES
from proxy.tasks import cancel_and_wait

log = logging.getLogger("hos_search.proxy.fallback")

# Prices sorted between two yields to the event loop while counts are built: sorting all
# 127,531 prices of the 150,000-product catalog took 39 ms on the busy two-core machine, a
# stall every request in flight would have waited out.
_SORTED_PER_PAUSE: Final = 20_000

# How long after the last browse the counts are still kept fresh. Refreshed only when a browse
# came, counts went stale in every lull longer than half their maximum age: in
# benchmarks.fallback's alternating rounds (4-5 s between one proxy's turns), browses waiting
# for a refresh were its browse p99 (page 223 ms, against 123 ms with counts held a minute).
KEEP_FRESH_S: Final = 60.0


def _cents_at_least(value: Decimal) -> int:
    """The fewest whole cents that are at least ``value``: ``price >= value`` as cents."""
    return math.ceil(value * 100)


def _cents_at_most(value: Decimal) -> int:
    return math.floor(value * 100)


# The price buckets' lower bounds after the first, in cents: width_bucket(price, bounds) is the
# number of bounds at or below the price (sql._PRICE_BOUNDS writes the same floats).
_BUCKET_BOUNDS: Final = tuple(_cents_at_least(numeric(low)) for _, low, _ in PRICE_BUCKETS[1:] if low is not None)


@dataclass(frozen=True, slots=True)
class _Group:
    """The active products of one category and fandom that are in stock, or not."""

    category: str
    fandom: str
    in_stock: bool
    cents: array[int]  # every product's price in whole cents, ascending
    buckets: tuple[int, ...]  # products per price bucket, by width_bucket number

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> _Group:
        cents = array("q", sorted(row["cents"]))
        edges = [0, *(bisect_left(cents, bound) for bound in _BUCKET_BOUNDS), len(cents)]
        buckets = tuple(high - low for low, high in pairwise(edges))
        return cls(row["category"], row["fandom"], bool(row["in_stock"]), cents, buckets)

    def priced(self, low: int | None, high: int | None) -> int:
        """Products priced from ``low`` to ``high`` cents, both included (None: unbounded)."""
        start = 0 if low is None else bisect_left(self.cents, low)
        end = len(self.cents) if high is None else bisect_right(self.cents, high)
        return max(0, end - start)


def _top(counts: Counter[str], size: int) -> list[tuple[str, int]]:
    # By count, then by value: Python compares code points, which is UTF-8's byte order, the
    # statement's COLLATE "C".
    return sorted(((value, n) for value, n in counts.items() if n), key=lambda pair: (-pair[1], pair[0]))[:size]


class FacetCounts:
    """Every active product, counted by category, fandom, stock state and price."""

    __slots__ = ("_groups", "products")

    def __init__(self, groups: Iterable[_Group]) -> None:
        self._groups = tuple(groups)
        self.products = sum(len(group.cents) for group in self._groups)

    @classmethod
    def of_rows(cls, rows: Iterable[Mapping[str, Any]]) -> FacetCounts:
        """From the rows of ``FACET_COUNTS_SQL``."""
        return cls(_Group.of(row) for row in rows)

    @classmethod
    async def built(cls, rows: Iterable[Mapping[str, Any]]) -> FacetCounts:
        """:meth:`of_rows`, letting the event loop run every ``_SORTED_PER_PAUSE`` prices."""
        groups: list[_Group] = []
        since_pause = 0
        for row in rows:
            groups.append(_Group.of(row))
            since_pause += len(row["cents"])
            if since_pause >= _SORTED_PER_PAUSE:
                since_pause = 0
                await asyncio.sleep(0)
        return cls(groups)

    def counts(self, req: SearchRequest) -> Counts:
        """``req``'s total and disjunctive facets (a browse: ``req``'s ``q`` and seller are not read)."""
        low = None if req.min_price is None else _cents_at_least(numeric(req.min_price))
        high = None if req.max_price is None else _cents_at_most(numeric(req.max_price))
        priced = low is not None or high is not None
        categories, fandoms = frozenset(req.categories), frozenset(req.fandoms)
        total = 0
        by_category: Counter[str] = Counter()
        by_fandom: Counter[str] = Counter()
        counted: list[tuple[int, ...]] = []  # the price buckets of every group the total counts
        for group in self._groups:
            if req.in_stock is not None and group.in_stock != req.in_stock:
                continue
            in_categories = not categories or group.category in categories
            in_fandoms = not fandoms or group.fandom in fandoms
            if not (in_categories or in_fandoms):
                continue
            n = group.priced(low, high) if priced else len(group.cents)
            if in_fandoms:
                by_category[group.category] += n
            if in_categories:
                by_fandom[group.fandom] += n
            if in_categories and in_fandoms:
                total += n
                counted.append(group.buckets)  # the price facet counts without the price filter
        return Counts(
            total,
            _top(by_category, FACET_SIZES["category"]),
            _top(by_fandom, FACET_SIZES["fandom"]),
            [(bucket, n) for bucket, n in enumerate(map(sum, zip(*counted, strict=True))) if n],
        )


Loader = Callable[[], Awaitable[Sequence[Mapping[str, Any]]]]


class HeldFacets:
    """One :class:`FacetCounts` at most ``max_age`` seconds old (from when its reading began),
    refreshed by ``load`` (the rows of ``FACET_COUNTS_SQL``) one refresh at a time."""

    def __init__(self, load: Loader, max_age: float, clock: Callable[[], float] = time.monotonic) -> None:
        if max_age <= 0:
            raise ValueError("held facets need a positive maximum age")
        self._load = load
        self.max_age = max_age
        self._clock = clock
        self._held: FacetCounts | None = None
        self._read_at = -math.inf  # when the held counts' reading began (clock seconds)
        self._refresh: asyncio.Task[FacetCounts | None] | None = None
        self._asked_at = -math.inf  # the last browse (clock seconds)
        self._keeper: asyncio.Task[None] | None = None

    @property
    def held(self) -> FacetCounts | None:
        """The counts held now, whatever their age; reads nothing."""
        return self._held

    @property
    def age(self) -> float:
        """Seconds since the held counts' reading began (infinite: none held)."""
        return self._clock() - self._read_at

    async def counts(self, within: float = math.inf) -> FacetCounts | None:
        """Counts no older than ``max_age``; None when they cannot be read, or not ``within``
        seconds (the refresh goes on for the browses to come): the caller counts in its own
        statement, which fails or not on its own.

        ``within`` is a browse's queue budget: at twice the engine's capacity, the browses that
        found no counts waited for a refresh of 130-200 ms on a busy Postgres and were then shed
        for want of a slot, which set the 503s' p99 (165 ms against a goal of 50, issue 24)."""
        self._asked_at = self._clock()
        if self._keeper is None:
            self._keeper = asyncio.ensure_future(self._keep_fresh())
        age = self.age
        if self._held is not None and age <= self.max_age:
            if age >= self.max_age / 2:
                self._refreshing()  # ahead of need: the browses to come seldom wait
            return self._held
        try:
            async with asyncio.timeout(None if within == math.inf else max(0.0, within)):
                # Shielded: a browse that gives up must not cancel the refresh others wait for.
                return await asyncio.shield(self._refreshing())
        except TimeoutError:
            return None

    async def _keep_fresh(self) -> None:
        """Refresh every half ``max_age`` until no browse came for ``KEEP_FRESH_S``."""
        try:
            while self._clock() - self._asked_at <= KEEP_FRESH_S:
                await asyncio.sleep(self.max_age / 2)
                if self.age >= self.max_age / 2:
                    await asyncio.shield(self._refreshing())
        finally:
            self._keeper = None

    async def settled(self) -> None:
        """Once the refresh in flight, if any, has ended."""
        if self._refresh is not None:
            await asyncio.shield(self._refresh)

    def _refreshing(self) -> asyncio.Task[FacetCounts | None]:
        if self._refresh is None:
            self._refresh = asyncio.ensure_future(self._refreshed())
        return self._refresh

    async def _refreshed(self) -> FacetCounts | None:
        began = self._clock()
        try:
            counts = await FacetCounts.built(await self._load())
        except BackendUnavailable as exc:  # the loader's database failures, already logged
            log.warning("fallback facet counts not refreshed: %s", exc.detail)
            return None
        finally:
            self._refresh = None
        self._held, self._read_at = counts, began
        return counts

    async def close(self) -> None:
        for task in (self._keeper, self._refresh):
            if task is not None:
                await cancel_and_wait(task)
