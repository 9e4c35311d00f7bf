"""Every bad request gets a 4xx application/problem+json naming the parameter — never a 5xx."""

from __future__ import annotations

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL


@pytest.fixture
def client(proxy_client: TestClient) -> TestClient:
    return proxy_client


async def _problem(client: TestClient, path: str, status: int = 400, method: str = "GET") -> dict:
    response = await client.request(method, path)
    assert response.status == status, await response.text()
    assert response.content_type == "application/problem+json"
    body = await response.json()
    assert body["status"] == status
    assert "Traceback" not in str(body) and "exception" not in str(body).lower()
    return dict(body)


def _named(body: dict) -> set[str]:
    return {p["name"] for p in body.get("invalid_params", [])}


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("min_price=abc", "min_price"),
        ("max_price=ten", "max_price"),
        ("min_price=-5", "min_price"),
        ("max_price=-0.01", "max_price"),
        ("min_price=50&max_price=10", "min_price"),
        ("min_price=nan", "min_price"),
        ("max_price=1e400", "max_price"),
        ("size=0", "size"),
        ("size=1000", "size"),
        ("size=-1", "size"),
        ("size=abc", "size"),
        ("page=0", "page"),
        ("page=999999", "page"),
        ("page=1.5", "page"),
        ("sort=cheapest", "sort"),
        ("in_stock=maybe", "in_stock"),
        ("seller_id=abc", "seller_id"),
        ("q=" + "a" * 10_000, "q"),
        ("q=wand%00", "q"),
        ("q=wand%1b[31m", "q"),
        ("q=%FF%FEwand", "q"),
        ("category=%C3", "category"),
        ("size=10&size=20", "size"),
        ("q=a&q=b", "q"),
        ("sort=newest&sort=rating", "sort"),
    ],
)
async def test_bad_search_parameters_are_named(client: TestClient, query: str, parameter: str) -> None:
    body = await _problem(client, f"/api/search?{query}")
    assert parameter in _named(body), body


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("", "q"),
        ("q=", "q"),
        ("q=" + "x" * 101, "q"),
        ("q=har&size=0", "size"),
        ("q=har&size=21", "size"),
        ("q=har%00", "q"),
        ("q=%FF", "q"),
    ],
)
async def test_bad_suggestion_parameters_are_named(client: TestClient, query: str, parameter: str) -> None:
    body = await _problem(client, f"/api/search/suggestions?{query}")
    assert parameter in _named(body), body


async def _get_as_written(client: TestClient, path: str) -> ClientResponse:
    # yarl would decode %65 to "e" before sending: the bytes must go out as written.
    return await client.session.get(client.make_url("").join(URL(path, encoded=True)))


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/api/search?q=wand&pag%65=6", "page"),
        ("/api/search?%71=wand", "q"),
        ("/api/search?q=wand&%73%69%7A%65=5", "size"),
        ("/api/search?categor%79=props", "category"),
        ("/api/search/suggestions?%71=har", "q"),
    ],
)
async def test_a_known_parameter_with_a_percent_encoded_name_is_refused(
    client: TestClient, path: str, parameter: str
) -> None:
    response = await _get_as_written(client, path)
    assert response.status == 400, await response.text()
    body = await response.json()
    assert _named(body) == {parameter} and "percent-encoded" in body["invalid_params"][0]["reason"]


async def test_an_unknown_parameter_may_have_an_encoded_name(client: TestClient) -> None:
    response = await _get_as_written(client, "/api/search?utm%5Fsource=x&q=wand")
    assert response.status == 200


async def test_every_problem_is_listed_at_once(client: TestClient) -> None:
    body = await _problem(client, "/api/search?size=0&page=0&sort=x&min_price=y")
    assert {"size", "page", "sort", "min_price"} <= _named(body)


async def test_unknown_path_is_a_404_problem(client: TestClient) -> None:
    body = await _problem(client, "/api/nothing-here", status=404)
    assert body["title"] == "Not Found"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_writing_methods_are_405_problems(client: TestClient, method: str) -> None:
    response = await client.request(method, "/api/search", data=b'{"query":{"match_all":{}}}')
    assert response.status == 405
    assert response.content_type == "application/problem+json"
    assert "GET" in response.headers["Allow"]


async def test_unknown_parameters_are_ignored(client: TestClient) -> None:
    response = await client.get("/api/search?utm_source=mail&q=wand")
    assert response.status == 200


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(q=st.text(max_size=250))
async def test_arbitrary_query_text_never_causes_a_server_error(client: TestClient, q: str) -> None:
    response = await client.get("/api/search", params={"q": q})
    assert response.status < 500, (q, await response.text())
    if response.status != 200:
        assert response.content_type == "application/problem+json"
        assert "q" in _named(await response.json())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(q=st.text(min_size=1, max_size=120), size=st.integers(min_value=-5, max_value=30))
async def test_arbitrary_suggestion_prefixes_never_cause_a_server_error(client: TestClient, q: str, size: int) -> None:
    response = await client.get("/api/search/suggestions", params={"q": q, "size": str(size)})
    assert response.status < 500, (q, size, await response.text())
