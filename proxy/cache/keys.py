"""Cache keys: one canonical key per distinct answer, whatever the request's spelling.

Pure code. A key is built from the *validated* request (``proxy.params``), never from the raw
query string: defaults are filled in, filter values arrive sorted and de-duplicated, numbers
parsed and the sort resolved, so ``?fandom=B&fandom=A`` and ``?fandom=A,B&page=1`` share a key,
and parameters the endpoint does not read (``utm_source``, a cache-buster) never reach it —
junk can neither split an entry nor poison one. The route is part of the key.

Redis holds entries under a fixed-length digest of the key (:func:`storage_key`); the digest is
also what a filled-entry notice carries (``proxy.cache.notices``).
"""

from __future__ import annotations

import hashlib
import re
from typing import Final
from urllib.parse import quote_plus

from proxy.params import SearchRequest, SuggestRequest

# Bump when the shape of a cached answer changes: old entries then simply stop being found.
CACHE_KEY_VERSION: Final = 2

# What quote_plus leaves as it is: most values are made of these alone and skip it.
_UNQUOTED = re.compile(r"[A-Za-z0-9_.~-]*")


def _encode(fields: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> str:
    """``urlencode(fields)`` for names that need no quoting, at a fraction of its cost (issue 24:
    urlencode was a tenth of the cache's own time on a miss): a value is quoted only if needed."""
    return "&".join(f"{name}={value if _UNQUOTED.fullmatch(value) else quote_plus(value)}" for name, value in fields)


def request_key(request: SearchRequest | SuggestRequest) -> str:
    """A canonical, human-readable key: equal requests get equal keys, whatever their spelling.

    ``q`` keeps its case because the response echoes it.
    """
    if isinstance(request, SuggestRequest):
        return f"suggest:v{CACHE_KEY_VERSION}?" + _encode((("q", request.q), ("size", str(request.size))))
    fields: list[tuple[str, str]] = [("q", request.q)]
    fields.extend(("category", value) for value in request.categories)
    fields.extend(("fandom", value) for value in request.fandoms)
    fields.extend(("seller_id", value) for value in request.seller_ids)
    # repr(float) is the shortest round-tripping form: "10", "10.0" and "10.00" all give "10.0".
    fields.append(("min_price", "" if request.min_price is None else repr(request.min_price)))
    fields.append(("max_price", "" if request.max_price is None else repr(request.max_price)))
    fields.append(("in_stock", "" if request.in_stock is None else str(request.in_stock).lower()))
    fields.extend((("sort", request.sort), ("page", str(request.page)), ("size", str(request.size))))
    return f"search:v{CACHE_KEY_VERSION}?" + _encode(fields)


def product_key(product_id: int) -> str:
    return f"product:v{CACHE_KEY_VERSION}/{product_id}"


def seller_key(seller_id: int) -> str:
    return f"seller:v{CACHE_KEY_VERSION}/{seller_id}"


def digest(key: str) -> str:
    """32 hex digits naming ``key`` in Redis and in fill notices."""
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


def storage_key(prefix: str, key_digest: str) -> str:
    # The digest in braces is the Redis Cluster hash tag: an entry and its fill lock share a
    # slot, so the lock-and-read and the store-and-unlock pipelines go to one node.
    return f"{prefix}cache:{{{key_digest}}}"


def lock_key(prefix: str, key_digest: str) -> str:
    return f"{prefix}cache-fill:{{{key_digest}}}"


def fills_channel(prefix: str) -> str:
    """The pub/sub channel on which a worker that filled an entry names its digest."""
    return f"{prefix}cache:filled"
