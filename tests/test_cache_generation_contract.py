"""The announcement contract between the indexer and the proxies (pure: no servers)."""

from __future__ import annotations

import orjson

from catalog.cache_generation import ANY_SELLER, MAX_TAGS, Announcement, generation_key, product_tag, seller_tag


def test_key_and_tags() -> None:
    assert generation_key("hos:") == "hos:catalog:generation"
    assert product_tag(42) == product_tag("42") == "p:42"
    assert seller_tag(7) == "s:7"
    assert ANY_SELLER == "s:*"


def test_tags_round_trip() -> None:
    announcement = Announcement.of(12, ["p:1", "s:2", "p:1"])
    assert announcement == Announcement(12, frozenset({"p:1", "s:2"}))
    assert not announcement.everything
    assert orjson.loads(announcement.encode()) == {"generation": 12, "tags": ["p:1", "s:2"]}
    assert Announcement.decode(announcement.encode()) == announcement
    assert Announcement.decode(announcement.encode().decode()) == announcement  # str payloads too


def test_everything_round_trip() -> None:
    announcement = Announcement.of(3, None)
    assert announcement == Announcement(3, everything=True)
    assert orjson.loads(announcement.encode()) == {"generation": 3, "everything": True}
    assert Announcement.decode(announcement.encode()) == announcement


def test_no_tags_is_nothing_not_everything() -> None:
    announcement = Announcement.of(5, [])
    assert announcement.tags == frozenset() and not announcement.everything
    assert Announcement.decode(announcement.encode()) == announcement


def test_too_many_tags_announce_everything() -> None:
    at_most = [product_tag(i) for i in range(MAX_TAGS)]
    assert Announcement.of(1, at_most).tags == frozenset(at_most)
    assert Announcement.of(1, [*at_most, "p:extra"]) == Announcement(1, everything=True)
    listed = orjson.dumps({"generation": 1, "tags": [*at_most, "p:extra"]})
    assert Announcement.decode(listed) == Announcement(1, everything=True)


def test_a_bare_number_is_a_legacy_announcement_of_everything() -> None:
    assert Announcement.decode(b"17") == Announcement(17, everything=True)
    assert Announcement.decode("17") == Announcement(17, everything=True)


def test_unreadable_payloads_are_none() -> None:
    for payload in (b"", b"not json", b"{", b"[1, 2]", b'"17"', b"null", b"1.5", b"true"):
        assert Announcement.decode(payload) is None, payload
    for body in ({}, {"tags": ["p:1"]}, {"generation": "3"}, {"generation": 2.0}, {"generation": None}):
        assert Announcement.decode(orjson.dumps(body)) is None, body


def test_a_bool_is_not_a_generation() -> None:
    assert Announcement.decode(orjson.dumps({"generation": True, "tags": ["p:1"]})) is None
    assert Announcement.decode(b"false") is None


def test_tags_that_are_not_strings_are_dropped() -> None:
    payload = orjson.dumps({"generation": 4, "tags": ["p:1", 2, None, ["s:3"], {"p": 4}, "s:5"]})
    assert Announcement.decode(payload) == Announcement(4, frozenset({"p:1", "s:5"}))


def test_missing_or_malformed_tags_mean_everything() -> None:
    assert Announcement.decode(orjson.dumps({"generation": 4})) == Announcement(4, everything=True)
    assert Announcement.decode(orjson.dumps({"generation": 4, "tags": "p:1"})) == Announcement(4, everything=True)
    flagged = orjson.dumps({"generation": 4, "tags": ["p:1"], "everything": True})
    assert Announcement.decode(flagged) == Announcement(4, everything=True)
