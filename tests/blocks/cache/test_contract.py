"""The ``Cache`` contract, on every backend: conditions, TTLs, atomic updates, batches."""

from __future__ import annotations

import asyncio

import pytest

from sysdesign.blocks.cache import Cache, CacheStats, NotAnInteger
from tests.blocks.cache.conftest import SHORT, Elapse


async def test_get_set_and_delete(cache: Cache) -> None:
    assert await cache.get("a") is None
    assert await cache.set("a", b"1") is True
    assert await cache.set("b", b"") is True
    assert await cache.get("a") == b"1"
    assert await cache.get("b") == b""  # an empty value is a value, not a miss
    assert await cache.set("a", b"2") is True
    assert await cache.get("a") == b"2"
    assert await cache.delete("a", "b", "never") == 2
    assert await cache.delete("a") == 0
    assert await cache.delete() == 0
    assert await cache.get("a") is None
    await cache.ping()


async def test_only_if_absent_and_only_if_present(cache: Cache) -> None:
    assert await cache.set("k", b"x", only_if_present=True) is False
    assert await cache.get("k") is None
    assert await cache.set("k", b"first", only_if_absent=True) is True
    assert await cache.set("k", b"second", only_if_absent=True) is False
    assert await cache.get("k") == b"first"
    assert await cache.set("k", b"third", only_if_present=True) is True
    assert await cache.get("k") == b"third"
    with pytest.raises(ValueError, match="exclude"):
        await cache.set("k", b"x", only_if_absent=True, only_if_present=True)


async def test_ttl_counts_down_and_the_key_expires(cache: Cache, elapse: Elapse) -> None:
    await cache.set("short", b"v", ttl=SHORT)
    await cache.set("long", b"v", ttl=100)
    await cache.set("forever", b"v")
    short = await cache.ttl("short")
    assert short is not None and 0 < short <= SHORT + 1e-3
    long = await cache.ttl("long")
    assert long is not None and 99 < long <= 100 + 1e-3
    assert await cache.ttl("forever") is None
    with pytest.raises(KeyError):
        await cache.ttl("absent")

    await elapse(SHORT * 1.2)
    assert await cache.get("short") is None
    with pytest.raises(KeyError):
        await cache.ttl("short")
    assert await cache.get("long") == b"v"
    assert await cache.set("short", b"again", only_if_absent=True) is True


async def test_a_plain_set_clears_the_ttl_and_bad_ttls_are_refused(cache: Cache) -> None:
    await cache.set("k", b"v", ttl=100)
    await cache.set("k", b"w")
    assert await cache.ttl("k") is None
    for ttl in (0, -1.0):
        with pytest.raises(ValueError, match="ttl"):
            await cache.set("k", b"v", ttl=ttl)
        with pytest.raises(ValueError, match="ttl"):
            await cache.set_many({"k": b"v"}, ttl=ttl)
    assert await cache.get("k") == b"w"


async def test_incr(cache: Cache) -> None:
    assert await cache.incr("n") == 1
    assert await cache.incr("n", 41) == 42
    assert await cache.incr("n", -50) == -8
    assert await cache.get("n") == b"-8"
    await cache.set("m", b"10")
    assert await cache.incr("m") == 11
    for bad in (b"x", b"01", b" 1", b"+1", b"1.0", b""):
        await cache.set("bad", bad)
        with pytest.raises(NotAnInteger):
            await cache.incr("bad")
        assert await cache.get("bad") == bad
    with pytest.raises(NotAnInteger):
        await cache.incr("bad", ttl=10)  # the same through the path that sets a TTL
    await cache.set("big", b"9223372036854775807")
    with pytest.raises(NotAnInteger):
        await cache.incr("big")


async def test_incr_ttl_applies_only_when_it_creates_the_key(cache: Cache, elapse: Elapse) -> None:
    assert await cache.incr("n", ttl=SHORT) == 1
    assert await cache.incr("n", ttl=100) == 2
    remaining = await cache.ttl("n")
    assert remaining is not None and remaining <= SHORT + 1e-3
    await cache.set("plain", b"5")
    assert await cache.incr("plain", ttl=SHORT) == 6
    assert await cache.ttl("plain") is None
    await elapse(SHORT * 1.2)
    assert await cache.get("n") is None
    assert await cache.incr("n") == 1
    assert await cache.ttl("n") is None


