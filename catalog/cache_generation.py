"""The catalog generation: the contract between the indexer (who announces) and the proxies.

A counter in Redis at :func:`generation_key` counts changes to the search index. After a batch
changed the index, the indexer increments it and publishes an :class:`Announcement` on the
channel of the same name: the new value plus the *tags* of what changed — ``p:<product id>``
for each product written or deleted, ``s:<seller id>`` for each seller whose products changed,
and :data:`ANY_SELLER` when a product was deleted whose seller is no longer known. A cached
answer carries the tags of what it shows (the products on a page, the seller of a seller page),
so a change to one product makes stale only the answers that show it. An announcement with
``everything`` set (a full rebuild, too many tags, or one that cannot be read) concerns every
answer.

Pure code: encoding and decoding only. ``indexer.generation`` publishes, ``proxy.cache``
subscribes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson

ANY_SELLER = "s:*"
# An announcement listing more tags than this says "everything" instead: a message of a few
# tens of kilobytes at most, and a proxy never loops over thousands of tags per message.
MAX_TAGS = 2000


def generation_key(prefix: str) -> str:
    """The Redis key (and pub/sub channel) of the catalog generation."""
    return f"{prefix}catalog:generation"


def product_tag(product_id: int | str) -> str:
    return f"p:{product_id}"


def seller_tag(seller_id: int | str) -> str:
    return f"s:{seller_id}"


@dataclass(frozen=True, slots=True)
class Announcement:
    """Generation ``generation`` changed what the ``tags`` name (or ``everything``)."""

    generation: int
    tags: frozenset[str] = frozenset()
    everything: bool = False

    @classmethod
    def of(cls, generation: int, tags: Iterable[str] | None) -> Announcement:
        """``tags=None`` (unknown changes) or too many tags announce everything."""
        if tags is None:
            return cls(generation, everything=True)
        tags = frozenset(tags)
        if len(tags) > MAX_TAGS:
            return cls(generation, everything=True)
        return cls(generation, tags)

    def encode(self) -> bytes:
        if self.everything:
            return orjson.dumps({"generation": self.generation, "everything": True})
        return orjson.dumps({"generation": self.generation, "tags": sorted(self.tags)})

    @classmethod
    def decode(cls, payload: bytes | str) -> Announcement | None:
        """The announcement in ``payload``; None when it has no readable generation.

        A bare number (what indexers published before tags existed) announces everything.
        """
        try:
            value = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(value, everything=True)
        if not isinstance(value, dict):
            return None
        generation = value.get("generation")
        if not isinstance(generation, int) or isinstance(generation, bool):
            return None
        tags = value.get("tags")
        if value.get("everything") is True or not isinstance(tags, list):
            return cls(generation, everything=True)
        return cls.of(generation, (tag for tag in tags if isinstance(tag, str)))
