"""The cache's pure parts: keys, entries, the L1 LRU and the freshness rules — no servers."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from catalog.cache_generation import ANY_SELLER, Announcement, product_tag, seller_tag
from proxy.cache.entry import ENTRY_OVERHEAD_BYTES, Entry
from proxy.cache.freshness import UNKNOWN_GENERATION, CatalogView, Policy, Verdict
from proxy.cache.keys import digest, product_key, request_key, seller_key
from proxy.cache.l1 import LRU

# No jitter and no refresh-ahead here: these tests pin the rules' boundaries; the jitter and the
# refresh-ahead have tests of their own.
POLICY = Policy(ttl=60.0, revalidate_after=5.0, max_stale=0.5, stale_if_error=300.0, jitter=0.0, refresh_ahead=0.0)
T0 = 1_000_000.0


def entry(generation: int, fetched_at: float = T0, tags: Iterable[str] = (), body: bytes = b"{}") -> Entry:
    return Entry(body, generation, fetched_at, frozenset(tags))


def following(generation: int = 10, at: float = T0 - 100) -> CatalogView:
    view = CatalogView(POLICY)
    view.follow(generation, at)
    return view


# --- keys and entries ----------------------------------------------------------------------------


def test_detail_keys_name_the_route_and_the_id() -> None:
    assert product_key(7) != seller_key(7)
    assert product_key(7) == product_key(int("007"))
    assert len(digest(product_key(7))) == 32
    assert digest(product_key(7)) != digest(product_key(8))


@given(
    body=st.binary(max_size=300),
    generation=st.integers(min_value=-1, max_value=2**62),
    fetched_at=st.floats(min_value=0, max_value=4e9),
    tags=st.frozensets(
        st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\n"), min_size=1, max_size=12)
    ),
)
def test_an_entry_survives_its_redis_encoding(
    body: bytes, generation: int, fetched_at: float, tags: frozenset[str]
) -> None:
    original = Entry(body, generation, fetched_at, tags)
    assert Entry.decode(original.encode()) == original


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x02" + b"\x00" * 40, b"\x01" + b"\x00" * 19 + b"\x7f\xff\xff\xff"])
def test_anything_but_an_entry_decodes_to_none(data: bytes) -> None:
    assert Entry.decode(data) is None


# --- L1 ------------------------------------------------------------------------------------------


def test_l1_evicts_the_least_recently_used_entry_when_full() -> None:
    lru = LRU(max_entries=2, max_bytes=10**6)
    lru.put("a", entry(1))
    lru.put("b", entry(1))
    assert lru.get("a") is not None  # a is now the most recently used
    lru.put("c", entry(1))
    assert lru.get("b") is None
    assert lru.get("a") is not None and lru.get("c") is not None
    assert len(lru) == 2


def test_l1_keeps_within_its_byte_budget() -> None:
    size = entry(1, body=b"x" * 100).size
    lru = LRU(max_entries=100, max_bytes=3 * size)
    for i in range(10):
        lru.put(str(i), entry(1, body=b"x" * 100))
        assert lru.bytes <= 3 * size
    assert len(lru) == 3
    assert lru.bytes == 3 * size


def test_l1_refuses_an_entry_larger_than_its_budget_and_replacing_frees_the_old_bytes() -> None:
    lru = LRU(max_entries=10, max_bytes=ENTRY_OVERHEAD_BYTES + 50)
    lru.put("big", entry(1, body=b"x" * 51))
    assert lru.get("big") is None and lru.bytes == 0
    lru.put("k", entry(1, body=b"x" * 10))
    lru.put("k", entry(2, body=b"x" * 20))
    assert lru.bytes == entry(2, body=b"x" * 20).size
    lru.discard("k")
    assert lru.bytes == 0 and len(lru) == 0


# --- freshness -----------------------------------------------------------------------------------


def test_an_entry_of_the_current_generation_is_a_hit_until_the_ttl() -> None:
    view = following(10)
    assert view.judge(entry(10), T0 + 59) is Verdict.HIT
    assert view.judge(entry(10), T0 + 61) is Verdict.MISS


def test_other_products_changing_leaves_an_entry_a_hit_until_it_is_due_for_revalidation() -> None:
    view = following(10)
    view.announce(Announcement(11, frozenset({product_tag(99)})), T0 + 1)
    page = entry(10, tags=(product_tag(1), product_tag(2)))
    assert view.judge(page, T0 + 4) is Verdict.HIT
    assert view.judge(page, T0 + 6) is Verdict.STALE  # served while one refresh runs
    assert view.judge(entry(11, fetched_at=T0 + 6, tags=page.tags), T0 + 30) is Verdict.HIT


def test_a_change_to_a_product_shown_is_stale_only_within_the_hard_bound() -> None:
    view = following(10)
    page = entry(10, tags=(product_tag(1), product_tag(2)))
    view.announce(Announcement(11, frozenset({product_tag(2)})), T0 + 1)
    assert view.judge(page, T0 + 1.4) is Verdict.STALE
    assert view.judge(page, T0 + 1.6) is Verdict.MISS
    # Later announcements do not move the bound: it counts from the first one concerning it.
    view.announce(Announcement(12, frozenset({product_tag(2)})), T0 + 1.55)
    assert view.judge(page, T0 + 1.6) is Verdict.MISS
    # An answer fetched between the two announcements is stale from the second one.
    between = entry(11, fetched_at=T0 + 1.2, tags=page.tags)
    assert view.judge(between, T0 + 1.9) is Verdict.STALE
    assert view.judge(between, T0 + 2.1) is Verdict.MISS


def test_a_miss_says_why_the_cache_could_not_answer() -> None:
    view = following(10)
    page = entry(10, tags=(product_tag(1),))
    view.announce(Announcement(11, frozenset({product_tag(1)})), T0 + 1)
    assert view.miss_reason(None, T0 + 2) == "absent"
    assert view.miss_reason(page, T0 + 2) == "changed"
    assert view.miss_reason(page, T0 + 61) == "expired"
    view.lose(T0 + 2)
    assert view.miss_reason(entry(11, fetched_at=T0 + 2), T0 + 3) == "blind"


def test_unknown_sellers_concern_seller_pages_only() -> None:
    view = following(10)
    view.announce(Announcement(11, frozenset({product_tag(5), ANY_SELLER})), T0 + 1)
    assert view.judge(entry(10, tags=(seller_tag(3),)), T0 + 2) is Verdict.MISS
    assert view.judge(entry(10, tags=(product_tag(6),)), T0 + 2) is Verdict.HIT


@pytest.mark.parametrize(
    "announcement",
    [Announcement(11, everything=True), Announcement(12, frozenset({product_tag(99)}))],  # 12: 11 was missed
    ids=["everything", "a-missed-generation"],
)
def test_everything_or_a_gap_concerns_every_entry(announcement: Announcement) -> None:
    view = following(10)
    view.announce(announcement, T0 + 1)
    assert view.judge(entry(10, tags=(product_tag(1),)), T0 + 1.2) is Verdict.STALE
    assert view.judge(entry(10), T0 + 2) is Verdict.MISS


def test_a_counter_that_moved_while_unsubscribed_concerns_every_older_entry() -> None:
    view = following(10)
    view.lose(T0)
    view.follow(15, T0 + 1)
    assert view.following
    assert view.judge(entry(10, fetched_at=T0 - 1, tags=(product_tag(1),)), T0 + 2) is Verdict.MISS
    assert view.judge(entry(15, fetched_at=T0 + 1), T0 + 2) is Verdict.HIT


def test_blind_the_cache_is_a_micro_cache_bounded_by_max_stale() -> None:
    view = following(10)
    view.lose(T0 + 10)
    old = entry(10, fetched_at=T0)
    assert view.judge(old, T0 + 10.2) is Verdict.HIT
    assert view.judge(old, T0 + 10.4) is Verdict.STALE
    assert view.judge(old, T0 + 10.6) is Verdict.MISS
    fetched_blind = entry(10, fetched_at=T0 + 20)
    assert view.judge(fetched_blind, T0 + 20.2) is Verdict.HIT
    assert view.judge(fetched_blind, T0 + 20.6) is Verdict.MISS


def test_a_new_view_is_blind_until_it_follows() -> None:
    view = CatalogView(POLICY)
    assert not view.following and view.generation == UNKNOWN_GENERATION
    assert view.judge(entry(UNKNOWN_GENERATION, fetched_at=T0), T0 + 0.1) is Verdict.HIT
    assert view.judge(entry(UNKNOWN_GENERATION, fetched_at=T0), T0 + 1) is Verdict.MISS
    view.follow(3, T0 + 2)
    # Fetched before the view knew anything: dirty since the view began following.
    assert view.judge(entry(UNKNOWN_GENERATION, fetched_at=T0 + 1.9), T0 + 2.3) is Verdict.STALE
    assert view.judge(entry(UNKNOWN_GENERATION, fetched_at=T0 + 1.9), T0 + 2.6) is Verdict.MISS


def test_announcements_older_than_the_ttl_are_forgotten_and_raise_the_floor() -> None:
    view = following(10, at=T0)
    view.announce(Announcement(11, frozenset({product_tag(1)})), T0 + 1)
    view.announce(Announcement(12, frozenset({product_tag(2)})), T0 + 100)
    assert view.floor == 11
    # Still judged safely: an entry from below the floor is dirty since the floor's time.
    assert view.judge(entry(10, fetched_at=T0 + 50), T0 + 100.1) is Verdict.MISS
    # From above it, clean: only due for revalidation (STALE), not dirty (MISS).
    assert view.judge(entry(11, fetched_at=T0 + 50, tags=(product_tag(3),)), T0 + 100.1) is Verdict.STALE
    assert view.judge(entry(11, fetched_at=T0 + 96, tags=(product_tag(3),)), T0 + 100.1) is Verdict.HIT


def test_stale_if_error_reaches_past_the_ttl_by_the_grace() -> None:
    assert POLICY.usable_on_error(entry(1), T0 + 359)
    assert not POLICY.usable_on_error(entry(1), T0 + 361)


# The hard bound as a property: whatever the announcements, an entry that shows something
# announced as changed more than max_stale ago is never served (neither HIT nor STALE).
_EVENTS = st.lists(
    st.tuples(
        st.floats(min_value=0.01, max_value=3.0),  # seconds since the previous event
        st.one_of(st.none(), st.frozensets(st.sampled_from(["p:1", "p:2", "p:3", "s:1", ANY_SELLER]), max_size=3)),
        st.booleans(),  # skip a generation (a lost message)
    ),
    max_size=12,
)


@given(
    events=_EVENTS,
    tags=st.frozensets(st.sampled_from(["p:1", "p:2", "p:3", "s:1"]), max_size=3),
    fetch_after=st.integers(min_value=0, max_value=12),
    judge_after=st.floats(min_value=0, max_value=5),
)
def test_nothing_changed_is_served_past_the_hard_bound(
    events: list, tags: frozenset[str], fetch_after: int, judge_after: float
) -> None:
    view = following(0, at=T0)
    now, generation = T0, 0
    history: list[tuple[float, int, frozenset[str] | None]] = []
    fetched: Entry | None = None
    for index, (delay, announced, skip) in enumerate(events):
        if index == fetch_after:
            fetched = entry(view.generation, fetched_at=now, tags=tuple(tags))
        now += delay
        generation += 2 if skip else 1
        view.announce(Announcement.of(generation, announced), now)
        history.append((now, generation, None if skip else announced))
    if fetched is None:
        fetched = entry(view.generation, fetched_at=now, tags=tuple(tags))
    now += judge_after
    concerning = [
        at
        for at, changed_generation, changed in history
        if changed_generation > fetched.generation
        and (
            changed is None
            or bool(changed & fetched.tags)
            or (ANY_SELLER in changed and any(tag.startswith("s:") for tag in fetched.tags))
        )
    ]
    verdict = view.judge(fetched, now)
    if concerning and now - min(concerning) > POLICY.max_stale:
        assert verdict is Verdict.MISS


# --- lifetime jitter -----------------------------------------------------------------------------


@given(st.lists(st.binary(min_size=1, max_size=64), min_size=200, max_size=200, unique=True))
def test_entries_filled_together_expire_spread_over_the_jitter_band(bodies: list[bytes]) -> None:
    policy = Policy(ttl=60.0, revalidate_after=15.0, jitter=0.1, refresh_ahead=0.0)
    view = CatalogView(policy)
    view.follow(10, T0 - 100)
    entries = [entry(10, body=body) for body in bodies]
    # Nothing expires before the band, everything has by its end ...
    assert all(view.judge(e, T0 + policy.shortest_ttl - 0.001) is Verdict.HIT for e in entries)
    assert all(view.judge(e, T0 + 60.001) is Verdict.MISS for e in entries)
    # ... and within it they go a few at a time: no second of the band holds most of them.
    expiry_seconds = [next(s for s in range(54, 61) if view.judge(e, T0 + s + 0.999) is Verdict.MISS) for e in entries]
    assert max(expiry_seconds.count(s) for s in set(expiry_seconds)) < len(entries) // 2


def test_every_worker_gives_an_entry_the_same_lifetime() -> None:
    policy = Policy(ttl=60.0, jitter=0.1)
    one, other = entry(10, body=b'{"items": [1]}'), entry(10, body=b'{"items": [1]}')
    views = [CatalogView(policy), CatalogView(policy)]
    for view in views:
        view.follow(10, T0 - 100)
    for second in range(54, 61):
        assert views[0].judge(one, T0 + second) is views[1].judge(other, T0 + second)


# --- refresh-ahead -------------------------------------------------------------------------------


def test_a_hit_within_refresh_ahead_of_its_ttl_is_judged_refresh() -> None:
    policy = Policy(ttl=60.0, revalidate_after=5.0, jitter=0.0, refresh_ahead=10.0)
    view = CatalogView(policy)
    view.follow(10, T0 - 100)
    assert view.judge(entry(10), T0 + 49.9) is Verdict.HIT
    assert view.judge(entry(10), T0 + 50.1) is Verdict.REFRESH  # served, and refreshed
    assert view.judge(entry(10), T0 + 60.1) is Verdict.MISS  # nobody asked within the window
    # The catalog moved on, nothing shown changed: a HIT becomes STALE at revalidate_after as
    # before; and a dirty entry is never a REFRESH, however close to its ttl.
    view.announce(Announcement(11, frozenset({"p:9"})), T0 + 1)
    assert view.judge(entry(10), T0 + 4) is Verdict.HIT
    assert view.judge(entry(10), T0 + 55) is Verdict.STALE
    view.announce(Announcement(12, frozenset({"p:1"})), T0 + 55)
    assert view.judge(entry(11, tags=("p:1",)), T0 + 55.2) is Verdict.STALE
    assert view.judge(entry(11, tags=("p:1",)), T0 + 56) is Verdict.MISS


def test_refresh_ahead_follows_each_entrys_jittered_lifetime() -> None:
    policy = Policy(ttl=60.0, jitter=0.1, refresh_ahead=10.0)
    view = CatalogView(policy)
    view.follow(10, T0 - 100)
    for body in (b"[1]", b"[2]", b"[3]", b"[4]"):
        fetched = entry(10, body=body)
        expires = policy.ttl * (1 - policy.jitter * fetched.spread)
        assert view.judge(fetched, T0 + expires - 10.01) is Verdict.HIT
        assert view.judge(fetched, T0 + expires - 9.99) is Verdict.REFRESH
        assert view.judge(fetched, T0 + expires + 0.01) is Verdict.MISS


def test_a_jitter_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError):
        Policy(jitter=1.0)
    with pytest.raises(ValueError):
        Policy(jitter=-0.1)
    with pytest.raises(ValueError):
        Policy(refresh_ahead=-1.0)


@given(st.text(max_size=40), st.lists(st.text(max_size=12), max_size=3), st.integers(1, 20))
def test_request_keys_are_the_urlencoded_fields_they_always_were(q: str, fandoms: list[str], size: int) -> None:
    """Keys are built without urlencode now (issue 24: its cost on every miss); a key spelled any
    differently would split every cached entry from its requests."""
    from proxy.params import SearchRequest, SuggestRequest

    search = SearchRequest(q=q, fandoms=tuple(fandoms), size=size)
    unset = [("min_price", ""), ("max_price", ""), ("in_stock", "")]
    rest = [("sort", search.sort), ("page", str(search.page)), ("size", str(size))]
    fields = [("q", q), *(("fandom", f) for f in fandoms), *unset, *rest]
    assert request_key(search) == "search:v2?" + urlencode(fields)
    assert request_key(SuggestRequest(q=q, size=size)) == "suggest:v2?" + urlencode([("q", q), ("size", size)])
