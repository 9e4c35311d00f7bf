"""What requests cost (``proxy.ratelimit.costs``): the defaults, ``RATE_LIMIT_COSTS``, deep pages."""

from __future__ import annotations

import pytest

from proxy.ratelimit.costs import DEEP_PAGE, DEFAULT_COSTS, cost_of, costs_from_env, limited_route
from proxy.settings import ProxySettings


def test_configured_costs_replace_only_the_names_given() -> None:
    costs = costs_from_env({"RATE_LIMIT_COSTS": " suggestions = 0.25 ,deep_search=5,"}, capacity=100)
    assert costs["suggestions"] == 0.25 and costs["deep_search"] == 5.0
    assert {name: costs[name] for name in ("search", "product", "seller")} == {
        "search": 1.0,
        "product": 1.0,
        "seller": 1.0,
    }
    assert ProxySettings.from_env({"RATE_LIMIT_COSTS": "seller=3"}).rate_limit_costs["seller"] == 3.0
    assert ProxySettings.from_env({}).rate_limit_costs == DEFAULT_COSTS


def test_a_free_route_and_a_cost_of_the_whole_bucket_are_allowed() -> None:
    costs = costs_from_env({"RATE_LIMIT_COSTS": "suggestions=0,product=10"}, capacity=10)
    assert costs["suggestions"] == 0 and costs["product"] == 10


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        (None, 1.0),
        ("1", 1.0),
        (str(DEEP_PAGE), 1.0),
        (str(DEEP_PAGE + 1), 2.0),
        ("x", 1.0),
        ("-9", 1.0),
        ("9" * 9, 1.0),
    ],
)
def test_a_search_beyond_the_deep_page_costs_more(page: str | None, expected: float) -> None:
    # Unvalidated pages cost a plain search: the route answers them with a 400 anyway.
    assert cost_of(DEFAULT_COSTS, "search", page) == expected


def test_only_a_search_has_deep_pages() -> None:
    assert cost_of(DEFAULT_COSTS, "suggestions", "9") == DEFAULT_COSTS["suggestions"]


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/api/search", "search"),
        ("/api/search/suggestions", "suggestions"),
        ("/api/products/p-1", "product"),
        ("/api/sellers/s-1", "seller"),
        ("/api/search/", None),
        ("/healthz", None),
        ("/readyz", None),
        ("/metrics", None),
        ("/openapi.json", None),
    ],
)
def test_limited_routes(path: str, route: str | None) -> None:
    assert limited_route(path) == route
