"""The OpenAPI 3.1 document served at ``/openapi.json``.

Built from the same constants the parser uses (``proxy.params``) and the price buckets of
``catalog.mapping``, so limits cannot drift apart. The test suite checks real responses
against the schemas here.
"""

from __future__ import annotations

from typing import Any

import orjson

from catalog.mapping import PRICE_BUCKETS
from proxy.params import (
    DEFAULT_PAGE_SIZE,
    DEFAULT_SUGGEST_SIZE,
    MAX_PAGE_SIZE,
    MAX_QUERY_CHARS,
    MAX_RESULT_WINDOW,
    MAX_SUGGEST_QUERY_CHARS,
    MAX_SUGGEST_SIZE,
    SORTS,
)
from proxy.query import SOURCE_FIELDS

_STRING_LIST = {
    "type": "array",
    "items": {"type": "string"},
}


def _param(name: str, schema: dict[str, Any], description: str, *, explode: bool | None = None) -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": schema}
    param["description"] = description
    if explode is not None:
        param["style"] = "form"
        param["explode"] = explode
    return param


_RATE_HEADERS = {
    "X-Request-ID": {"description": "The client's request id, echoed, or one generated.", "schema": {"type": "string"}},
    "X-Cache": {"schema": {"type": "string", "enum": ["HIT", "MISS", "STALE", "BYPASS"]}},
    "X-Search-Backend": {"schema": {"type": "string", "enum": ["elasticsearch", "postgres"]}},
}

_PROBLEM_RESPONSE = {
    "description": "A problem (RFC 9457).",
    "headers": {"X-Request-ID": _RATE_HEADERS["X-Request-ID"]},
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}

_SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
            "invalid_params": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "reason"],
                    "properties": {"name": {"type": "string"}, "reason": {"type": "string"}},
                    "additionalProperties": False,
                },
            },
        },
    },
    "Item": {
        "type": "object",
        "required": list(SOURCE_FIELDS),
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "description": {"type": "string"},
            "category": {"type": "string"},
            "fandom": {"type": "string"},
            "price": {"type": "number", "minimum": 0},
            "currency": {"type": "string", "minLength": 3, "maxLength": 3},
            "in_stock": {"type": "boolean"},
            "rating": {"type": ["number", "null"], "minimum": 0, "maximum": 5},
            "seller": {
                "type": "object",
                "required": ["id", "name"],
                "properties": {"id": {"type": "string"}, "name": {"type": "string"}},
            },
            "image_url": {"type": ["string", "null"]},
            "created_at": {"type": "string", "format": "date-time"},
            "highlight": {
                "type": "object",
                "description": "Matched parts of the name wrapped in <em>; everything else HTML-escaped.",
                "properties": {"name": {"type": "string"}},
            },
        },
    },
    "TermFacet": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["value", "count"],
            "properties": {"value": {"type": "string"}, "count": {"type": "integer", "minimum": 0}},
        },
    },
    "PriceFacet": {
        "type": "array",
        "description": "Fixed buckets, always all of them, in order; each counts prices p with from <= p < to "
        "(null: that end is open).",
        "items": {
            "type": "object",
            "required": ["key", "from", "to", "count"],
            "properties": {
                "key": {"type": "string", "enum": [key for key, _, _ in PRICE_BUCKETS]},
                "from": {"type": ["number", "null"]},
                "to": {"type": ["number", "null"]},
                "count": {"type": "integer", "minimum": 0},
            },
        },
    },
    "SearchResponse": {
        "type": "object",
        "required": ["query", "total", "total_relation", "page", "size", "pages", "items", "facets", "took_ms"],
        "properties": {
            "query": {"type": "string"},
            "total": {"type": "integer", "minimum": 0},
            "total_relation": {"type": "string", "enum": ["eq", "gte"]},
            "page": {"type": "integer", "minimum": 1},
            "size": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
            "pages": {"type": "integer", "minimum": 0},
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/Item"}},
            "facets": {
                "type": "object",
                "description": "Disjunctive counts: each facet applies every filter except its own.",
                "required": ["category", "fandom", "price"],
                "properties": {
                    "category": {"$ref": "#/components/schemas/TermFacet"},
                    "fandom": {"$ref": "#/components/schemas/TermFacet"},
                    "price": {"$ref": "#/components/schemas/PriceFacet"},
                },
            },
            "took_ms": {"type": "integer", "minimum": 0},
        },
    },
    "SuggestResponse": {
        "type": "object",
        "required": ["query", "suggestions"],
        "properties": {
            "query": {"type": "string"},
            "suggestions": {
                "type": "array",
                "maxItems": MAX_SUGGEST_SIZE,
                "items": {
                    "type": "object",
                    "required": ["text", "type"],
                    "properties": {
                        "text": {"type": "string"},
                        "type": {"type": "string", "enum": ["product", "fandom", "category"]},
                        "id": {"type": "string", "description": "Present for products."},
                    },
                },
            },
        },
    },
    "Readiness": {
        "type": "object",
        "required": ["status", "checks"],
        "properties": {
            "status": {"type": "string", "enum": ["ready", "degraded", "unavailable"]},
            "checks": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "required": ["ok", "detail"],
                    "properties": {"ok": {"type": "boolean"}, "detail": {"type": "string"}},
                },
            },
        },
    },
}


