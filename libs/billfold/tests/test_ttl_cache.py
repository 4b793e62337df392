"""The in-process expiring cache shared by the services' short-lived lookups."""

from __future__ import annotations

import time

from billfold.ttl_cache import MISS, TtlCache


def test_values_expire_after_the_ttl_and_none_is_a_value() -> None:
    cache: TtlCache[str, str | None] = TtlCache(ttl=0.05)
    assert cache.get("a") is MISS
    cache.put("a", "x")
    cache.put("unknown", None)
    assert cache.get("a") == "x"
    assert cache.get("unknown") is None  # a cached "not found", not a miss
    deadline = time.monotonic() + 0.05
    while time.monotonic() <= deadline:  # past the ttl, measured on the same clock
        time.sleep(0.01)
    assert cache.get("a") is MISS
    assert cache.get("unknown") is MISS
    assert len(cache) == 0


def test_zero_ttl_keeps_nothing_and_drop_forgets() -> None:
    never: TtlCache[str, int] = TtlCache(ttl=0)
    never.put("a", 1)
    assert never.get("a") is MISS
    cache: TtlCache[str, int] = TtlCache(ttl=60)
    cache.put("a", 1)
    cache.drop("a")
    cache.drop("not there")
    assert cache.get("a") is MISS


def test_a_full_cache_empties_before_taking_a_new_key() -> None:
    cache: TtlCache[int, int] = TtlCache(ttl=60, max_size=3)
    for n in range(3):
        cache.put(n, n)
    cache.put(1, 10)  # an existing key replaces, nothing is evicted
    assert [cache.get(n) for n in range(3)] == [0, 10, 2]
    cache.put(3, 3)
    assert len(cache) == 1
    assert cache.get(0) is MISS
    assert cache.get(3) == 3
