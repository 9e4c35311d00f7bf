"""/api/search against a seeded catalog: totals, facets and pagination checked against Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from devstack.stack import StackUrls
from proxy.app import create_app
from proxy.state import TAXONOMY
from tests.conftest import SearchCatalog, proxy_settings
from tests.proxy_support import held_taxonomy, proxy_behind_front


@pytest.fixture
def client(proxy_client: TestClient) -> TestClient:
    return proxy_client


@pytest_asyncio.fixture(loop_scope="session")
async def pg(search_catalog: SearchCatalog) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(search_catalog.database_url)
    try:
        yield conn
    finally:
        await conn.close()


def _where(filters: dict[str, Any], skip: str | None = None) -> tuple[str, list[Any]]:
    """SQL for the same filters the API applies, written independently of the proxy."""
    clauses, args = ["p.status = 'active'"], []
    for name, value in filters.items():
        if name == skip:
            continue
        args.append(value)
        n = len(args)
        if name == "category":
            clauses.append(f"p.category = ANY(${n}::text[])")
        elif name == "fandom":
            clauses.append(f"p.fandom = ANY(${n}::text[])")
        elif name == "min_price":
            clauses.append(f"p.price >= ${n}::numeric")
        elif name == "max_price":
            clauses.append(f"p.price <= ${n}::numeric")
        elif name == "in_stock":
            clauses.append(f"(p.stock > 0) = ${n}::boolean")
        elif name == "seller_id":
            clauses.append(f"p.seller_id = ANY(${n}::bigint[])")
    return " AND ".join(clauses), args


def _params(filters: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name, value in filters.items():
        if isinstance(value, list):
            out.extend((name, str(v)) for v in value)
        elif isinstance(value, bool):
            out.append((name, "true" if value else "false"))
        else:
            out.append((name, str(value)))
    return out


async def _search(client: TestClient, params: list[tuple[str, str]]) -> dict[str, Any]:
    response = await client.get("/api/search", params=params)
    assert response.status == 200, await response.text()
    assert response.headers["X-Search-Backend"] == "elasticsearch"
    return dict(await response.json())


async def _top(pg: asyncpg.Connection, column: str, n: int) -> list[str]:
    rows = await pg.fetch(
        f"SELECT {column} AS v FROM products WHERE status = 'active' GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT $1", n
    )
    return [r["v"] for r in rows]


async def test_browse_total_is_the_number_of_active_products(client: TestClient, pg: asyncpg.Connection) -> None:
    body = await _search(client, [])
    expected = await pg.fetchval("SELECT count(*) FROM products WHERE status = 'active'")
    assert body["total"] == expected
    assert body["total_relation"] == "eq"
    assert len(body["items"]) == 20
    assert body["pages"] == -(-expected // 20)


@pytest.mark.parametrize(
    "shape",
    ["category", "fandom+price", "category+fandom+stock", "seller"],
)
async def test_totals_and_disjunctive_facets_match_postgres(
    client: TestClient, pg: asyncpg.Connection, shape: str
) -> None:
    categories = await _top(pg, "category", 2)
    fandoms = await _top(pg, "fandom", 3)
    filters: dict[str, Any] = {}
    if "category" in shape:
        filters["category"] = categories
    if "fandom" in shape:
        filters["fandom"] = fandoms
    if "price" in shape:
        filters["min_price"] = "10"
        filters["max_price"] = "50"
    if "stock" in shape:
        filters["in_stock"] = True
    if shape == "seller":
        seller = await pg.fetchval(
            "SELECT seller_id FROM products WHERE status='active' GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
        )
        filters["seller_id"] = [seller]

    body = await _search(client, _params(filters))
    where, args = _where(filters)
    assert body["total"] == await pg.fetchval(f"SELECT count(*) FROM products p WHERE {where}", *args)

    for facet in ("category", "fandom"):
        where, args = _where(filters, skip=facet)
        rows = await pg.fetch(f"SELECT p.{facet} AS v, count(*) AS n FROM products p WHERE {where} GROUP BY 1", *args)
        expected = {r["v"]: r["n"] for r in rows}
        got = {b["value"]: b["count"] for b in body["facets"][facet]}
        assert got == expected, facet

    where, args = _where(filters, skip=None)
    # The price facet applies every filter but the price range itself.
    price_filters = {k: v for k, v in filters.items() if k not in ("min_price", "max_price")}
    where, args = _where(price_filters)
    for bucket in body["facets"]["price"]:
        low = bucket.get("from")
        high = bucket.get("to")
        sql = f"SELECT count(*) FROM products p WHERE {where}"
        bounds = list(args)
        if low is not None:
            bounds.append(Decimal(str(low)))
            sql += f" AND p.price >= ${len(bounds)}"
        if high is not None:
            bounds.append(Decimal(str(high)))
            sql += f" AND p.price < ${len(bounds)}"
        assert bucket["count"] == await pg.fetchval(sql, *bounds), bucket["key"]


async def test_selecting_a_category_still_counts_the_other_categories(
    client: TestClient, pg: asyncpg.Connection
) -> None:
    first, second = await _top(pg, "category", 2)
    body = await _search(client, [("category", first)])
    counts = {b["value"]: b["count"] for b in body["facets"]["category"]}
    assert counts[second] > 0  # disjunctive: not zeroed by the category filter
    assert body["total"] == counts[first]
    assert {item["category"] for item in body["items"]} == {first}


async def test_price_bounds_are_inclusive(client: TestClient, pg: asyncpg.Connection) -> None:
    price = await pg.fetchval(
        "SELECT price FROM products WHERE status='active' GROUP BY price HAVING count(*) >= 2 ORDER BY price LIMIT 1"
    )
    n = await pg.fetchval("SELECT count(*) FROM products WHERE status='active' AND price = $1", price)
    body = await _search(client, [("min_price", str(price)), ("max_price", str(price))])
    assert body["total"] == n
    assert all(Decimal(str(item["price"])) == price for item in body["items"])


@pytest.mark.parametrize("sort", ["price_asc", "price_desc", "newest", "rating"])
async def test_pagination_has_no_duplicates_or_gaps(client: TestClient, pg: asyncpg.Connection, sort: str) -> None:
    fandom = (await _top(pg, "fandom", 1))[0]
    expected = {
        str(r["id"]) for r in await pg.fetch("SELECT id FROM products WHERE status='active' AND fandom=$1", fandom)
    }
    seen: list[str] = []
    page = 1
    while True:
        body = await _search(client, [("fandom", fandom), ("sort", sort), ("size", "37"), ("page", str(page))])
        seen.extend(item["id"] for item in body["items"])
        if page >= body["pages"]:
            break
        page += 1
    assert len(seen) == len(set(seen)), "a product appeared on two pages"
    assert set(seen) == expected


async def test_sorting_orders_items(client: TestClient) -> None:
    prices = [i["price"] for i in (await _search(client, [("sort", "price_asc"), ("size", "100")]))["items"]]
    assert prices == sorted(prices)
    prices = [i["price"] for i in (await _search(client, [("sort", "price_desc"), ("size", "100")]))["items"]]
    assert prices == sorted(prices, reverse=True)
    dates = [i["created_at"] for i in (await _search(client, [("size", "100")]))["items"]]
    assert dates == sorted(dates, reverse=True)


async def test_typos_still_find_the_fandom(client: TestClient, pg: asyncpg.Connection) -> None:
    hp = await pg.fetchval("SELECT count(*) FROM products WHERE status='active' AND fandom = 'Harry Potter'")
    assert hp > 0, "the sample catalog should carry Harry Potter products"
    body = await _search(client, [("q", "hary poter")])
    assert body["total"] > 0
    top = [item["fandom"] for item in body["items"][:10]]
    assert top.count("Harry Potter") >= 8, top


async def test_matches_are_highlighted_in_the_name(client: TestClient, pg: asyncpg.Connection) -> None:
    name = await pg.fetchval("SELECT name FROM products WHERE status='active' AND fandom='Harry Potter' LIMIT 1")
    word = name.split()[0]
    body = await _search(client, [("q", word)])
    highlighted = [item["highlight"]["name"] for item in body["items"] if "highlight" in item]
    assert highlighted, body["items"][:2]
    assert any("<em>" in h for h in highlighted)


async def test_query_syntax_is_plain_text(client: TestClient) -> None:
    for q in ["name:*", '{"match_all":{}}', "*", "\\", '"', "AND OR NOT", "(wand", "wand~2^5"]:
        response = await client.get("/api/search", params={"q": q})
        assert response.status == 200, (q, await response.text())
        body = await response.json()
        assert body["query"] == q.strip()
    everything = (await _search(client, []))["total"]
    assert (await _search(client, [("q", "*")]))["total"] < everything


# --- what shoppers type (issue 8): cross-field matching, stemming, synonyms, recovery ----------------


def _search_response_validator() -> Any:
    """The OpenAPI document's SearchResponse schema, resolvable on its own."""
    import jsonschema

    from proxy.openapi import openapi_document

    document = openapi_document()
    schema = {**document["components"]["schemas"]["SearchResponse"], "components": document["components"]}
    return jsonschema.Draft202012Validator(schema)


