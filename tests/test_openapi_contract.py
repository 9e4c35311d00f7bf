"""The OpenAPI document and the server agree on every query parameter, in both directions.

For every parameter of every operation in ``/openapi.json``, as the running app serves it,
values are derived from the parameter's schema alone (type, minimum/maximum,
minLength/maxLength, maxItems, enum, pattern, required, allowEmptyValue), aimed both inside
and outside it. Whether a value is valid is then decided by the document, not by the
generator: the value is read as OpenAPI reads a query parameter and checked with
``jsonschema``. The server must answer every valid one 200, and every invalid one 400
problem+json naming that parameter, and only it, in ``invalid_params``. A limit changed on one
side only, or a new parameter documented loosely, fails here.

Beyond the schemas the test knows only the conventions the document states itself (in
``proxy.openapi``'s docstring and the parameter descriptions): numbers travel in plain decimal
notation; in an array parameter a comma separates values, spaces around a value are trimmed
and a blank value is ignored, so the values generated for arrays hold no comma and neither
start nor end with a space; and ``page × size`` is bounded across two parameters, which no
schema can say (see ``_ALONGSIDE``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import jsonschema
import orjson
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.errors import PROBLEM_CONTENT_TYPE
from proxy.openapi import openapi_document

Parameter = dict[str, Any]

# How OpenAPI reads a query value for a numeric schema, in the document's plain decimal notation.
_INTEGER = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
# Text that is no number in plain decimal notation, or only nearly one.
_NOT_NUMBERS = ["abc", "1e3", "+1", "0x10", "nan", "inf", "1,5", "1.2.3", " 7", "7 ", "٣", "½", "--1"]

# Sent with the value under test: page × size ≤ 10000 is a rule across two parameters (page's
# description states it); at size 1, page's own minimum and maximum are the whole rule.
_ALONGSIDE: dict[tuple[str, str], list[tuple[str, str]]] = {("/api/search", "page"): [("size", "1")]}

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


# --- what the document says of a value --------------------------------------------------------


def _read(schema: dict[str, Any], text: str) -> Any:
    """A query value as OpenAPI deserialises it for ``schema``; text that is no number stays text."""
    kind = schema.get("type")
    if kind == "integer" and _INTEGER.fullmatch(text):
        return int(text)
    if kind == "number" and _DECIMAL.fullmatch(text):
        return Decimal(text)
    return text


def _is_valid(param: Parameter, texts: list[str]) -> bool:
    """Whether the document allows sending ``param`` with these values (none: left out)."""
    schema = param["schema"]
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
    return bool(jsonschema.Draft202012Validator(schema).is_valid(value))


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
    if schema["type"] == "array":
        # A comma separates values, and values are trimmed (the description says so).
        item = _texts(schema["items"]).filter(_plain_value)
        most = schema.get("maxItems", 5)
        values = st.one_of(st.lists(item, min_size=1, max_size=3), st.lists(item, min_size=most, max_size=most + 1))
    else:
        one = _texts(schema)
        values = st.one_of(one.map(lambda text: [text]), st.lists(one, min_size=2, max_size=2))
    return st.one_of(values, st.just([]), st.just([""]))


def _boundaries(param: Parameter) -> list[list[str]]:
    """The edges of ``param``'s schema, each side: checked on every run, not left to chance."""
    schema = param["schema"]
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


# --- what the server says -----------------------------------------------------------------------


async def _check(
    client: TestClient, path: str, param: Parameter, others: list[tuple[str, str]], texts: list[str]
) -> None:
    name = param["name"]
    response = await client.get(path, params=[*((name, text) for text in texts), *others])
    body = await response.read()
    if _is_valid(param, texts):
        assert response.status == 200, (name, texts, body[:500])
        return
    assert response.status == 400, (name, texts, response.status, body[:500])
    assert response.content_type == PROBLEM_CONTENT_TYPE
    named = {entry["name"] for entry in orjson.loads(body)["invalid_params"]}
    assert named == {name}, (name, texts, body[:500])


@pytest.fixture
def client(proxy_client: TestClient) -> TestClient:
    return proxy_client


async def _served(client: TestClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status == 200
    return dict(orjson.loads(await response.read()))


async def test_every_served_parameter_is_checked(client: TestClient) -> None:
    served = await _served(client)
    assert [(path, p["name"]) for path, op in _operations(served) for p in op["parameters"]] == _PARAMETERS
    assert _PARAMETERS, "no parameters found in the document"


@pytest.mark.parametrize(("path", "name"), _PARAMETERS, ids=[f"{path}?{name}" for path, name in _PARAMETERS])
async def test_the_edges_of_each_parameter_are_where_the_document_puts_them(
    client: TestClient, path: str, name: str
) -> None:
    param, others = _parameter(await _served(client), path, name)
    for texts in _boundaries(param):
        await _check(client, path, param, others, texts)


@pytest.mark.parametrize(("path", "name"), _PARAMETERS, ids=[f"{path}?{name}" for path, name in _PARAMETERS])
@_EXAMPLES
@given(data=st.data())
async def test_the_server_accepts_exactly_what_the_document_calls_valid(
    client: TestClient, path: str, name: str, data: st.DataObject
) -> None:
    param, others = _parameter(await _served(client), path, name)
    await _check(client, path, param, others, data.draw(_sent(param), label=name))
