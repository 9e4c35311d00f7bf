"""A cached answer: the response bytes plus what freshness needs to judge them.

Pure code. The same bytes live in both tiers: L1 keeps :class:`Entry` objects, Redis keeps
:meth:`Entry.encode` — a small fixed header, the tags, then the response body untouched, so a
hit costs no JSON work in either tier. The body's ETag is computed once, when the entry is
made or read from Redis, never per hit (it is not stored: it follows from the body).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

from proxy.http_caching import entity_tag

_FORMAT_VERSION: Final = 1
# version, generation, fetched_at, length of the tags block
_HEADER: Final = struct.Struct("!Bqdi")
# Where fetched_at (a big-endian double) sits in an encoded entry: Redis scripts read it there
# (proxy.cache.l2) to tell a young entry from one that needs a fill, without decoding the rest.
FETCHED_AT_OFFSET: Final = struct.calcsize("!Bq")
HEADER_SIZE: Final = _HEADER.size
# Python object overhead of an L1 entry, roughly: counted so tiny answers cannot overfill L1.
ENTRY_OVERHEAD_BYTES: Final = 200


@dataclass(frozen=True, slots=True)
class Entry:
    """``body`` as answered at ``fetched_at`` (Unix time) when the catalog was at ``generation``.

    ``tags`` name what the answer shows (``catalog.cache_generation``): a change announced for one of
    them makes this entry stale. ``generation`` is -1 when it was unknown at fetch time.
    """

    body: bytes
    generation: int
    fetched_at: float
    tags: frozenset[str]
    etag: str = field(init=False, compare=False, repr=False)
    # In [0, 1): where this entry's lifetime falls in the policy's jitter band
    # (proxy.cache.freshness). Taken from the ETag, so every worker and host agrees on it.
    spread: float = field(init=False, compare=False, repr=False)
    # Bytes charged against the L1 budget; summed once: L1 asks up to three times per entry, a
    # loop over every tag each time (34 calls of a miss's ~2,700, counted by benchmarks.overhead).
    size: int = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        etag = entity_tag(self.body)
        object.__setattr__(self, "etag", etag)
        object.__setattr__(self, "spread", int(etag[1:9], 16) / 0x1_0000_0000)
        object.__setattr__(self, "size", len(self.body) + ENTRY_OVERHEAD_BYTES + sum(map(len, self.tags)))

    def encode(self) -> bytes:
        tags = "\n".join(sorted(self.tags)).encode()
        return _HEADER.pack(_FORMAT_VERSION, self.generation, self.fetched_at, len(tags)) + tags + self.body

    @classmethod
    def decode(cls, data: bytes) -> Entry | None:
        """The entry in ``data``; None for anything else (another version, a truncated value)."""
        if len(data) < _HEADER.size:
            return None
        version, generation, fetched_at, tags_length = _HEADER.unpack_from(data)
        start = _HEADER.size
        if version != _FORMAT_VERSION or tags_length < 0 or start + tags_length > len(data):
            return None
        tags_block = data[start : start + tags_length]
        try:
            tags = frozenset(tags_block.decode().split("\n")) if tags_block else frozenset()
        except UnicodeDecodeError:
            return None
        return cls(data[start + tags_length :], generation, fetched_at, tags)
