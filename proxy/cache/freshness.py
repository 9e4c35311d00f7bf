"""Judging a cached answer: HIT, REFRESH (a HIT that also starts a background refresh), STALE
(serve it and refresh it in the background) or MISS.

Pure code: what this worker knows about the catalog (:class:`CatalogView`, fed by
``proxy.cache.subscriber``) and the rules that turn it, an entry and the time into a
:class:`Verdict`. Times are Unix seconds (``time.time()``): entries travel between workers and
hosts through Redis, so their ``fetched_at`` must mean the same everywhere.

The rules (``Policy``), for an entry of age *a* fetched at catalog generation *g*:

1. *a* > ``ttl``: MISS. (Still servable as STALE when the engine fails, up to
   ``ttl + stale_if_error``: :meth:`Policy.usable_on_error`.)
2. **Dirty** — an announcement after *g* names one of the entry's tags (a product it shows, its
   seller; ``catalog.cache_generation``) or "everything", or the worker cannot tell (see 4): the
   answer shows something that changed. STALE for at most ``max_stale`` after the first such
   announcement, then MISS. This is the hard bound that keeps a changed product's page,
   search listings showing it, and its seller's page within two seconds of the commit.
3. **Clean** but the catalog moved on since *g* (other products changed): the products shown
   are current, only totals, facet counts or a newly matching product may lag. HIT while
   *a* ≤ ``revalidate_after``, then STALE (one background refresh brings it up to date).
   Steady price changes elsewhere in the catalog therefore cost no misses, while popular
   pages still catch up with new products within ``revalidate_after``.
4. **Blind** — the worker has lost the announcements (Redis or the subscription down) since
   ``lost_at``: nothing can be proven clean, so every entry is judged by how long it has gone
   unverified (since it was fetched, or since ``lost_at`` if later): HIT for the first half
   of ``max_stale``, STALE for the second half, then MISS. The cache becomes a short
   micro-cache and never serves anything unverified for longer than ``max_stale``.

Lifetimes are jittered: each entry's ``ttl`` and ``revalidate_after`` are shortened by up to
``jitter`` of themselves, by the entry's own ``spread`` (from its ETag, so every worker agrees).

Refresh-ahead: a HIT (nothing changed since *g*, or rule 3's) within ``refresh_ahead`` of its
jittered ``ttl`` is a REFRESH — served as the HIT it is while one background refresh replaces it — so an
entry asked for at least once in that window never expires. Without it (issue 24), the stress
run, in which nothing changes, fell from 11.6k to 4.2k req/s about 60 s in: the entries filled
during the ramp-up came due together (the 10 % jitter spreads them over 6 s only), its
``expired`` misses rose from 0 to the bulk of the misses from the first second past the band,
and every request for one of them waited on the engine.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from catalog.cache_generation import ANY_SELLER, Announcement
from proxy.cache.entry import Entry

UNKNOWN_GENERATION = -1


class Verdict(enum.Enum):
    HIT = "HIT"
    # A HIT within ``refresh_ahead`` of its ttl: served as a HIT, one background refresh started.
    REFRESH = "REFRESH"
    STALE = "STALE"
    MISS = "MISS"

    @property
    def shown(self) -> str:
        """The X-Cache of an answer so judged, and (lower-cased) its lookup counters' result: a
        REFRESH is the HIT it serves."""
        return "HIT" if self is Verdict.REFRESH else self.value


@dataclass(frozen=True, slots=True)
class Policy:
    ttl: float = 60.0
    revalidate_after: float = 15.0
    max_stale: float = 0.5
    stale_if_error: float = 300.0
    # Lifetimes shortened by up to this fraction, per entry (see the module's docstring).
    jitter: float = 0.1
    # A HIT this close to its ttl starts a background refresh (REFRESH); 0: entries just expire.
    refresh_ahead: float = 10.0

    def __post_init__(self) -> None:
        if not 0 <= self.jitter < 1:
            raise ValueError("a cache policy's jitter is a fraction in [0, 1)")
        if self.refresh_ahead < 0:
            raise ValueError("a cache policy's refresh_ahead is not negative")

    @property
    def shortest_ttl(self) -> float:
        """No entry lives shorter than this: younger ones are never expired."""
        return self.ttl * (1 - self.jitter)

    def usable_on_error(self, entry: Entry, now: float) -> bool:
        """Whether ``entry`` may stand in (as STALE) for an answer the engine failed to give."""
        return now - entry.fetched_at <= self.ttl + self.stale_if_error


class CatalogView:
    """The catalog generation and the recent announcements, as one worker knows them.

    Announcements are remembered for ``policy.ttl`` seconds (older entries are expired
    anyway); below the remembered window (``floor``) nothing is known, and an entry from
    there is dirty since the moment the window began.
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.generation = UNKNOWN_GENERATION
        # Every announcement after ``floor`` is known; ``floor_at`` is when that began.
        self.floor = UNKNOWN_GENERATION
        self.floor_at = 0.0
        # None: following the announcements; else since when they are lost.
        self.lost_at: float | None = 0.0
        # tag -> [(generation, announced at)], oldest first; "everything" under _EVERYTHING.
        self._changes: dict[str, list[tuple[int, float]]] = {}
        self._log: deque[tuple[int, float, Iterable[str]]] = deque()

    # --- fed by the subscriber ---------------------------------------------------------------

    def follow(self, generation: int, now: float) -> None:
        """The generation read while (re)subscribing: announcements are followed from here.

        If the counter moved while nobody was listening, what changed is unknown: everything.
        """
        if self.generation == UNKNOWN_GENERATION or generation < self.generation:
            # First contact, or the counter went backwards (Redis flushed): start afresh.
            self._changes.clear()
            self._log.clear()
            self.floor, self.floor_at = generation, now
        elif generation > self.generation:
            self._record(generation, now, (_EVERYTHING,))
        self.generation = generation
        self.lost_at = None

    def announce(self, announcement: Announcement, now: float) -> None:
        if self.lost_at is not None or announcement.generation <= self.generation:
            return  # not following (follow() catches up) or a duplicate / an old message
        missed = announcement.generation > self.generation + 1
        tags: Iterable[str] = (_EVERYTHING,) if announcement.everything or missed else announcement.tags
        self._record(announcement.generation, now, tags)
        self.generation = announcement.generation
        self._forget(now)

    def lose(self, now: float) -> None:
        """Announcements can no longer be followed (until the next :meth:`follow`)."""
        if self.lost_at is None:
            self.lost_at = now

    @property
    def following(self) -> bool:
        return self.lost_at is None

    # --- asked on every request --------------------------------------------------------------

    def judge(self, entry: Entry, now: float) -> Verdict:
        policy = self.policy
        age = now - entry.fetched_at
        spread = 1 - policy.jitter * entry.spread
        expires = policy.ttl * spread
        if age > expires:
            return Verdict.MISS
        if self.lost_at is not None:
            return self._blind(now - max(entry.fetched_at, self.lost_at))
        if entry.generation >= self.generation:
            return Verdict.HIT if age <= expires - policy.refresh_ahead else Verdict.REFRESH
        dirty_since = self.dirty_since(entry)
        if dirty_since is not None:
            return Verdict.STALE if now - dirty_since <= policy.max_stale else Verdict.MISS
        if age > policy.revalidate_after * spread:
            return Verdict.STALE
        return Verdict.HIT if age <= expires - policy.refresh_ahead else Verdict.REFRESH

    def miss_reason(self, entry: Entry | None, now: float) -> str:
        """Why ``entry`` (judged MISS, or None: nothing cached) cannot be served: ``absent``,
        ``expired`` (past its ttl), ``blind`` (announcements lost for over ``max_stale``) or
        ``changed`` (it shows something announced as changed over ``max_stale`` ago)."""
        if entry is None:
            return "absent"
        if now - entry.fetched_at > self.policy.ttl * (1 - self.policy.jitter * entry.spread):
            return "expired"
        return "blind" if self.lost_at is not None else "changed"

    def dirty_since(self, entry: Entry) -> float | None:
        """When the first announcement after the entry that concerns it was made; None if none."""
        generation = entry.generation
        if generation < self.floor:
            return self.floor_at
        first: float | None = None
        for tag in _concerning(entry.tags):
            for changed, at in self._changes.get(tag, ()):
                if changed > generation:
                    if first is None or at < first:
                        first = at
                    break  # lists are in generation order: the first newer one is the earliest
        return first

    def _blind(self, unverified_for: float) -> Verdict:
        if unverified_for <= self.policy.max_stale / 2:
            return Verdict.HIT
        return Verdict.STALE if unverified_for <= self.policy.max_stale else Verdict.MISS

    # --- bookkeeping -------------------------------------------------------------------------

    def _record(self, generation: int, now: float, tags: Iterable[str]) -> None:
        tags = tuple(tags)
        for tag in tags:
            self._changes.setdefault(tag, []).append((generation, now))
        self._log.append((generation, now, tags))

    def _forget(self, now: float) -> None:
        """Drop announcements older than the ttl; the floor rises past them."""
        horizon = now - self.policy.ttl
        while self._log and self._log[0][1] < horizon:
            generation, at, tags = self._log.popleft()
            for tag in tags:
                changes = self._changes.get(tag)
                if changes and changes[0][0] == generation:
                    changes.pop(0)
                    if not changes:
                        del self._changes[tag]
            self.floor, self.floor_at = generation, at


# The pseudo-tag under which "everything changed" is recorded: it concerns every entry.
_EVERYTHING = "*"


def _concerning(tags: frozenset[str]) -> Iterable[str]:
    """The recorded tags that concern an entry with ``tags``."""
    yield _EVERYTHING
    seller_page = False
    for tag in tags:
        yield tag
        seller_page = seller_page or tag.startswith("s:")
    if seller_page:
        yield ANY_SELLER
