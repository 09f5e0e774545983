"""The Redis store's own promises: its key layout and TTLs, script reloading,
and failing fast with ``StoreUnavailable`` when its server stops or hangs,
then working again once the server is back. The outage tests run a private
``redis-server`` so they can stop it."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from sysdesign.blocks.ratelimit import Algorithm, Hit, Limit, StoreUnavailable, open_store
from sysdesign.blocks.ratelimit.redis import RedisRateLimitStore
from sysdesign.platform.clock import ManualClock
from tests.backends import delete_prefix, redis_url, service_url
from tests.redis_server import PrivateRedis

FAST = 1.0  # seconds: how soon an outage must be reported


async def assert_unavailable_fast(store: RedisRateLimitStore, hit: Hit) -> None:
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="unavailable"):
        await store.hit_many([hit])
    assert time.monotonic() - started < FAST
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await store.hit_batch([[hit], [hit]])
    assert time.monotonic() - started < FAST


async def test_a_stopped_then_killed_server_fails_fast_and_a_restart_recovers(
    private_redis: PrivateRedis, clock: ManualClock
) -> None:
    store = open_store(f"{private_redis.url}?prefix=down", clock=clock)
    assert isinstance(store, RedisRateLimitStore)
    await store.connect()
    try:
        hit = Hit(Algorithm.TOKEN_BUCKET, "k", Limit(5, 60.0))
        assert (await store.hit(hit)).remaining == 4

        private_redis.pause()  # hangs: the socket timeout must answer
        await assert_unavailable_fast(store, hit)
        with pytest.raises(StoreUnavailable):
            await store.ping()

        await private_redis.kill()  # gone: connections are refused
        await assert_unavailable_fast(store, hit)

        await private_redis.start()  # same port, empty, no scripts loaded
        assert (await store.hit(hit)).remaining == 4
        assert [d.remaining for d in (await store.hit_batch([[hit], [hit]]))[0]] == [3]
        await store.ping()
    finally:
        await store.close()


async def test_a_store_connected_while_the_server_is_down_works_once_it_is_up(
    private_redis: PrivateRedis, clock: ManualClock
) -> None:
    await private_redis.kill()
    store = open_store(private_redis.url, clock=clock)
    with pytest.raises(StoreUnavailable):
        await store.connect()
    try:
        await private_redis.start()
        assert (await store.hit(Hit(Algorithm.GCRA, "k", Limit(1, 1.0)))).allowed
    finally:
        await store.close()


async def test_flushed_scripts_are_loaded_again(
    private_redis: PrivateRedis, clock: ManualClock
) -> None:
    store = open_store(private_redis.url, clock=clock)
    await store.connect()
    admin = Redis.from_url(private_redis.url)
    try:
        hit = Hit(Algorithm.SLIDING_LOG, "k", Limit(3, 60.0))
        assert (await store.hit(hit)).remaining == 2
        await admin.script_flush()
        assert (await store.hit(hit)).remaining == 1
        await admin.script_flush()
        answers = await store.hit_batch([[hit], [hit], []])
        assert [[d.allowed for d in r] for r in answers] == [[True], [False], []]
    finally:
        await admin.aclose()
        await store.close()


# --- on the shared test server -----------------------------------------------------


@pytest.fixture
async def shared() -> AsyncIterator[tuple[RedisRateLimitStore, Redis, ManualClock, str]]:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    clock = ManualClock(start=float(int(time.time())))
    store = open_store(redis_url(prefix), clock=clock)
    assert isinstance(store, RedisRateLimitStore)
    await store.connect()
    admin = Redis.from_url(service_url("redis"))
    try:
        yield store, admin, clock, prefix
    finally:
        await admin.aclose()
        await store.close()
        await delete_prefix(prefix)


async def test_every_key_lives_under_the_prefix_and_expires_after_its_state(
    shared: tuple[RedisRateLimitStore, Redis, ManualClock, str],
) -> None:
    store, admin, _, prefix = shared
    limit = Limit(10, 20.0)
    for algorithm in Algorithm:
        assert (await store.hit(Hit(algorithm, "user:42", limit))).allowed
    keys = sorted([k.decode() async for k in admin.scan_iter(match=f"{prefix}:*")])
    assert keys == sorted(f"{prefix}:rl:user:42:{a.value}" for a in Algorithm)
    for algorithm in Algorithm:
        ttl = await admin.pttl(store.key("user:42", algorithm))
        # Back to full within two periods (sliding_window), plus a second of slack.
        assert 0 < ttl <= 2 * 20_000 + 1000, (algorithm, ttl)
    await store.reset("user:42")
    assert [k async for k in admin.scan_iter(match=f"{prefix}:*")] == []


async def test_a_hit_that_leaves_nothing_counted_stores_nothing(
    shared: tuple[RedisRateLimitStore, Redis, ManualClock, str],
) -> None:
    store, admin, clock, prefix = shared
    for algorithm in Algorithm:
        assert (await store.hit(Hit(algorithm, "k", Limit(1, 1.0), cost=0))).allowed
        assert not (await store.hit(Hit(algorithm, "k", Limit(1, 1.0), cost=2))).allowed
    assert [k async for k in admin.scan_iter(match=f"{prefix}:*")] == []
    # A state that has fully reset is deleted when next written.
    hit = Hit(Algorithm.TOKEN_BUCKET, "k", Limit(2, 1.0))
    await store.hit(hit)
    assert await admin.exists(store.key("k", Algorithm.TOKEN_BUCKET))
    clock.advance(5.0)
    await store.hit_many([Hit(Algorithm.TOKEN_BUCKET, "k", Limit(2, 1.0), cost=0)])
    assert not await admin.exists(store.key("k", Algorithm.TOKEN_BUCKET))
