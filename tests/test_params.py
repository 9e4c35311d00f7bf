"""Parsing and validating search and suggestion parameters; cache keys; problem+json bodies."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import parse_qsl

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import MultiDict, MultiDictProxy

from proxy.cache.keys import request_key
from proxy.errors import (
    PROBLEM_CONTENT_TYPE,
    BackendUnavailable,
    InvalidParameters,
    MethodNotAllowed,
    ProblemError,
    RateLimited,
    problem_body,
)
from proxy.params import (
    FILTER_VALUE_PATTERN,
    PREFIX_PATTERN,
    SUGGEST_PARAMS,
    TEXT_PATTERN,
    SearchRequest,
    SuggestRequest,
    encoded_param_names,
    escape_problems,
    invalid_utf8_params,
    parse_search,
    parse_suggest,
)


def query(qs: str) -> MultiDictProxy[str]:
    """The multidict aiohttp would hand the handler for this query string."""
    return MultiDictProxy(MultiDict(parse_qsl(qs, keep_blank_values=True)))


def search(qs: str) -> SearchRequest:
    return parse_search(query(qs))


def search_problems(qs: str) -> dict[str, str]:
    with pytest.raises(InvalidParameters) as caught:
        parse_search(query(qs))
    return dict(caught.value.params)


def suggest_problems(qs: str) -> dict[str, str]:
    with pytest.raises(InvalidParameters) as caught:
        parse_suggest(query(qs))
    return dict(caught.value.params)


# --- defaults and q ---------------------------------------------------------------------------


def test_no_parameters_is_a_browse_of_the_newest_first_page() -> None:
    assert search("") == SearchRequest(q="", sort="newest", page=1, size=20)


def test_query_defaults_to_relevance() -> None:
    assert search("q=wand").sort == "relevance"


def test_relevance_without_query_is_newest() -> None:
    assert search("sort=relevance").sort == "newest"
    assert search("q=&sort=relevance").sort == "newest"


def test_query_is_stripped_and_whitespace_collapsed() -> None:
    assert search("q=%20%20harry%09%0A%20potter%20%20").q == "harry potter"


def test_whitespace_only_query_is_a_browse() -> None:
    assert search("q=%20%20%09").q == ""


def test_query_is_nfc_normalised() -> None:
    assert search("q=Poke%CC%81mon").q == "Pokémon"


def test_query_of_200_characters_is_accepted() -> None:
    assert len(search("q=" + "a" * 200).q) == 200


@pytest.mark.parametrize("length", [201, 10_000])
def test_overlong_query_is_rejected(length: int) -> None:
    problems = search_problems("q=" + "a" * length)
    assert list(problems) == ["q"]
    assert "200" in problems["q"]


def test_query_length_counts_the_text_as_sent() -> None:
    """As the document's maxLength (and an HTML maxlength) do, not the normalised text."""
    assert list(search_problems("q=harry" + "%20" * 197)) == ["q"]  # 202 sent, "harry" after collapsing
    # U+0958 is 1 character sent and 2 after NFC: 200 of them are still within the limit.
    assert len(search("q=" + "%E0%A5%98" * 200).q) == 400


@pytest.mark.parametrize("char", ["%00", "%1B", "%7F", "%1F", "%C2%85", "%C2%9B", "%07"])
def test_control_characters_in_query_are_rejected(char: str) -> None:
    problems = search_problems(f"q=har{char}ry")
    assert "control characters" in problems["q"]


def _accepted(parse: Callable[[MultiDict[str]], object], params: dict[str, str]) -> bool:
    try:
        parse(MultiDict(params))
    except InvalidParameters:
        return False
    return True