async def _count(pg: asyncpg.Connection, where: str, *args: Any) -> int:
    return int(await pg.fetchval(f"SELECT count(*) FROM products p WHERE p.status = 'active' AND {where}", *args))


@pytest.mark.parametrize(
    ("q", "fandom", "category"),
    [
        ("pokemon plush", "Pokémon", "plush"),
        ("pokémon plushies", "Pokémon", "plush"),
        ("star wars poster", "Star Wars", "posters"),
        ("star wars posters", "Star Wars", "posters"),
    ],
)
async def test_franchise_and_product_type_find_that_product_first(
    client: TestClient, pg: asyncpg.Connection, q: str, fandom: str, category: str
) -> None:
    expected = await _count(pg, "p.fandom = $1 AND p.category = $2", fandom, category)
    assert expected > 0, "the sample catalog should carry such products"
    body = await _search(client, [("q", q)])
    assert body["relaxed"] is False
    top = body["items"][: min(expected, 10)]
    assert [(i["fandom"], i["category"]) for i in top] == [(fandom, category)] * len(top), [i["name"] for i in top]


@pytest.mark.parametrize("q", ["marvel t-shirt", "marvel tshirt", "marvel t shirt", "marvel tee", "MARVEL T-SHIRTS"])
async def test_t_shirt_spellings_all_find_marvel_t_shirts(client: TestClient, pg: asyncpg.Connection, q: str) -> None:
    expected = await _count(pg, "p.fandom = 'Marvel' AND (p.name LIKE '%T-Shirt%' OR p.name LIKE '%Tee%')")
    assert expected > 0
    body = await _search(client, [("q", q)])
    top = body["items"][: min(expected, 10)]
    assert all(i["fandom"] == "Marvel" and ("T-Shirt" in i["name"] or "Tee" in i["name"]) for i in top), [
        i["name"] for i in top
    ]


