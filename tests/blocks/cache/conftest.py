"""A ``Cache`` on each backend (memory and a cluster of three cache nodes
with two replicas always, Redis when configured), with the manual clock:
the memory cache's and the nodes' time is the clock's.

Redis measures TTLs by its own clock, so ``elapse`` moves the manual clock
and, on Redis, also waits that long in real time: tests that need expiry
on both backends use TTLs of ``SHORT`` seconds, long enough for a slow
server to answer several commands before one expires. Each Redis test
gets its own key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial

import pytest

from sysdesign.blocks.cache import Cache, MemoryCache, open_cache
from sysdesign.blocks.cache.cluster import ClusterCache
from sysdesign.blocks.cache.node import CacheNode
from sysdesign.platform.clock import ManualClock
from tests import waiting
from tests.backends import delete_prefix, redis_url

BACKENDS = ("memory", "cluster", "redis")
SHORT = 0.4  # seconds

Elapse = Callable[[float], Awaitable[None]]


eventually = partial(waiting.eventually, timeout=5.0)


@pytest.fixture(params=BACKENDS)
def cache_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def cache(cache_backend: str, clock: ManualClock) -> AsyncIterator[Cache]:
    if cache_backend == "memory":
        memory = MemoryCache(clock=clock)
        await memory.connect()
        try:
            yield memory
        finally:
            await memory.close()
        return
    if cache_backend == "cluster":
        async with contextlib.AsyncExitStack() as stack:
            nodes = [
                await stack.enter_async_context(CacheNode("127.0.0.1", 0, 0, clock=clock))
                for _ in range(3)
            ]
            cluster = ClusterCache([f"127.0.0.1:{n.port}" for n in nodes], replicas=2, timeout=5)
            await cluster.connect()
            stack.push_async_callback(cluster.close)
            yield cluster
        return
    prefix = f"t{uuid.uuid4().hex[:12]}"
    redis = open_cache(redis_url(prefix), clock=clock)
    await redis.connect()
    try:
        yield redis
    finally:
        await redis.close()
        await delete_prefix(prefix)


@pytest.fixture
def elapse(cache_backend: str, clock: ManualClock) -> Elapse:
    async def elapse(seconds: float) -> None:
        clock.advance(seconds)
        if cache_backend == "redis":
            await asyncio.sleep(seconds)

    return elapse
