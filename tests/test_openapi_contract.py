"""The OpenAPI document and the server agree on every parameter and every answer, in both directions.

For every parameter of every operation in ``/openapi.json``, as the running app serves it (the
query parameters, and the ``id`` of the detail paths), values are derived from the parameter's
schema alone (type, minimum/maximum, minLength/maxLength, maxItems, enum, pattern, required,
allowEmptyValue), aimed both inside and outside it. Whether a value is valid is then decided by
the document, not by the generator: the value is read as OpenAPI reads a query parameter and
checked with ``jsonschema`` (its patterns read as ECMA-262 reads them). The server must answer
every valid one 200 (or, for an id, 404 when it names nothing), and every invalid one 400
problem+json naming that parameter, and only it, in ``invalid_params``. A limit changed on one
side only, or a new parameter documented loosely, fails here.

Every answer along the way, and those of the tests of the detail routes below, must also be one
the document describes: a documented status and media type, a body valid against that
response's schema, and its documented headers present when required and valid when present.
Every route the app serves is documented (``/openapi.json`` aside), and the other way round.

Beyond the schemas the test knows only the conventions the document states itself (in
``proxy.openapi``'s docstring and the parameter and header descriptions): numbers travel in
plain decimal notation; in an array parameter a comma separates values, spaces around a value
are trimmed and a blank value is ignored, so the values generated for arrays hold no comma and
neither start nor end with a space; ``page × size`` is bounded across two parameters, which no
schema can say (see ``_ALONGSIDE``); a path id's schema (decimal digits) cannot bound the
integer it spells, so its description states the range ("an integer from A to B", see
``_id_range``), and a valid id that names nothing is answered 404; and ``Age`` is present
exactly when ``X-Cache`` is HIT or STALE.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from importlib.metadata import version as package_version
from typing import Any
from urllib.parse import quote

import jsonschema
import orjson
import pytest
import pytest_asyncio
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from proxy.errors import PROBLEM_CONTENT_TYPE
from proxy.openapi import openapi_document
from proxy.state import CACHE
from proxy.storefront import PATHS as STOREFRONT_PATHS

Parameter = dict[str, Any]

# How OpenAPI reads a query value for a numeric schema, in the document's plain decimal notation.
_INTEGER = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
# Text that is no number in plain decimal notation, or only nearly one.
_NOT_NUMBERS = ["abc", "1e3", "+1", "0x10", "nan", "inf", "1,5", "1.2.3", " 7", "7 ", "٣", "½", "--1"]

# Sent with the value under test: page × size ≤ 10000 is a rule across two parameters (page's
# description states it); at size 1, page's own minimum and maximum are the whole rule.
_ALONGSIDE: dict[tuple[str, str], list[tuple[str, str]]] = {("/api/search", "page"): [("size", "1")]}

# The range of a path id, as its description states it (a string schema cannot bound a number).
_ID_RANGE = re.compile(r"an integer from ([0-9]+) to ([0-9]+)")
# The X-Cache values that come with an Age header (the Age header's description says so).
_AGED = {"HIT", "STALE"}
# Served, but not a route of the API it describes.
_UNDOCUMENTED = {"/openapi.json", *STOREFRONT_PATHS}

# Bounded: every valid value is a real search against the engine.
_EXAMPLES = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for operation in item.values():
            if operation.get("parameters"):
                yield path, operation


def _parameter(document: dict[str, Any], path: str, name: str) -> tuple[Parameter, list[tuple[str, str]]]:
    """The parameter as documented, and what else must be sent for its operation to be answered."""
    operation = document["paths"][path]["get"]
    [param] = [p for p in operation["parameters"] if p["name"] == name]
    others = []
    for other in operation["parameters"]:
        if other["required"] and other["name"] != name:
            # A required parameter's documented example must itself be valid.
            assert _is_valid(other, [other["example"]]), other
            others.append((other["name"], other["example"]))
    return param, others + _ALONGSIDE.get((path, name), [])


_PARAMETERS = [
    (path, param["name"]) for path, operation in _operations(openapi_document()) for param in operation["parameters"]
]
_LABELS = [path if f"{{{name}}}" in path else f"{path}?{name}" for path, name in _PARAMETERS]


def _in_path(param: Parameter) -> bool:
    return bool(param["in"] == "path")


def _id_range(param: Parameter) -> tuple[int, int]:
    """The integers a path id may spell, from its description."""
    match = _ID_RANGE.search(param["description"])
    assert match, f"{param['name']}: the description states no range"
    return int(match[1]), int(match[2])


# --- what the document says of a value --------------------------------------------------------


def _read(schema: dict[str, Any], text: str) -> Any:
    """A query value as OpenAPI deserialises it for ``schema``; text that is no number stays text."""
    kind = schema.get("type")
    if kind == "integer" and _INTEGER.fullmatch(text):
        return int(text)
    if kind == "number" and _DECIMAL.fullmatch(text):
        return Decimal(text)
    return text


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
    """``pattern`` as ECMA-262 reads it: a final ``$`` is the end of the text (Python's ``$`` also
    matches before a final newline, which would call ``7\\n`` a string of digits)."""
    if not isinstance(instance, str):
        return
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    if not re.search(pattern, instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


_Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _ecma_pattern})


def _is_valid(param: Parameter, texts: list[str]) -> bool:
    """Whether the document allows sending ``param`` with these values (none: left out)."""
    schema = param["schema"]
    if _in_path(param):
        [text] = texts  # a path segment is always sent, once
        low, high = _id_range(param)
        return bool(_Validator(schema).is_valid(text)) and low <= int(text) <= high
    if not texts:
        return not param["required"]
    if texts == [""] and param.get("allowEmptyValue"):
        return True
    if schema["type"] == "array":
        value: Any = [_read(schema["items"], text) for text in texts]
    elif len(texts) > 1:
        return False  # a single-valued parameter sent twice
    else:
        value = _read(schema, texts[0])
    return bool(_Validator(schema).is_valid(value))


# --- values aimed inside and outside a schema -------------------------------------------------


@functools.cache
def _breaking_characters(pattern: str) -> list[str]:
    """Characters (of the Basic Multilingual Plane) whose presence alone breaks ``pattern``."""
    if not re.search(pattern, "ab"):
        return []
    return [
        chr(code)
        for code in range(0x10000)
        if not 0xD800 <= code <= 0xDFFF and not re.search(pattern, f"a{chr(code)}b")
    ]


def _decimal_text(value: Decimal) -> str:
    return format(value, "f")


def _number_texts(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    low, high = schema.get("minimum"), schema.get("maximum")
    if schema["type"] == "integer":
        inside: st.SearchStrategy[str] = st.integers(low, high).map(str)
        outside = [st.integers(max_value=low - 1).map(str)] if low is not None else []
        outside += [st.integers(min_value=high + 1).map(str)] if high is not None else []
    else:
        cent = Decimal("0.01")
        low_d = None if low is None else Decimal(str(low))
        high_d = None if high is None else Decimal(str(high))

        def decimals(lo: Decimal | None, hi: Decimal | None) -> st.SearchStrategy[str]:
            return st.decimals(lo, hi, places=2, allow_nan=False, allow_infinity=False).map(_decimal_text)

        inside = decimals(low_d, high_d)
        outside = [decimals(None, low_d - cent)] if low_d is not None else []
        outside += [decimals(high_d + cent, None)] if high_d is not None else []
    return st.one_of(inside, *outside, st.sampled_from(_NOT_NUMBERS), st.text(max_size=6))


def _string_texts(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    if "enum" in schema:
        members = st.sampled_from([str(value) for value in schema["enum"]])
        return st.one_of(members, members.map(str.upper), members.map(" {}".format), st.text(max_size=8))
    pattern = schema.get("pattern")
    max_length = schema.get("maxLength")
    shaped = st.from_regex(pattern, fullmatch=True) if pattern else st.text()
    candidates = [shaped, st.text(max_size=(max_length or 20) + 5)]
    if max_length is not None:
        # Shaped text repeated to exactly the limit, or one past it.
        candidates.append(
            st.tuples(shaped.filter(bool), st.sampled_from([max_length, max_length + 1])).map(
                lambda pair: (pair[0] * (pair[1] // len(pair[0]) + 1))[: pair[1]]
            )
        )
    if pattern and (breaking := _breaking_characters(pattern)):
        # Shaped text with one character in it that the pattern refuses.
        candidates.append(
            st.tuples(shaped, st.sampled_from(breaking), st.integers(0, 1000)).map(
                lambda t: t[0][: t[2] % (len(t[0]) + 1)] + t[1] + t[0][t[2] % (len(t[0]) + 1) :]
            )
        )
    # Only spaces and controls: blank, or not.
    candidates.append(st.text(st.characters(categories=["Zs", "Cc"]), min_size=1, max_size=4))
    return st.one_of(candidates)


def _texts(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    if schema["type"] in ("integer", "number"):
        return _number_texts(schema)
    assert schema["type"] == "string", schema  # a new kind of parameter needs a generator here
    return _string_texts(schema)


def _plain_value(text: str) -> bool:
    """A value an array parameter takes as it is: no comma in it, nothing to trim, not blank."""
    return bool(text) and "," not in text and text == text.strip()


def _sent(param: Parameter) -> st.SearchStrategy[list[str]]:
    """What a client may send for ``param``: its values, in order (none: left out)."""
    schema = param["schema"]
    if _in_path(param):
        # Text shaped by the schema or not, and integers around the described range, some padded
        # with zeros. Never empty: without its segment the address is another one.
        low, high = _id_range(param)
        numbers = _number_texts({"type": "integer", "minimum": low, "maximum": high})
        padded = st.tuples(st.integers(low, high), st.integers(0, schema.get("maxLength", 20) + 2)).map(
            lambda pair: "0" * pair[1] + str(pair[0])
        )
        sendable = st.one_of(_texts(schema), numbers, padded).filter(bool)
        return sendable.map(lambda text: [text])
    if schema["type"] == "array":
        # A comma separates values, and values are trimmed (the description says so).
        item = _texts(schema["items"]).filter(_plain_value)
        most = schema.get("maxItems", 5)
        values = st.one_of(st.lists(item, min_size=1, max_size=3), st.lists(item, min_size=most, max_size=most + 1))
    else:
        one = _texts(schema)
        values = st.one_of(one.map(lambda text: [text]), st.lists(one, min_size=2, max_size=2))
    return st.one_of(values, st.just([]), st.just([""]))


def _path_boundaries(param: Parameter) -> list[list[str]]:
    """The edges of a path id: its range, its length, and text that only looks like a number."""
    low, high = _id_range(param)
    longest = param["schema"]["maxLength"]
    texts = [str(low), str(low - 1), str(high), str(high + 1), "-1", "1.5", "abc", " ", "7\n", "1" + "0" * 24]
    texts += [str(low).zfill(longest), str(low).zfill(longest + 1), str(high).zfill(longest)]
    return [[text] for text in texts + _NOT_NUMBERS]


def _boundaries(param: Parameter) -> list[list[str]]:
    """The edges of ``param``'s schema, each side: checked on every run, not left to chance."""
    schema = param["schema"]
    if _in_path(param):
        return _path_boundaries(param)
    array = schema["type"] == "array"
    item = schema["items"] if array else schema
    texts: list[str] = []
    if "enum" in item:
        for value in map(str, item["enum"]):
            texts += [value, value.upper(), f"{value}x"]
    elif item["type"] == "integer":
        texts += [str(item["minimum"]), str(item["minimum"] - 1)]
        if "maximum" in item:
            texts += [str(item["maximum"]), str(item["maximum"] + 1)]
    elif item["type"] == "number":
        low, high = Decimal(str(item["minimum"])), Decimal(str(item["maximum"]))
        texts += [_decimal_text(v) for v in (low, low - Decimal("0.01"), high, high + Decimal("0.01"))]
    else:
        base = param.get("example", "a")
        if "maxLength" in item:
            texts += [
                (base * item["maxLength"])[: item["maxLength"]],
                (base * item["maxLength"])[: item["maxLength"] + 1],
            ]
        if item.get("minLength", 0) > 0:
            texts.append((base * item["minLength"])[: item["minLength"] - 1])
        breaking = _breaking_characters(item["pattern"]) if "pattern" in item else []
        # The first and last refused character, and U+0089 (a C1 control, the one that drifted).
        texts += [f"{base}{char}{base}" for char in {*breaking[:1], *breaking[-1:], "\x89"} & set(breaking)]
    sent = [[text] for text in texts if not array or _plain_value(text)]
    if array:
        example = next(t for t in texts if _is_valid(param, [t]))
        sent += [[example] * schema["maxItems"], [example] * (schema["maxItems"] + 1)]
    else:
        sent.append([texts[0], texts[0]])
    return [*sent, [], [""]]