def test_the_documented_patterns_refuse_exactly_the_characters_the_parser_refuses() -> None:
    """Every character of the Basic Multilingual Plane, alone and between letters."""
    for code in range(0x10000):
        if 0xD800 <= code <= 0xDFFF:  # lone surrogates cannot arrive as UTF-8
            continue
        char = chr(code)
        for text in (char, f"a{char}b"):
            assert _accepted(parse_search, {"q": text}) == bool(re.search(TEXT_PATTERN, text)), hex(code)
            assert _accepted(parse_suggest, {"q": text}) == bool(re.search(PREFIX_PATTERN, text)), hex(code)
            if char != ",":  # the separator: two values, not a bad one
                accepted = _accepted(parse_search, {"category": text})
                assert accepted == bool(re.search(FILTER_VALUE_PATTERN, text)), hex(code)


def test_lone_surrogate_in_query_is_rejected() -> None:
    params = MultiDictProxy(MultiDict([("q", "har\ud800ry")]))
    with pytest.raises(InvalidParameters) as caught:
        parse_search(params)
    assert dict(caught.value.params).keys() == {"q"}


@pytest.mark.parametrize(
    "text",
    [
        "name:*",
        '{"match_all":{}}',
        "*",
        "\\",
        '"',
        "AND OR NOT",
        "harry AND (potter OR -voldemort)",
        "price:[0 TO 10]",
        "wand~2 ^5 /re.*gex/",
        "<script>alert(1)</script>",
    ],
)
def test_query_syntax_characters_are_plain_text(text: str) -> None:
    assert parse_search(MultiDict(q=text)).q == text


@pytest.mark.parametrize(
    ("raw", "bad"),
    [
        ("q=%FF", ["q"]),
        ("q=ab%C3&category=%C3%A9", ["q"]),
        ("category=ok&fandom=%ED%A0%80&fandom=%FE&q=fine", ["fandom"]),
        ("q=%C3%A9t%C3%A9+caf%C3%A9", []),
        ("utm_source=%FF&q=wand", []),
        ("%FF=1&q=wand", []),
        ("q=wand&size=20", []),
    ],
)
def test_parameters_that_are_not_utf8_are_named(raw: str, bad: list[str]) -> None:
    assert invalid_utf8_params(raw) == bad


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        ("pag%65=6", ["page"]),
        ("%70%61%67%65=6&q=a&%71=b", ["page", "q"]),
        ("page=6&q=wand", []),
        ("utm%5Fsource=x&q=wand", []),
        ("q=pag%65", []),
        ("%FF=1", []),
    ],
)
def test_known_names_sent_percent_encoded_are_named(raw: str, encoded: list[str]) -> None:
    assert encoded_param_names(raw) == encoded
    assert [name for name, _ in escape_problems(raw)] == encoded


def test_utf8_check_is_per_endpoint() -> None:
    assert invalid_utf8_params("category=%FF&q=har", SUGGEST_PARAMS) == []


# --- filters -----------------------------------------------------------------------------------


def test_filters_may_be_repeated_or_comma_separated_and_are_deduplicated_and_sorted() -> None:
    req = search("category=props,%20books&category=props&category=,&fandom=Harry%20Potter,Pok%C3%A9mon")
    assert req.categories == ("books", "props")
    assert req.fandoms == ("Harry Potter", "Pokémon")


def test_filter_values_keep_their_case() -> None:
    assert search("fandom=harry%20potter").fandoms == ("harry potter",)


def test_too_many_filter_values_are_rejected() -> None:
    problems = search_problems("category=" + ",".join(f"c{i}" for i in range(21)))
    assert list(problems) == ["category"]


def test_twenty_filter_values_are_accepted() -> None:
    assert len(search("fandom=" + ",".join(f"f{i}" for i in range(20))).fandoms) == 20


def test_overlong_filter_value_is_rejected() -> None:
    assert list(search_problems("fandom=" + "x" * 101)) == ["fandom"]


def test_control_character_in_filter_value_is_rejected() -> None:
    assert list(search_problems("category=pro%00ps")) == ["category"]


@pytest.mark.parametrize("char", ["%1C", "%1F", "%C2%85"])
def test_control_characters_that_strip_would_remove_are_rejected_at_the_ends_of_a_value(char: str) -> None:
    assert list(search_problems(f"fandom=Harry%20Potter{char}")) == ["fandom"]
    assert list(search_problems(f"category={char}props")) == ["category"]