async def test_a_plural_is_not_a_typo(client: TestClient, pg: asyncpg.Connection) -> None:
    assert await _count(pg, "p.name ~ '\\mWanda\\M'") > 0, "Wanda Maximoff products make the trap"
    body = await _search(client, [("q", "wands")])
    names = [i["name"] for i in body["items"][:10]]
    assert all("Wand " in n + " " and "Wanda" not in n for n in names), names
    scarves = await _search(client, [("q", "scarves")])
    assert scarves["total"] > 0 and "Scarf" in scarves["items"][0]["name"]


async def test_one_edit_typo_finds_the_fandom_before_two_edit_lookalikes(client: TestClient) -> None:
    body = await _search(client, [("q", "pokmon")])
    assert [i["fandom"] for i in body["items"][:10]] == ["Pokémon"] * 10, [i["name"] for i in body["items"][:10]]


async def test_gryffindor_scarf_relaxes_to_gryffindor_things(client: TestClient, pg: asyncpg.Connection) -> None:
    assert await _count(pg, "p.name ILIKE '%gryffindor%' AND p.name ILIKE '%scarf%'") == 0
    body = await _search(client, [("q", "gryffindor scarf")])
    assert body["relaxed"] is True and "did_you_mean" not in body
    assert body["total"] > 0
    top = body["items"][:10]
    assert all("Gryffindor" in i["name"] + i["description"] for i in top), [i["name"] for i in top]
    # Facets describe what is shown: every item has one fandom.
    assert sum(b["count"] for b in body["facets"]["fandom"]) == body["total"]
    _search_response_validator().validate(body)


async def test_a_zero_result_query_answers_with_a_spelling_correction(client: TestClient) -> None:
    # "okemon": the first letter is the typo, which the query's typo matching never forgives.
    body = await _search(client, [("q", "okemon plush")])
    assert body["relaxed"] is True
    assert body["did_you_mean"] == "pokemon plush"
    assert body["query"] == "okemon plush"
    assert body["total"] > 0
    assert {(i["fandom"], i["category"]) for i in body["items"]} == {("Pokémon", "plush")}
    assert sum(b["count"] for b in body["facets"]["category"]) == body["total"]
    _search_response_validator().validate(body)