# --- what the document says of an answer -------------------------------------------------------


def _resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """``node``, or what its ``$ref`` (within the document) points at."""
    ref = node.get("$ref")
    if ref is None:
        return node
    found: Any = document
    for part in ref.removeprefix("#/").split("/"):
        found = found[part]
    return dict(found)


def _conforms(document: dict[str, Any], path: str, response: ClientResponse, body: bytes) -> None:
    """The answer is one the document describes for GET ``path``: status, media type, body and headers."""
    where = (path, response.status, body[:300])
    documented = document["paths"][path]["get"]["responses"].get(str(response.status))
    assert documented is not None, where
    assert response.content_type in documented["content"], where
    schema = documented["content"][response.content_type]["schema"]
    # Built with the document around it, so that its $refs resolve.
    _Validator({**schema, "components": document["components"]}).validate(orjson.loads(body))
    headers = {name: _resolve(document, header) for name, header in documented.get("headers", {}).items()}
    for name, header in headers.items():
        value = response.headers.get(name)
        if value is None:
            assert not header.get("required"), (name, *where)
        else:
            assert _Validator(header["schema"]).is_valid(_read(header["schema"], value)), (name, value, *where)
    if "X-Cache" in headers:
        assert ("Age" in response.headers) == (response.headers["X-Cache"] in _AGED), (dict(response.headers), where)