def test_filter_value_length_counts_the_value_as_sent() -> None:
    assert list(search_problems("category=" + "%20" * 2 + "a" * 99)) == ["category"]
    assert search("category=" + "%20" + "a" * 99).categories == ("a" * 99,)


def test_repeated_filter_values_count_towards_the_limit() -> None:
    assert list(search_problems("category=" + ",".join(["props"] * 21))) == ["category"]
    assert search("category=" + ",".join(["props"] * 20)).categories == ("props",)


def test_seller_ids_are_canonical_positive_integers() -> None:
    assert search("seller_id=7,007&seller_id=12").seller_ids == ("7", "12")


@pytest.mark.parametrize("value", ["0", "-1", "abc", "1.5", "1e3", "%2B3", "9" * 20, "٣"])
def test_bad_seller_id_is_rejected(value: str) -> None:
    assert list(search_problems(f"seller_id={value}")) == ["seller_id"]


@pytest.mark.parametrize(("raw", "expected"), [("0", 0.0), ("19.99", 19.99), (".5", 0.5), ("10000000", 1e7)])
def test_prices_are_parsed(raw: str, expected: float) -> None:
    req = search(f"min_price={raw}&max_price=10000000")
    assert req.min_price == expected


@pytest.mark.parametrize("name", ["min_price", "max_price"])
@pytest.mark.parametrize("value", ["abc", "1e3", "nan", "inf", "Infinity", "1,5", "0x10", "1_000", "12abc"])
def test_non_numeric_price_is_rejected(name: str, value: str) -> None:
    problems = search_problems(f"{name}={value}")
    assert list(problems) == [name]
    assert "decimal" in problems[name]


@pytest.mark.parametrize("name", ["min_price", "max_price"])
@pytest.mark.parametrize("value", ["-1", "-0.01", "-5"])
def test_negative_price_is_rejected(name: str, value: str) -> None:
    problems = search_problems(f"{name}={value}")
    assert problems == {name: "must not be negative"}


def test_price_above_ten_million_is_rejected() -> None:
    assert list(search_problems("max_price=10000000.01")) == ["max_price"]
    assert list(search_problems("min_price=" + "9" * 30)) == ["min_price"]


def test_min_price_above_max_price_is_rejected_naming_min_price() -> None:
    problems = search_problems("min_price=50&max_price=20")
    assert list(problems) == ["min_price"]
    assert "max_price" in problems["min_price"]


def test_equal_min_and_max_price_is_accepted() -> None:
    req = search("min_price=20&max_price=20.00")
    assert (req.min_price, req.max_price) == (20.0, 20.0)


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("1", True), ("false", False), ("0", False)])
def test_in_stock_accepts_true_false_one_zero(raw: str, expected: bool) -> None:
    assert search(f"in_stock={raw}").in_stock is expected


# Exactly the document's enum: no case-folding, no trimming.
@pytest.mark.parametrize("raw", ["yes", "on", "2", "truthy", "TRUE", "True", "%20true", "false%20"])
def test_in_stock_rejects_other_values(raw: str) -> None:
    assert list(search_problems(f"in_stock={raw}")) == ["in_stock"]


@pytest.mark.parametrize("qs", ["size=%205", "size=5%20", "page=%092", "min_price=%2010", "max_price=10%0A"])
def test_numbers_are_not_trimmed(qs: str) -> None:
    assert list(search_problems(qs)) == [qs.split("=")[0]]


def test_negative_zero_price_is_zero() -> None:
    assert search("min_price=-0&max_price=-0.00") == search("min_price=0&max_price=0")


def test_empty_values_mean_not_given() -> None:
    assert search("q=&min_price=&max_price=&in_stock=&sort=&page=&size=&category=") == search("")


# --- sort and paging ---------------------------------------------------------------------------


@pytest.mark.parametrize("sort", ["relevance", "newest", "price_asc", "price_desc", "rating"])
def test_every_documented_sort_is_accepted(sort: str) -> None:
    assert search(f"q=wand&sort={sort}").sort == sort


