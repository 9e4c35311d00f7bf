"""L1: a bounded in-process LRU of cache entries, one per worker.

Capped both in entries and in bytes (:attr:`Entry.size`); inserting evicts the least recently
used entries until both caps hold. An entry larger than the whole byte budget is not kept.
Not thread-safe: a worker's event loop is its only user.
"""

from __future__ import annotations

from collections import OrderedDict

from proxy.cache.entry import Entry


class LRU:
    __slots__ = ("_entries", "bytes", "max_bytes", "max_entries")

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Entry | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: Entry) -> None:
        self.discard(key)
        if entry.size > self.max_bytes:
            return
        self._entries[key] = entry
        self.bytes += entry.size
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= evicted.size

    def discard(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry.size
