"""``open_cache`` by URL, and each backend's own promises: the memory cache's
active expiry, the Redis cache's key layout and its failing fast."""

from __future__ import annotations

import socket
import sys
import time
import uuid

import pytest
from redis.asyncio import Redis

from sysdesign.blocks.cache import (
    CacheError,
    CacheUnavailable,
    MemoryCache,
    NotAnInteger,
    open_cache,
    parse_size,
)
from sysdesign.blocks.cache.redis import RedisCache
from sysdesign.platform.clock import ManualClock
from sysdesign.platform.errors import ConfigurationError
from tests.backends import delete_prefix, redis_url, service_url
from tests.blocks.cache.conftest import eventually


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1048576", 1048576),
        ("0", 0),
        ("512kb", 512 * 1024),
        ("64mb", 64 * 1024**2),
        ("64MB", 64 * 1024**2),
        ("1gb", 1024**3),
        ("256m", 256 * 1000**2),
        ("2k", 2000),
        ("100b", 100),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "mb", "1.5gb", "-1", "10tb", "1 gb"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def test_open_cache_chooses_by_scheme(clock: ManualClock) -> None:
    cache = open_cache("memory://?maxmemory=64mb&policy=allkeys-lfu", clock=clock)
    assert isinstance(cache, MemoryCache)
    assert (cache.store.max_bytes, cache.store.policy) == (64 * 1024**2, "allkeys-lfu")
    default = open_cache("memory://")
    assert isinstance(default, MemoryCache)
    assert (default.store.max_bytes, default.store.policy) == (64 * 1024**2, "allkeys-lru")
    redis = open_cache("redis://h:1/2?prefix=app&socket_timeout=0.5&max_connections=8")
    assert isinstance(redis, RedisCache)
    assert redis.key("k") == "app:cache:k"
    plain = open_cache("rediss://h/0")
    assert isinstance(plain, RedisCache) and plain.key("a:b") == "sysdesign:cache:a:b"
    raw = open_cache("redis://h/0?prefix=")
    assert isinstance(raw, RedisCache) and raw.key("a:b") == "a:b"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("memcached://h", "unsupported cache URL scheme 'memcached': use memory://, redis://"),
        ("sysdesign://h1,h1:6380", "node h1:6380 is listed twice"),
        ("sysdesign://h1,:6381", "node ':6381' has no host"),
        ("sysdesign://h1:port", "node 'h1:port'"),
        ("sysdesign://h1?replicas=0", "replicas must be a positive number"),
        ("sysdesign://h1?vnodes=many", "vnodes must be a positive number"),
        ("sysdesign://h1?replica=2", "unknown parameter 'replica'"),
        ("memory://?maxmemory=lots", "maxmemory"),
        ("memory://?policy=volatile-lru", "unknown policy 'volatile-lru'"),
        ("memory://?max_memory=1mb", "unknown parameter 'max_memory'"),
        ("redis://h/0?socket_timeout=soon", "socket_timeout"),
        ("redis://h/0?socket_timeout=0", "socket_timeout"),
    ],
)
def test_open_cache_rejects_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        open_cache(url)


def test_open_cache_says_when_the_driver_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sysdesign.blocks.cache.redis", None)
    with pytest.raises(ConfigurationError, match="pip install 'sysdesign\\[redis\\]'"):
        open_cache("redis://h/0")


async def test_active_expiry_reclaims_keys_nobody_reads(clock: ManualClock) -> None:
    cache = MemoryCache(clock=clock, expire_interval=0.005, expire_budget=50)
    await cache.connect()
    try:
        for i in range(500):
            await cache.set(f"k{i}", b"v", ttl=10)
        await cache.set("kept", b"v")
        clock.advance(11)
        await eventually(lambda: len(cache.store) == 1)
        stats = await cache.stats()
        assert (stats.keys, stats.expirations, stats.hits, stats.misses) == (1, 500, 0, 0)
    finally:
        await cache.close()
    await cache.close()  # closing twice is harmless
    await cache.connect()  # and it can start again
    await cache.close()


async def test_the_memory_cache_refuses_what_the_redis_cache_refuses(clock: ManualClock) -> None:
    cache = MemoryCache(clock=clock)
    await cache.set("s", b"text")
    with pytest.raises(NotAnInteger):
        await cache.incr("s")
    for ttl in (0.0, -5.0):
        with pytest.raises(ValueError, match="ttl"):
            await cache.incr("n", ttl=ttl)
        with pytest.raises(ValueError, match="ttl"):
            await cache.compare_and_set("n", None, b"v", ttl=ttl)


@pytest.mark.redis
async def test_keys_live_under_the_prefix(clock: ManualClock) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    cache = open_cache(redis_url(prefix), clock=clock)
    admin = Redis.from_url(service_url("redis"))
    await cache.connect()
    try:
        await cache.set("k", b"v", ttl=100)
        await cache.incr("n", ttl=100)
        assert await admin.get(f"{prefix}:cache:k") == b"v"
        assert 99_000 < await admin.pttl(f"{prefix}:cache:n") <= 100_000
        await admin.lpush(f"{prefix}:cache:list", b"x")
        with pytest.raises(CacheError, match="WRONGTYPE"):
            await cache.get("list")
        with pytest.raises(CacheError, match="WRONGTYPE"):
            await cache.compare_and_set("list", b"x", b"y")
    finally:
        await cache.close()
        await admin.aclose()
        await delete_prefix(prefix)


async def test_an_unreachable_server_fails_fast() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    cache = open_cache(f"redis://127.0.0.1:{port}/0")
    started = time.monotonic()
    with pytest.raises(CacheUnavailable, match="unavailable"):
        await cache.connect()
    with pytest.raises(CacheUnavailable):
        await cache.get("k")
    with pytest.raises(CacheUnavailable):
        await cache.incr("k", ttl=1)
    with pytest.raises(CacheUnavailable):
        await cache.compare_and_set("k", b"v", b"w")
    assert time.monotonic() - started < 2
    await cache.close()
    with pytest.raises(CacheError, match="not connected"):
        await cache.get("k")