@pytest.mark.parametrize("sort", ["popular", "NEWEST", "price", "_id", "created_at:desc"])
def test_unknown_sort_is_rejected(sort: str) -> None:
    problems = search_problems(f"sort={sort}")
    assert list(problems) == ["sort"]
    assert "price_asc" in problems["sort"]


@pytest.mark.parametrize("size", ["0", "1000", "101", "-1", "abc", "2.5"])
def test_bad_size_is_rejected(size: str) -> None:
    assert list(search_problems(f"size={size}")) == ["size"]


@pytest.mark.parametrize("page", ["0", "-1", "abc", "1.0"])
def test_bad_page_is_rejected(page: str) -> None:
    assert list(search_problems(f"page={page}")) == ["page"]


@pytest.mark.parametrize("qs", ["page=999999", "page=501&size=20", "page=101&size=100", "page=" + "9" * 40])
def test_paging_beyond_ten_thousand_results_is_rejected_naming_page(qs: str) -> None:
    assert list(search_problems(qs)) == ["page"]


def test_last_reachable_page_is_accepted() -> None:
    req = search("page=500&size=20")
    assert (req.page, req.size, req.offset) == (500, 20, 9980)


@pytest.mark.parametrize(
    "qs",
    [
        "size=1&size=2",
        "size=20&size=20",
        "page=1&page=2",
        "q=a&q=b",
        "sort=newest&sort=rating",
        "min_price=1&min_price=2",
        "max_price=1&max_price=2",
        "in_stock=true&in_stock=false",
    ],
)
def test_repeated_single_valued_parameter_is_rejected_naming_it(qs: str) -> None:
    name = qs.split("=")[0]
    assert search_problems(qs) == {name: "must be given at most once"}


def test_unknown_parameters_are_ignored() -> None:
    assert search("q=wand&utm_source=newsletter&gclid=abc&_=123") == search("q=wand")


def test_every_problem_is_reported_at_once() -> None:
    problems = search_problems("size=0&page=0&sort=best&min_price=x&in_stock=maybe&q=" + "a" * 300)
    assert set(problems) == {"size", "page", "sort", "min_price", "in_stock", "q"}


# --- suggestions -------------------------------------------------------------------------------


def test_suggest_defaults() -> None:
    assert parse_suggest(query("q=har")) == SuggestRequest(q="har", size=8)


@pytest.mark.parametrize("qs", ["", "q=", "q=%20%20", "size=5"])
def test_suggest_requires_a_query(qs: str) -> None:
    assert "q" in suggest_problems(qs)


def test_suggest_query_of_100_characters_is_accepted_and_101_rejected() -> None:
    assert parse_suggest(query("q=" + "a" * 100)).q == "a" * 100
    assert list(suggest_problems("q=" + "a" * 101)) == ["q"]


@pytest.mark.parametrize("size", ["0", "21", "1000", "x"])
def test_suggest_bad_size_is_rejected(size: str) -> None:
    assert list(suggest_problems(f"q=har&size={size}")) == ["size"]


def test_suggest_repeated_parameters_are_rejected() -> None:
    assert set(suggest_problems("q=a&q=b&size=1&size=2")) == {"q", "size"}


def test_suggest_control_characters_are_rejected() -> None:
    assert "control characters" in suggest_problems("q=ha%00r")["q"]