async def test_relaxed_results_keep_the_filters(client: TestClient) -> None:
    body = await _search(client, [("q", "gryffindor scarf"), ("category", "stationery")])
    assert body["relaxed"] is True and body["total"] > 0
    assert {i["category"] for i in body["items"]} == {"stationery"}
    counts = {b["value"]: b["count"] for b in body["facets"]["category"]}
    assert counts["stationery"] == body["total"]


async def test_nonsense_finds_nothing_and_is_not_relaxed(client: TestClient) -> None:
    body = await _search(client, [("q", "qqxqz vvbvw")])
    assert (body["total"], body["items"], body["relaxed"]) == (0, [], False)
    assert "did_you_mean" not in body
    _search_response_validator().validate(body)


async def test_suggestions_put_the_corrected_fandom_first(client: TestClient) -> None:
    response = await client.get("/api/search/suggestions", params={"q": "pokmon"})
    assert response.status == 200
    suggestions = (await response.json())["suggestions"]
    assert suggestions[0] == {"text": "Pokémon", "type": "fandom"}, suggestions


async def test_equally_matching_suggestions_come_best_rated_first(client: TestClient, pg: asyncpg.Connection) -> None:
    response = await client.get("/api/search/suggestions", params={"q": "snorlax", "size": "20"})
    products = [s for s in (await response.json())["suggestions"] if s["type"] == "product"]
    assert len(products) >= 3
    rows = await pg.fetch(
        "SELECT id, rating FROM products WHERE id = ANY($1::bigint[])", [int(p["id"]) for p in products]
    )
    rating = {str(r["id"]): r["rating"] for r in rows}
    ratings = [rating[p["id"]] for p in products]
    rated = [r for r in ratings if r is not None]
    assert rated == sorted(rated, reverse=True), ratings
    assert ratings[: len(rated)] == rated, "unrated products come last"


async def test_the_proxy_holds_every_fandom_and_category_with_its_product_count(
    client: TestClient, pg: asyncpg.Connection
) -> None:
    taxonomy = await held_taxonomy(client)
    expected: dict[tuple[str, str], int] = {}
    for kind in ("fandom", "category"):
        rows = await pg.fetch(f"SELECT {kind} AS v, count(*) AS n FROM products WHERE status = 'active' GROUP BY 1")
        expected.update(((kind, r["v"]), r["n"]) for r in rows)
    assert dict(taxonomy.counts) == expected


async def test_once_the_vocabulary_is_held_the_engine_is_asked_for_product_names_only(
    search_catalog: SearchCatalog, stack_urls: StackUrls
) -> None:
    async with proxy_behind_front(search_catalog, stack_urls) as (client, front):
        await held_taxonomy(client)
        front.bodies.clear()
        response = await client.get("/api/search/suggestions", params={"q": "har"})
        assert response.status == 200
        suggestions = (await response.json())["suggestions"]
        assert suggestions[0] == {"text": "Harry Potter", "type": "fandom"}, suggestions
        (asked,) = [orjson.loads(body) for body in front.bodies]
        # Not the fandom and category counts: they visited every Harry Potter product.
        assert "aggs" not in asked and "fandom.prefix" not in front.bodies[0].decode()


# Prefixes, typos, several words, accents, a prefix of a category, and one matching nothing.
_SUGGESTED = ["h", "har", "harr", "hermoine", "pokmon", "pokém", "st", "star wras", "plus", "lightsab", "qqxqz"]


async def test_suggestions_from_the_held_vocabulary_are_the_engines_own(
    client: TestClient, search_catalog: SearchCatalog, stack_urls: StackUrls
) -> None:
    # The same answers as when the engine counts fandoms and categories on every keystroke.
    await held_taxonomy(client)
    counting = proxy_settings(search_catalog, stack_urls, suggest_taxonomy_refresh_s=0, cache_enabled=False)
    async with TestClient(TestServer(create_app(counting))) as engine_counts:
        assert engine_counts.app[TAXONOMY].current is None
        for q in _SUGGESTED:
            answers = []
            for proxy in (client, engine_counts):
                response = await proxy.get("/api/search/suggestions", params={"q": q, "size": "8"})
                assert response.status == 200, await response.text()
                answers.append(await response.json())
            assert answers[0] == answers[1], q