# --- what the server says -----------------------------------------------------------------------


def _segment(text: str) -> str:
    """``text`` as one path segment: every reserved character escaped, dots too (no ``..`` step)."""
    return quote(text, safe="").replace(".", "%2E")


async def _check(
    client: TestClient,
    document: dict[str, Any],
    path: str,
    param: Parameter,
    others: list[tuple[str, str]],
    texts: list[str],
) -> None:
    name = param["name"]
    if _in_path(param):
        [text] = texts
        address = URL(path.replace(f"{{{name}}}", _segment(text)), encoded=True)
        response = await client.get(address)
        answered = {200, 404}  # a valid id may name nothing
    else:
        response = await client.get(path, params=[*((name, text) for text in texts), *others])
        answered = {200}
    body = await response.read()
    _conforms(document, path, response, body)
    if _is_valid(param, texts):
        assert response.status in answered, (name, texts, response.status, body[:500])
        assert b"invalid_params" not in body, (name, texts, body[:500])
        return
    assert response.status == 400, (name, texts, response.status, body[:500])
    assert response.content_type == PROBLEM_CONTENT_TYPE
    named = {entry["name"] for entry in orjson.loads(body)["invalid_params"]}
    assert named == {name}, (name, texts, body[:500])


@pytest_asyncio.fixture(loop_scope="session")
async def client(proxy_client: TestClient) -> AsyncIterator[TestClient]:
    """The proxy, once its cache follows the catalog: until then an answer is fresh only briefly."""
    view = proxy_client.app[CACHE].view
    deadline = time.monotonic() + 10
    while not view.following:
        assert time.monotonic() < deadline, "the cache did not start following the catalog generation"
        await asyncio.sleep(0.02)
    yield proxy_client