# --- cache keys --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("q=wand&category=props&fandom=HP", "fandom=HP&category=props&q=wand"),
        ("in_stock=1", "in_stock=true"),
        ("category=a,b", "category=b&category=a"),
        ("category=a,a,b", "category=a&category=b&category=b"),
        ("category=%20a%20,b", "category=a,b"),
        ("min_price=10", "min_price=10.00"),
        ("seller_id=007", "seller_id=7"),
        ("", "page=1&size=20&sort=newest"),
        ("sort=relevance", "sort=newest"),
        ("q=%20harry%20%20potter", "q=harry+potter"),
        ("q=wand", "q=wand&utm_campaign=x&in_stock="),
    ],
)
def test_cache_key_is_the_same_for_the_same_request(first: str, second: str) -> None:
    assert request_key(search(first)) == request_key(search(second))


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("q=wand", "q=Wand"),
        ("page=1", "page=2"),
        ("in_stock=true", "in_stock=false"),
        ("in_stock=true", ""),
        ("category=a", "fandom=a"),
        ("category=a,b", "category=a%2Cb&category=c"),
        ("min_price=10", "max_price=10"),
        ("q=a%26category%3Db", "q=a&category=b"),
    ],
)
def test_cache_key_differs_for_different_requests(first: str, second: str) -> None:
    assert request_key(search(first)) != request_key(search(second))


def test_suggest_and_search_keys_never_collide() -> None:
    assert request_key(parse_suggest(query("q=har&size=20"))) != request_key(search("q=har&size=20"))
    assert request_key(parse_suggest(query("q=har"))) == request_key(parse_suggest(query("size=8&q=har")))


# --- properties ----------------------------------------------------------------------------------


@given(st.text(max_size=400))
def test_any_query_text_parses_or_is_invalid_parameters(text: str) -> None:
    try:
        req = parse_search(MultiDict(q=text))
    except InvalidParameters as error:
        assert [name for name, _ in error.params] == ["q"]
        return
    assert len(req.q) <= 200
    assert req.q == req.q.strip()
    assert "  " not in req.q


_NAMES = ["q", "category", "fandom", "seller_id", "min_price", "max_price", "in_stock", "sort", "page", "size"]


@given(st.lists(st.tuples(st.sampled_from([*_NAMES, "utm_source"]), st.text(max_size=30)), max_size=12))
def test_any_parameters_parse_or_are_invalid_parameters(pairs: list[tuple[str, str]]) -> None:
    try:
        req = parse_search(MultiDict(pairs))
    except InvalidParameters as error:
        assert error.params
        assert {name for name, _ in error.params} <= set(_NAMES)
        orjson.loads(problem_body(error))  # every reason is serialisable
        return
    assert req.page * req.size <= 10_000
    assert request_key(req) == request_key(parse_search(MultiDict(reversed(pairs))))


# --- problem bodies ------------------------------------------------------------------------------


def test_invalid_parameters_body_lists_every_parameter() -> None:
    with pytest.raises(InvalidParameters) as caught:
        parse_search(query("min_price=50&max_price=20&size=0"))
    body = orjson.loads(problem_body(caught.value, instance="urn:uuid:1234"))
    assert body["status"] == 400
    assert body["type"].startswith("tag:")
    assert body["title"] and body["detail"]
    assert body["instance"] == "urn:uuid:1234"
    assert {p["name"] for p in body["invalid_params"]} == {"min_price", "size"}
    assert all(set(p) == {"name", "reason"} for p in body["invalid_params"])


def test_other_problems_have_no_invalid_params() -> None:
    body = orjson.loads(problem_body(BackendUnavailable()))
    assert body["status"] == 503
    assert "invalid_params" not in body and "instance" not in body
    assert PROBLEM_CONTENT_TYPE == "application/problem+json"


def test_rate_limited_carries_a_positive_retry_after() -> None:
    assert RateLimited(retry_after=0).retry_after == 1
    assert orjson.loads(problem_body(RateLimited(retry_after=7)))["status"] == 429


def test_errors_carry_the_headers_their_answer_needs() -> None:
    assert RateLimited(retry_after=2.2).headers == {"Retry-After": "3"}  # rounded up
    assert MethodNotAllowed(["GET", "HEAD"]).headers == {"Allow": "GET, HEAD"}
    assert MethodNotAllowed().headers == {}
    assert InvalidParameters([("q", "bad")]).headers == {}


def test_bare_problem_is_an_internal_error_without_details() -> None:
    body = orjson.loads(problem_body(ProblemError()))
    assert body == {
        "type": "about:blank",
        "title": "Internal Server Error",
        "status": 500,
        "detail": "The server could not answer this request.",
    }
