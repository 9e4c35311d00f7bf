"""The OpenAPI 3.1 document served at ``/openapi.json``.

Built from the constants that the parser (``proxy.params``) and the query builder
(``proxy.query``) use, and from the price buckets of ``catalog.mapping``, so limits cannot
drift apart. The test suite checks real responses (bodies and headers) against the responses here,
and generates requests from each parameter's schema to check that the server accepts exactly
the values the document calls valid (``tests/test_openapi_contract.py``).

Conventions of the parameters, stated here once: numbers are sent in plain decimal notation;
an empty value of an optional parameter is the same as leaving it out, because HTML forms send
unset fields empty (the schemas of text and lists of text admit the empty text themselves; the
others say ``allowEmptyValue``); array parameters are sent repeated
(``category=a&category=b``) and may also be comma-separated (``category=a,b``), which is why
their values cannot contain a comma; those values are trimmed, and blank ones ignored. The
``id`` of a detail path (``/api/products/{id}``, ``/api/sellers/{id}``) is a string of decimal
digits, because ids reach 2^63 − 1, beyond what a JavaScript number holds exactly; the range of
the integer it spells, which a string schema cannot bound, is stated in its description ("an
integer from 1 to …"), and a valid id that names nothing is a 404.

The answers of the cached routes (search, suggestions and both detail routes) carry the
headers of ``components.headers``, defined once there; ``Age`` is present exactly when
``X-Cache`` is ``HIT`` or ``STALE``. A request whose ``If-None-Match`` names the answer's
``ETag`` gets a 304 with the same headers and no body (``proxy.http_caching``).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from catalog.mapping import PRICE_BUCKETS
from catalog.version import VERSION
from proxy.params import (
    DEFAULT_PAGE_SIZE,
    DEFAULT_SUGGEST_SIZE,
    FILTER_VALUE_PATTERN,
    IN_STOCK_VALUES,
    MAX_FILTER_VALUE_CHARS,
    MAX_FILTER_VALUES,
    MAX_ID,
    MAX_NUMBER_CHARS,
    MAX_PAGE_SIZE,
    MAX_PRICE,
    MAX_QUERY_CHARS,
    MAX_RESULT_WINDOW,
    MAX_SUGGEST_QUERY_CHARS,
    MAX_SUGGEST_SIZE,
    PREFIX_PATTERN,
    SORTS,
    TEXT_PATTERN,
)
from proxy.query import SELLER_TOP_VALUES, SOURCE_FIELDS

_EMPTY_IS_ABSENT = " Empty: as if not given."
_VALUES_RULES = (
    f" At most {MAX_FILTER_VALUES} values. A comma inside a value separates two values; spaces around a value"
    " are trimmed, and a value that is empty or blank is ignored."
)


def _values(items: dict[str, Any]) -> dict[str, Any]:
    """A repeatable filter: up to MAX_FILTER_VALUES values (repeats count)."""
    return {"type": "array", "items": items, "maxItems": MAX_FILTER_VALUES}


_FILTER_VALUES = _values({"type": "string", "maxLength": MAX_FILTER_VALUE_CHARS, "pattern": FILTER_VALUE_PATTERN})


def _admits_empty(schema: dict[str, Any]) -> bool:
    """Whether ``schema`` itself admits the empty text (``name=``): a string it allows, or a list
    of one such string."""
    if schema.get("type") == "array":
        return _admits_empty(schema["items"])
    return (
        schema.get("type") == "string"
        and "enum" not in schema
        and not schema.get("minLength")
        and re.search(schema.get("pattern", ""), "") is not None
    )


def _param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    """An optional query parameter; an empty value means "not given" (see the module docstring)."""
    param: dict[str, Any] = {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description + _EMPTY_IS_ABSENT,
    }
    # Only where the schema does not already admit it: a fuzzer reads allowEmptyValue as a second
    # alternative ("" or the schema), and then called category=true (a list of one value, which the
    # server rightly accepts) a violation of both (issue 20).
    if not _admits_empty(schema):
        param["allowEmptyValue"] = True
    if schema.get("type") == "array":
        param["style"] = "form"
        param["explode"] = True
        param["description"] = description + _VALUES_RULES
    return param


_HEADERS: dict[str, Any] = {
    "Allow": {
        "description": "The methods this path answers (RFC 9110), comma-separated.",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
    },
    "X-Request-ID": {
        "description": "The client's request id, echoed, or one generated.",
        "required": True,
        "schema": {"type": "string"},
    },
    "X-Cache": {
        "description": "How the answer was obtained. HIT: from the proxy's cache. STALE: from the cache while "
        "one background refresh runs, or because the search backend failed and the cached answer is still "
        "within its stale-if-error grace. MISS: the search backend was asked, and the answer cached. "
        "BYPASS: the cache, or its shared (Redis) tier, was skipped.",
        "required": True,
        "schema": {"type": "string", "enum": ["HIT", "MISS", "STALE", "BYPASS"]},
    },
    "Age": {
        "description": "Whole seconds since the answer was produced. Present exactly when X-Cache is HIT or STALE.",
        "required": False,
        "schema": {"type": "integer", "minimum": 0},
    },
    "X-Search-Backend": {
        "description": "The backend that answers.",
        "required": True,
        "schema": {"type": "string", "enum": ["elasticsearch", "postgres"]},
    },
    "Cache-Control": {
        "description": "How long browsers and a CDN may keep the answer. An answer of the search engine: "
        "`public, max-age=A, stale-while-revalidate=M, stale-if-error=K`, where A is Age plus the configured "
        "max-age (only Age for a STALE answer); a Postgres fallback answer: a short max-age and no "
        "stale-while-revalidate. `private` instead of `public` when the proxy is configured so; "
        "`private, no-store` for a request with an X-API-Key.",
        "required": True,
        "schema": {"type": "string", "pattern": "^(public|private)(, [a-z-]+(=[0-9]+)?)*$"},
    },
    "ETag": {
        "description": "A strong entity tag of the answer's bytes; send it back in If-None-Match to get a 304 "
        "when the answer has not changed.",
        "required": True,
        "schema": {"type": "string", "pattern": '^"[0-9a-f]{32}"$'},
    },
    "Vary": {
        "description": "The request headers that change the answer: X-API-Key, and Origin when CORS is on.",
        "required": True,
        "schema": {"type": "string"},
    },
    # Rate limiting (proxy.ratelimit): on every response of a limited route that no shared cache
    # may keep, while it is on.
    "RateLimit-Policy": {
        "description": 'The client\'s token bucket (IETF httpapi draft): `"default";q=100;w=60` — q tokens, '
        "refilled over w seconds; the policy is `key` for a client with an API key of its own. Present "
        "while rate limiting is on, on every response a shared cache may not keep (Cache-Control not "
        "`public`): refusals, errors, answers to a request with an X-API-Key, and every answer when "
        "the proxy's answers are `private`.",
        "required": False,
        "schema": {"type": "string"},
    },
    "RateLimit": {
        "description": 'Where the client stands: `"default";r=57;t=12` — r whole tokens left, t seconds until '
        "the bucket is full again, as decided before the answer: a search that found nothing and was "
        "relaxed draws the price of each extra engine call (up to 2) after it. Present as RateLimit-Policy is.",
        "required": False,
        "schema": {"type": "string"},
    },
    "X-RateLimit-Limit": {
        "description": "The bucket's size. Present as RateLimit-Policy is.",
        "required": False,
        "schema": {"type": "integer", "minimum": 1},
    },
    "X-RateLimit-Remaining": {
        "description": "Whole tokens left. Present as RateLimit-Policy is.",
        "required": False,
        "schema": {"type": "integer", "minimum": 0},
    },
    "X-RateLimit-Reset": {
        "description": "Seconds until the bucket is full again (not an epoch time). Present as RateLimit-Policy is.",
        "required": False,
        "schema": {"type": "integer", "minimum": 0},
    },
    "Retry-After": {
        "description": "Whole seconds (rounded up) until the request would be admitted.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    },
}


def _headers(*names: str) -> dict[str, Any]:
    """References to the headers of ``components.headers``."""
    assert set(names) <= set(_HEADERS), names
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


_RATE_HEADERS = ("RateLimit-Policy", "RateLimit", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
# Every answer of a cached route: search, suggestions, product and seller.
_CACHED_HEADERS = _headers(
    "X-Request-ID", "X-Cache", "Age", "X-Search-Backend", "Cache-Control", "ETag", "Vary", *_RATE_HEADERS
)
_NOT_MODIFIED = {
    "description": "Not Modified: If-None-Match named the answer's ETag (compared weakly; `*` matches any "
    "answer). The headers of the answer, without a body.",
    "headers": _CACHED_HEADERS,
}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": _headers("X-Request-ID"),
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


# Every path answers these two, whatever the operation (proxy.middleware.problems).
_METHOD_NOT_ALLOWED = {
    "description": "The path exists, but not for this method (only GET, and HEAD where GET is; OPTIONS for CORS "
    "preflights when CORS_ORIGINS is set). `Allow` names the methods it answers.",
    "headers": _headers("X-Request-ID", "Allow"),
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}
_SERVER_ERROR = _problem(
    "An unexpected error: logged with its traceback under the request id, never described in the answer."
)
_EVERY_PATH = {"405": _METHOD_NOT_ALLOWED, "500": _SERVER_ERROR}
_BAD_QUERY = _problem(
    "A parameter is invalid; `invalid_params` names each. A known parameter's name must be sent plain: "
    "a percent-encoded one (`pag%65=6`) is refused, naming the parameter (a CDN keying on parameter "
    "names would otherwise cache page 6 as page 1). Values not UTF-8 once decoded are refused too."
)
_UNAVAILABLE = {
    "description": "Neither the engine nor the Postgres fallback could answer (down, or over the "
    "fallback's concurrency cap); a stale cached answer would have been served instead if there "
    "was one. Retry after `Retry-After` seconds.",
    "headers": _headers("X-Request-ID", "Retry-After"),
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}
_RATE_LIMITED = {
    "description": "The client's token bucket is empty (rate limiting is on): retry after `Retry-After` seconds.",
    "headers": _headers("X-Request-ID", "Retry-After", *_RATE_HEADERS),
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
            "image_url": {
                "type": ["string", "null"],
                "description": "On the CDN's host when the proxy has one (CDN_URL), the image's path kept. "
                "Only http(s) URLs (or a path): any other scheme, control characters or more than 2048 "
                "characters as stored give null; characters a URL may not hold are percent-escaped.",
            },
            "image_srcset": {
                "type": ["string", "null"],
                "description": "Present when the proxy has image widths for its CDN (CDN_IMAGE_WIDTHS): an HTML "
                "`srcset` of the CDN's resized variants (`<url> 400w, …`); null without an image. Commas "
                "in a URL are escaped (%2C), so each width is one candidate.",
            },
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
        "required": [
            "query",
            "total",
            "total_relation",
            "page",
            "size",
            "pages",
            "items",
            "facets",
            "took_ms",
            "relaxed",
        ],
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
            "took_ms": {
                "type": "integer",
                "minimum": 0,
                "description": "Milliseconds the search backend spent computing these results (the engine's "
                "own `took`), not the request's wall time. It belongs to the results: a response served "
                "from cache (`X-Cache: HIT`) carries the time of the search that produced it.",
            },
            "relaxed": {
                "type": "boolean",
                "description": "false: the items match every word of `query` (allowing small typos). true: "
                "nothing did, and the items come from a relaxed search instead — all words but one must "
                "match, or, when `did_you_mean` is present, every word of that spelling correction. Total, "
                'pages and facets describe the items shown. The storefront should say so ("showing '
                'results for …").',
            },
            "did_you_mean": {
                "type": "string",
                "minLength": 1,
                "description": "Present only when `relaxed` is true and the items are the results of this "
                "corrected spelling of `query` (e.g. `okemon plush` -> `pokemon plush`).",
            },
        },
    },
    "Product": {
        "description": "A product exactly as an element of a search response's `items` shows it, but never "
        "with a `highlight`.",
        "allOf": [{"$ref": "#/components/schemas/Item"}],
        "not": {"required": ["highlight"]},
    },
    "Seller": {
        "type": "object",
        "required": ["id", "name", "active_products", "top_fandoms", "top_categories"],
        "properties": {
            "id": {"type": "string", "pattern": "^[1-9][0-9]*$", "description": "Decimal, without leading zeros."},
            "name": {"type": "string"},
            "active_products": {
                "type": "integer",
                "minimum": 1,
                "description": "How many of the seller's products are active (shown in search).",
            },
            "top_fandoms": {
                "$ref": "#/components/schemas/TermFacet",
                "maxItems": SELLER_TOP_VALUES,
                "description": f"The (at most {SELLER_TOP_VALUES}) fandoms with the most of the seller's active "
                "products, by count descending, then by value.",
            },
            "top_categories": {
                "$ref": "#/components/schemas/TermFacet",
                "maxItems": SELLER_TOP_VALUES,
                "description": f"The (at most {SELLER_TOP_VALUES}) categories with the most of the seller's active "
                "products, by count descending, then by value.",
            },
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
        "description": "With READYZ_DETAILS=false, the status alone.",
        "required": ["status"],
        "properties": {
            "status": {"type": "string", "enum": ["ready", "degraded", "unavailable"]},
            "backend": {
                "type": ["string", "null"],
                "enum": ["elasticsearch", "postgres", None],
                "description": "What answers searches now: the engine, the Postgres fallback, or nothing.",
            },
            "engine_breaker": {"type": "string", "enum": ["closed", "half_open", "open"]},
            "checks": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "required": ["ok", "detail"],
                    "properties": {
                        "ok": {"type": "boolean"},
                        "detail": {
                            "type": "string",
                            "description": "ok, or a short reason; for elasticsearch the cluster's health when "
                            "not green: 'cluster yellow' (still ok: a replica is unassigned) or 'cluster red' "
                            "(not ok: a primary shard has no live copy; the fallback serves).",
                        },
                    },
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


# parse_id's cap on an id's length, leading zeros included (private there, but a real limit).
_MAX_ID_DIGITS = MAX_NUMBER_CHARS


def _id_param(of: str) -> dict[str, Any]:
    """The ``id`` of a detail path: decimal digits (a string: ids reach beyond JavaScript's exact numbers)."""
    return {
        "name": "id",
        "in": "path",
        "required": True,
        # Not all zeros: 0 is outside the range, and a pattern can say that much (a fuzzer sent
        # /api/products/0 as valid and got the 400).
        "schema": {"type": "string", "pattern": "^0*[1-9][0-9]*$", "maxLength": _MAX_ID_DIGITS},
        "description": f"The {of}'s id: an integer from 1 to {MAX_ID}, written in decimal digits only (no sign, "
        f"point, exponent or spaces). Leading zeros are allowed (`007` is 7), up to {_MAX_ID_DIGITS} digits in all.",
        "example": "42",
    }


def openapi_document() -> dict[str, Any]:
    search_params = [
        _param(
            "q",
            {"type": "string", "maxLength": MAX_QUERY_CHARS, "pattern": TEXT_PATTERN},
            "Words to search for, typo-tolerant; plain text (no query syntax), without control characters "
            "other than whitespace. The length counts the text as sent. Absent or only whitespace: browse. "
            "Words may match in any of name, fandom, category and description; plurals, hyphenation "
            "(t-shirt, tshirt, t shirt), accents and the shop's synonyms are taken care of. When no "
            "product matches every word, the answer is relaxed (see `relaxed`).",
        ),
        _param(
            "category",
            _FILTER_VALUES,
            "Categories, exact (repeat, or comma-separate); OR within, AND with other filters.",
        ),
        _param("fandom", _FILTER_VALUES, "Fandoms, exact (repeat, or comma-separate)."),
        _param(
            "seller_id",
            _values({"type": "integer", "minimum": 1, "maximum": MAX_ID}),
            "Seller ids (repeat, or comma-separate).",
        ),
        _param(
            "min_price",
            {"type": "number", "minimum": 0, "maximum": MAX_PRICE},
            "Lowest price, inclusive; not above max_price.",
        ),
        _param("max_price", {"type": "number", "minimum": 0, "maximum": MAX_PRICE}, "Highest price, inclusive."),
        _param(
            "in_stock",
            {"type": "string", "enum": list(IN_STOCK_VALUES)},
            "true (or 1): only products in stock; false (or 0): only products out of stock.",
        ),
        _param(
            "sort",
            {"type": "string", "enum": sorted(SORTS)},
            "relevance (default with q), newest (default without), price_asc, price_desc, rating.",
        ),
        _param(
            "page",
            # The maximum is page × size's bound at size 1; the rule itself spans two parameters.
            {"type": "integer", "minimum": 1, "maximum": MAX_RESULT_WINDOW, "default": 1},
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
            "schema": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_SUGGEST_QUERY_CHARS,
                "pattern": PREFIX_PATTERN,
            },
            "description": "The prefix typed so far; typo-tolerant from 4 characters. Not only whitespace, "
            "and without control characters other than whitespace; the length counts the text as sent.",
            "example": "har",
        },
        _param(
            "size",
            {"type": "integer", "minimum": 1, "maximum": MAX_SUGGEST_SIZE, "default": DEFAULT_SUGGEST_SIZE},
            "How many suggestions at most.",
        ),
    ]
    errors = {"400": _BAD_QUERY, "429": _RATE_LIMITED, "503": _UNAVAILABLE}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "hos-search",
            "version": VERSION,  # the package's: the document describes the code that serves it
            "description": "Product search for the fandom-merchandise marketplace.",
        },
        "paths": {
            "/api/search": {
                "get": {
                    "operationId": "search",
                    "summary": "Full-text product search with facets",
                    "parameters": search_params,
                    "responses": {
                        "200": _json("SearchResponse", "A page of results.", _CACHED_HEADERS),
                        "304": _NOT_MODIFIED,
                        **errors,
                        **_EVERY_PATH,
                    },
                }
            },
            "/api/search/suggestions": {
                "get": {
                    "operationId": "suggestions",
                    "summary": "Autocomplete suggestions for a prefix",
                    "parameters": suggest_params,
                    "responses": {
                        "200": _json("SuggestResponse", "Suggestions, best first.", _CACHED_HEADERS),
                        "304": _NOT_MODIFIED,
                        **errors,
                        **_EVERY_PATH,
                    },
                }
            },
            "/api/products/{id}": {
                "get": {
                    "operationId": "product",
                    "summary": "One product, as search results show it",
                    "parameters": [_id_param("product")],
                    "responses": {
                        "200": _json("Product", "The product.", _CACHED_HEADERS),
                        "304": _NOT_MODIFIED,
                        "400": _problem("The id is malformed or out of range (`invalid_params` names `id`)."),
                        "404": _problem("There is no active product with this id."),
                        "429": _RATE_LIMITED,
                        "503": _UNAVAILABLE,
                        **_EVERY_PATH,
                    },
                }
            },
            "/api/sellers/{id}": {
                "get": {
                    "operationId": "seller",
                    "summary": "A seller's page: name, active product count, top fandoms and categories",
                    "parameters": [_id_param("seller")],
                    "responses": {
                        "200": _json("Seller", "The seller.", _CACHED_HEADERS),
                        "304": _NOT_MODIFIED,
                        "400": _problem("The id is malformed or out of range (`invalid_params` names `id`)."),
                        "404": _problem("There is no seller with this id that has an active product."),
                        "429": _RATE_LIMITED,
                        "503": _UNAVAILABLE,
                        **_EVERY_PATH,
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "The process is alive",
                    "responses": {"200": {"description": "Alive."}, **_EVERY_PATH},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "Each dependency's state",
                    "responses": {
                        "200": _json("Readiness", "Ready or degraded (serving)."),
                        "503": _json("Readiness", "Cannot serve searches."),
                        **_EVERY_PATH,
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics (on an internal listener instead when METRICS_PORT is set: "
                    "404 here)",
                    "responses": {
                        "200": {"description": "Text exposition format.", "content": {"text/plain": {}}},
                        **_EVERY_PATH,
                    },
                }
            },
        },
        "components": {"schemas": _SCHEMAS, "headers": _HEADERS},
    }


def openapi_bytes() -> bytes:
    return orjson.dumps(openapi_document())
