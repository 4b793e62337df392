"""A small in-process cache whose entries expire: one place for the "kept a few seconds"
lookups every service makes (a site's branding, a host's site, an API key's owner, a
site's webhook secret), so each spares a round trip per request the same way.

Bounded crudely on purpose: when full it empties, and a miss only costs the lookup it
caches. ``None`` can be a cached value (an unknown host, say); a miss is ``MISS``.
"""

from __future__ import annotations

import enum
import time
from typing import Generic, Literal, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class _Miss(enum.Enum):
    MISS = enum.auto()


MISS: Literal[_Miss.MISS] = _Miss.MISS


class TtlCache(Generic[K, V]):
    def __init__(self, ttl: float, max_size: int = 10_000) -> None:
        self.ttl = ttl
        self.max_size = max_size
        self._entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | Literal[_Miss.MISS]:
        """The value kept for ``key`` if it is younger than ``ttl``, else ``MISS``."""
        entry = self._entries.get(key)
        if entry is None:
            return MISS
        if entry[0] <= time.monotonic():
            del self._entries[key]
            return MISS
        return entry[1]

    def put(self, key: K, value: V) -> None:
        if key not in self._entries and len(self._entries) >= self.max_size:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + self.ttl, value)

    def drop(self, key: K) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)