async def test_incr_loses_no_update_under_200_concurrent_tasks(cache: Cache) -> None:
    results = await asyncio.gather(*(cache.incr("hits") for _ in range(200)))
    assert sorted(results) == list(range(1, 201))
    assert await cache.get("hits") == b"200"


async def test_compare_and_set(cache: Cache) -> None:
    assert await cache.compare_and_set("k", b"v0", b"v1") is False  # absent is not b"v0"
    assert await cache.get("k") is None
    assert await cache.compare_and_set("k", None, b"v0") is True
    assert await cache.compare_and_set("k", None, b"other") is False
    assert await cache.compare_and_set("k", b"wrong", b"v1") is False
    assert await cache.get("k") == b"v0"
    assert await cache.compare_and_set("k", b"v0", b"v1", ttl=100) is True
    assert await cache.get("k") == b"v1"
    remaining = await cache.ttl("k")
    assert remaining is not None and 99 < remaining <= 100 + 1e-3
    assert await cache.compare_and_set("k", b"v1", b"v2") is True
    assert await cache.ttl("k") is None  # as set does: no ttl, no expiry
    await cache.set("e", b"")
    assert await cache.compare_and_set("e", b"", b"filled") is True
    assert await cache.compare_and_set("gone", b"", b"x") is False


async def test_exactly_one_of_50_racing_writers_wins(cache: Cache) -> None:
    await cache.set("k", b"v0")
    writers = [f"writer-{i}".encode() for i in range(50)]
    won = await asyncio.gather(*(cache.compare_and_set("k", b"v0", w) for w in writers))
    assert sum(won) == 1
    assert await cache.get("k") == writers[won.index(True)]

    await cache.delete("k")
    won = await asyncio.gather(*(cache.compare_and_set("k", None, w) for w in writers))
    assert sum(won) == 1
    assert await cache.get("k") == writers[won.index(True)]


async def test_get_many_and_set_many(cache: Cache, elapse: Elapse) -> None:
    assert await cache.get_many([]) == {}
    await cache.set_many({})
    await cache.set_many({"a": b"1", "b": b"2", "c": b""})
    await cache.set_many({"t1": b"x", "t2": b"y"}, ttl=SHORT)
    found = await cache.get_many(["a", "b", "c", "missing", "a", "t1", "t2"])
    assert found == {"a": b"1", "b": b"2", "c": b"", "t1": b"x", "t2": b"y"}
    remaining = await cache.ttl("t2")
    assert remaining is not None and remaining <= SHORT + 1e-3
    assert await cache.ttl("a") is None
    await elapse(SHORT * 1.2)
    assert await cache.get_many(iter(["a", "t1", "t2"])) == {"a": b"1"}


async def test_keys_are_any_text(cache: Cache) -> None:
    for key in ("", "with space", "ключ", "a:b:c", "*?[]"):
        await cache.set(key, key.encode())
    assert await cache.get_many(["", "ключ", "*?[]"]) == {
        "": b"",
        "ключ": "ключ".encode(),
        "*?[]": b"*?[]",
    }


async def test_stats(cache: Cache, cache_backend: str) -> None:
    await cache.set("a", b"1")
    await cache.get("a")
    await cache.get("missing")
    stats = await cache.stats()
    assert isinstance(stats, CacheStats)
    assert stats.keys >= 1 and stats.used_bytes > 0
    if cache_backend == "memory":  # Redis reports its whole server
        assert (stats.hits, stats.misses, stats.keys) == (1, 1, 1)
        assert stats.hit_ratio == 0.5
    if cache_backend == "cluster":  # the sum over its nodes: a key on two replicas counts twice
        assert (stats.hits, stats.misses, stats.keys) == (1, 1, 2)