async def _served(client: TestClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status == 200
    return dict(orjson.loads(await response.read()))


async def test_every_served_parameter_is_checked(client: TestClient) -> None:
    served = await _served(client)
    assert [(path, p["name"]) for path, op in _operations(served) for p in op["parameters"]] == _PARAMETERS
    assert _PARAMETERS, "no parameters found in the document"
    assert {path for path, _ in _PARAMETERS} >= {"/api/products/{id}", "/api/sellers/{id}"}


async def test_every_served_route_is_documented(client: TestClient) -> None:
    served = await _served(client)
    app = client.app
    routes = {route.resource.canonical for route in app.router.routes() if route.resource and route.method == "GET"}
    assert routes - _UNDOCUMENTED == set(served["paths"])
    for path, item in served["paths"].items():
        assert set(item) == {"get"}, path
        in_path = {p["name"] for p in item["get"].get("parameters", ()) if p["in"] == "path"}
        assert in_path == set(re.findall(r"\{([^}]+)\}", path)), path
        assert all(p["required"] for p in item["get"].get("parameters", ()) if p["in"] == "path"), path


@pytest.mark.parametrize(("path", "name"), _PARAMETERS, ids=_LABELS)
async def test_the_edges_of_each_parameter_are_where_the_document_puts_them(
    client: TestClient, path: str, name: str
) -> None:
    document = await _served(client)
    param, others = _parameter(document, path, name)
    for texts in _boundaries(param):
        await _check(client, document, path, param, others, texts)


@pytest.mark.parametrize(("path", "name"), _PARAMETERS, ids=_LABELS)
@_EXAMPLES
@given(data=st.data())
async def test_the_server_accepts_exactly_what_the_document_calls_valid(
    client: TestClient, path: str, name: str, data: st.DataObject
) -> None:
    document = await _served(client)
    param, others = _parameter(document, path, name)
    await _check(client, document, path, param, others, data.draw(_sent(param), label=name))


# --- the detail routes: real products and sellers of the shared catalog --------------------------

_PRODUCT = "/api/products/{id}"
_SELLER = "/api/sellers/{id}"
_TOPS = {"fandom": "top_fandoms", "category": "top_categories"}


async def _get(client: TestClient, document: dict[str, Any], path: str, **ids: str) -> tuple[ClientResponse, Any]:
    """GET ``path`` (a documented template, filled with ``ids``), checked against the document."""
    response = await client.get(URL(path.format(**ids), encoded=True))
    body = await response.read()
    _conforms(document, path, response, body)
    return response, orjson.loads(body)


async def _search(client: TestClient, document: dict[str, Any], **params: str) -> dict[str, Any]:
    response = await client.get("/api/search", params=params)
    body = await response.read()
    _conforms(document, "/api/search", response, body)
    assert response.status == 200, body[:500]
    return dict(orjson.loads(body))


async def test_a_product_is_answered_as_search_shows_it(client: TestClient) -> None:
    document = await _served(client)
    browsed = (await _search(client, document, size="10"))["items"]
    searched = (await _search(client, document, q="harry potter", size="10"))["items"]
    assert browsed and any("highlight" in item for item in searched), "the catalog should have such products"
    for item in browsed + searched:
        response, product = await _get(client, document, _PRODUCT, id=item["id"])
        assert response.status == 200, product
        assert product == {key: value for key, value in item.items() if key != "highlight"}
    # Leading zeros name the same product.
    _, padded = await _get(client, document, _PRODUCT, id="000" + browsed[0]["id"])
    assert padded == browsed[0]


async def test_a_seller_page_counts_what_search_finds_of_that_seller(client: TestClient) -> None:
    document = await _served(client)
    items = (await _search(client, document, size="50"))["items"]
    sellers = {item["seller"]["id"]: item["seller"]["name"] for item in items}
    assert len(sellers) >= 3, "the catalog should have several sellers"
    for seller_id, name in list(sellers.items())[:5]:
        response, seller = await _get(client, document, _SELLER, id=seller_id)
        assert response.status == 200, seller
        found = await _search(client, document, seller_id=seller_id, size="1")
        assert found["total_relation"] == "eq"
        assert (seller["id"], seller["name"], seller["active_products"]) == (seller_id, name, found["total"])
        for facet, top in _TOPS.items():
            # With only the seller filter, the facet counts every value among the seller's products.
            most = document["components"]["schemas"]["Seller"]["properties"][top]["maxItems"]
            ranked = sorted(found["facets"][facet], key=lambda entry: (-entry["count"], entry["value"]))
            assert seller[top] == ranked[:most], (seller_id, facet)
        _, padded = await _get(client, document, _SELLER, id="00" + seller_id)
        assert padded == seller


@pytest.mark.parametrize("path", [_PRODUCT, _SELLER])
async def test_an_id_that_names_nothing_is_404(client: TestClient, path: str) -> None:
    document = await _served(client)
    response, problem = await _get(client, document, path, id="999999999")
    assert response.status == 404, problem
    assert response.content_type == PROBLEM_CONTENT_TYPE
    assert "invalid_params" not in problem


@pytest.mark.parametrize("path", [_PRODUCT, _SELLER])
@pytest.mark.parametrize("raw", ["abc", "0", "-1", "1.5", "1" + "0" * 24, "%20", "00", "1e3", "%EF%BC%91"])
async def test_a_malformed_id_is_400_naming_id(client: TestClient, path: str, raw: str) -> None:
    document = await _served(client)
    response, problem = await _get(client, document, path, id=raw)
    assert response.status == 400, problem
    assert response.content_type == PROBLEM_CONTENT_TYPE
    assert [entry["name"] for entry in problem["invalid_params"]] == ["id"]


@pytest.mark.parametrize("path", [_PRODUCT, _SELLER])
async def test_an_id_with_a_brace_is_400_naming_id(client: TestClient, path: str) -> None:
    await test_a_malformed_id_is_400_naming_id(client, path, "%7B1%7D")


async def test_cached_routes_say_how_each_answer_was_obtained(client: TestClient) -> None:
    document = await _served(client)
    item = (await _search(client, document, size="1"))["items"][0]
    addresses = [
        ("/api/search", "/api/search?q=plush&sort=price_asc"),
        ("/api/search/suggestions", "/api/search/suggestions?q=poke"),
        (_PRODUCT, _PRODUCT.format(id=item["id"])),
        (_SELLER, _SELLER.format(id=item["seller"]["id"])),
    ]
    for path, address in addresses:
        # The same answer twice: produced (and cached), then from the cache, with its age.
        for expected in ("MISS", "HIT"):
            response = await client.get(address)
            body = await response.read()
            _conforms(document, path, response, body)
            assert response.status == 200, body[:500]
            assert response.headers["X-Cache"] == expected, (address, dict(response.headers))
            assert response.headers["X-Search-Backend"] == "elasticsearch"
            assert response.headers["Cache-Control"].startswith("public, max-age=")
            assert response.headers["ETag"]
            assert response.headers["X-Request-ID"]
        assert int(response.headers["Age"]) >= 0


async def test_the_documents_version_is_the_packages(client: TestClient) -> None:
    # It said 1.0.0 beside a 0.1.0 package: a client could not tell which release it talked to.
    assert (await _served(client))["info"]["version"] == package_version("hos-search")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_another_method_is_a_documented_405_naming_the_allowed_ones(client: TestClient, method: str) -> None:
    document = await _served(client)
    for path in document["paths"]:
        response = await client.request(method, path.replace("{id}", "1"))
        body = await response.read()
        assert response.status == 405, (method, path, response.status, body[:300])
        _conforms(document, path, response, body)
        assert "GET" in {allowed.strip() for allowed in response.headers["Allow"].split(",")}, (path, response.headers)


async def test_schemas_say_what_a_fuzzer_needs_without_reading_descriptions(client: TestClient) -> None:
    """Found by running schemathesis against the document: it read ``allowEmptyValue`` as a second
    alternative (``""`` or the schema), so for ``category`` — whose schema admits ``category=``
    already — it called ``category=true`` (a list of one value) a violation of both; and an id's
    pattern admitted ``0``, which only the description ruled out."""
    document = await _served(client)
    for path, operation in _operations(document):
        for param in operation["parameters"]:
            if _in_path(param):
                assert not _Validator(param["schema"]).is_valid("0") and not _Validator(param["schema"]).is_valid("000")
                assert _Validator(param["schema"]).is_valid("007")
            elif param.get("allowEmptyValue"):
                schema = param["schema"]
                empty = [""] if schema["type"] == "array" else ""
                assert not _Validator(schema).is_valid(empty), (path, param["name"])