def _json(schema_name: str, description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}},
    }
    if headers:
        response["headers"] = headers
    return response


def openapi_document() -> dict[str, Any]:
    search_params = [
        _param(
            "q",
            {"type": "string", "maxLength": MAX_QUERY_CHARS},
            "Words to search for, typo-tolerant; plain text (no query syntax). Absent or empty: browse.",
        ),
        _param(
            "category",
            _STRING_LIST,
            "Categories (repeat or comma-separate); OR within, AND with other filters.",
            explode=True,
        ),
        _param("fandom", _STRING_LIST, "Fandoms (repeat or comma-separate).", explode=True),
        _param("seller_id", {"type": "array", "items": {"type": "string", "pattern": "^[0-9]+$"}}, "Seller ids."),
        _param("min_price", {"type": "number", "minimum": 0}, "Lowest price, inclusive."),
        _param("max_price", {"type": "number", "minimum": 0}, "Highest price, inclusive."),
        _param("in_stock", {"type": "string", "enum": ["true", "false", "1", "0"]}, "Only (not) in-stock products."),
        _param(
            "sort",
            {"type": "string", "enum": sorted(SORTS)},
            "relevance (default with q), newest (default without), price_asc, price_desc, rating.",
        ),
        _param(
            "page",
            {"type": "integer", "minimum": 1, "default": 1},
            f"1-based page; page × size must not exceed {MAX_RESULT_WINDOW}.",
        ),
        _param(
            "size",
            {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": DEFAULT_PAGE_SIZE},
            "Items per page.",
        ),
    ]
    suggest_params = [
        {
            "name": "q",
            "in": "query",
            "required": True,
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_SUGGEST_QUERY_CHARS},
            "description": "The prefix typed so far; typo-tolerant from 4 characters.",
        },
        _param(
            "size",
            {"type": "integer", "minimum": 1, "maximum": MAX_SUGGEST_SIZE, "default": DEFAULT_SUGGEST_SIZE},
            "How many suggestions at most.",
        ),
    ]
    errors = {"400": _PROBLEM_RESPONSE, "429": _PROBLEM_RESPONSE, "503": _PROBLEM_RESPONSE}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "hos-search",
            "version": "1.0.0",
            "description": "Product search for the fandom-merchandise marketplace.",
        },
        "paths": {
            "/api/search": {
                "get": {
                    "operationId": "search",
                    "summary": "Full-text product search with facets",
                    "parameters": search_params,
                    "responses": {"200": _json("SearchResponse", "A page of results.", _RATE_HEADERS), **errors},
                }
            },
            "/api/search/suggestions": {
                "get": {
                    "operationId": "suggestions",
                    "summary": "Autocomplete suggestions for a prefix",
                    "parameters": suggest_params,
                    "responses": {"200": _json("SuggestResponse", "Suggestions, best first.", _RATE_HEADERS), **errors},
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "The process is alive",
                    "responses": {"200": {"description": "Alive."}},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "Each dependency's state",
                    "responses": {
                        "200": _json("Readiness", "Ready or degraded (serving)."),
                        "503": _json("Readiness", "Cannot serve searches."),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "Text exposition format.", "content": {"text/plain": {}}}},
                }
            },
        },
        "components": {"schemas": _SCHEMAS},
    }


def openapi_bytes() -> bytes:
    return orjson.dumps(openapi_document())
