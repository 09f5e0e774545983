"""``open_store`` and the memory store's own promises: bounded memory."""

from __future__ import annotations

import sys

import pytest

from sysdesign.blocks.ratelimit import (
    Algorithm,
    Hit,
    Limit,
    MemoryRateLimitStore,
    RateLimitStore,
    open_store,
)
from sysdesign.blocks.ratelimit.redis import RedisRateLimitStore
from sysdesign.platform.clock import ManualClock
from sysdesign.platform.errors import ConfigurationError
from tests.blocks.ratelimit.conftest import align


def test_open_store_chooses_by_scheme(clock: ManualClock) -> None:
    assert isinstance(open_store("memory://", clock=clock), MemoryRateLimitStore)
    store = open_store("redis://h:1/2?prefix=app&socket_timeout=0.5&max_connections=8")
    assert isinstance(store, RedisRateLimitStore)
    assert store.key("k", Algorithm.GCRA) == "app:rl:k:gcra"
    default = open_store("rediss://h/0")
    assert isinstance(default, RedisRateLimitStore)
    assert default.key("a:b", Algorithm.SLIDING_LOG) == "sysdesign:rl:a:b:sliding_log"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("memcached://h", "unsupported rate-limit store URL scheme 'memcached'"),
        ("redis://h/0?prefix=", "empty prefix"),
        ("redis://h/0?socket_timeout=soon", "socket_timeout"),
        ("redis://h/0?socket_timeout=0", "socket_timeout"),
    ],
)
def test_open_store_rejects_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        open_store(url)


def test_open_store_says_when_the_driver_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sysdesign.blocks.ratelimit.redis", None)
    with pytest.raises(ConfigurationError, match="pip install 'sysdesign\\[redis\\]'"):
        open_store("redis://h/0")


async def test_memory_drops_keys_that_have_fully_reset(clock: ManualClock) -> None:
    store = MemoryRateLimitStore(clock)
    limit = Limit(5, 10.0)
    for algorithm in Algorithm:
        for i in range(100):
            await store.hit(Hit(algorithm, f"k{i}", limit))
    assert len(store) == 600
    clock.advance(10.0)  # all but sliding_window's (two windows) have reset
    assert store.sweep() == 500
    assert len(store) == 100
    clock.advance(10.0)
    assert store.sweep() == 100
    assert len(store) == 0


async def test_memory_never_drops_a_key_that_still_limits(clock: ManualClock) -> None:
    swept, twin = MemoryRateLimitStore(clock), MemoryRateLimitStore(clock)
    limit = Limit(2, 10.0)
    align(clock, 10.0)  # the fixed window ends 10 s from now
    for algorithm in Algorithm:
        for store in (swept, twin):
            await store.hit(Hit(algorithm, "k", limit))
            await store.hit(Hit(algorithm, "k", limit))
    clock.advance(9.999)  # nothing has fully reset yet
    assert swept.sweep() == 0 and len(swept) == 6
    for algorithm in Algorithm:
        hit = Hit(algorithm, "k", limit, cost=2)
        assert await swept.hit(hit) == await twin.hit(hit)


async def test_memory_drops_a_reset_key_when_touched(clock: ManualClock) -> None:
    store = MemoryRateLimitStore(clock)
    await store.hit(Hit(Algorithm.SLIDING_LOG, "k", Limit(1, 1.0)))
    await store.hit(Hit(Algorithm.CONCURRENCY, "k", Limit(1, 1.0)))
    assert len(store) == 2
    clock.advance(1.0)
    await store.hit(Hit(Algorithm.SLIDING_LOG, "k", Limit(1, 1.0), cost=0))
    await store.hit(Hit(Algorithm.CONCURRENCY, "k", Limit(1, 1.0), cost=0))
    assert len(store) == 0


async def test_memory_sweeps_by_itself(clock: ManualClock) -> None:
    store = MemoryRateLimitStore(clock)
    limit = Limit(1, 1.0)
    for i in range(5000):
        await store.hit(Hit(Algorithm.FIXED_WINDOW, f"k{i}", limit))
    clock.advance(1.0)
    # Decisions on one key only: the sweep, not the touch, removes the rest.
    for _ in range(10_000):
        await store.hit(Hit(Algorithm.FIXED_WINDOW, "hot", limit))
    assert len(store) <= 1


async def test_refund_gives_back_the_newest_sliding_log_admissions(
    store: RateLimitStore, clock: ManualClock
) -> None:
    hit = Hit(Algorithm.SLIDING_LOG, "failures", Limit(3, 60.0))
    for _ in range(3):
        assert (await store.hit(hit)).allowed
    assert not (await store.hit(hit)).allowed
    await store.refund("failures")
    admitted = await store.hit(hit)
    assert admitted.allowed and admitted.remaining == 0
    await store.refund("failures", 5)  # more than there is: the log empties
    assert (await store.hit(hit)).remaining == 2
    await store.refund("never-hit")  # nothing to give back: no error
