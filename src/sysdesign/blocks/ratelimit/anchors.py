"""The two sides of ``sysdesign bench ratelimiter`` and the loop that drives them.

``ours`` is this block's store; ``theirs`` is the ``limits`` library's strategy
for the same algorithm on the same storage, set up as its documentation
shows. Both answer one key at a time with how many decisions they admitted,
so ``drive`` times them identically.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sysdesign.blocks.ratelimit import Algorithm, Hit, Limit, RateLimitStore, open_store

# Our algorithm -> the ``limits.aio.strategies`` class that decides the same way.
COUNTERPARTS = {
    Algorithm.FIXED_WINDOW: "FixedWindowRateLimiter",
    Algorithm.SLIDING_LOG: "MovingWindowRateLimiter",
    Algorithm.SLIDING_WINDOW: "SlidingWindowCounterRateLimiter",
}

# Decides one item (a key, or a batch of keys) and says how many it admitted.
Decide = Callable[[Any], Awaitable[int]]


class Run:
    """One timed run: its rate, the latency of its awaited calls, the share admitted."""

    def __init__(self, decisions: int, elapsed_ns: int, latencies: list[int], admitted: int):
        self.rate = decisions / (elapsed_ns / 1e9)
        ordered = sorted(latencies)
        self.p50_us = ordered[len(ordered) // 2] / 1000
        self.p99_us = ordered[max(0, int(len(ordered) * 0.99) - 1)] / 1000
        self.admitted = admitted / decisions


async def drive(
    decide: Decide, items: Sequence[Any], callers: int, yielding: bool, per_item: int = 1
) -> Run:
    """Decide every item once, from ``callers`` tasks taking the next one in turn."""
    latencies: list[int] = []
    admitted = 0
    queue = iter(items)
    clock = time.perf_counter_ns

    async def caller() -> None:
        nonlocal admitted
        for item in queue:
            start = clock()
            allowed = await decide(item)
            latencies.append(clock() - start)
            admitted += allowed
            if yielding:
                await asyncio.sleep(0)

    # The garbage of earlier runs is collected now, not during this one.
    gc.collect()
    start = clock()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return Run(len(items) * per_item, clock() - start, latencies, admitted)


async def nothing(key: str) -> int:
    return 1


# --- the two sides --------------------------------------------------------------------


def plain_url(url: str) -> str:
    return urlunsplit(urlsplit(url)._replace(query=""))


@contextlib.asynccontextmanager
async def ours(
    redis_url: str | None, prefix: str, algorithm: Algorithm, limit: Limit
) -> AsyncIterator[tuple[Decide, RateLimitStore]]:
    """Our store (memory, or Redis under ``prefix``) deciding ``algorithm``."""
    store = open_store(f"{plain_url(redis_url)}?prefix={prefix}" if redis_url else "memory://")
    await store.connect()

    async def decide(key: str) -> int:
        return (await store.hit(Hit(algorithm, key, limit))).allowed

    async def hold(key: str) -> int:
        # A request holds its concurrency slot and gives it back when it ends.
        decision = await store.hit(Hit(algorithm, key, limit))
        if decision.token is not None:
            await store.release(key, decision.token)
        return decision.allowed

    try:
        yield (hold if algorithm is Algorithm.CONCURRENCY else decide), store
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def theirs(
    redis_url: str | None, prefix: str, algorithm: Algorithm, limit: Limit
) -> AsyncIterator[Decide]:
    """The ``limits`` strategy for ``algorithm``, set up as its documentation
    shows: ``storage_from_string`` and ``await limiter.hit(item, key)``; on
    Redis through redis-py (``implementation="redispy"``), our store's client.
    ``limit`` is ours, in whole seconds: the same requests per the same period."""
    from limits import RateLimitItemPerSecond
    from limits.aio import strategies
    from limits.storage import storage_from_string

    pool: Any = None
    if redis_url is None:
        storage: Any = storage_from_string("async+memory://")
    else:
        from redis.asyncio import ConnectionPool

        # Passed in (a documented option) so that its connections close after the run.
        pool = ConnectionPool.from_url(plain_url(redis_url))
        storage = storage_from_string(
            f"async+{plain_url(redis_url)}",
            implementation="redispy",
            connection_pool=pool,
            key_prefix=prefix,
        )
    limiter = getattr(strategies, COUNTERPARTS[algorithm])(storage)
    item = RateLimitItemPerSecond(limit.requests, round(limit.period))

    async def decide(key: str) -> int:
        return await limiter.hit(item, key)

    try:
        yield decide
    finally:
        # The memory storage's expiry task may still be running; it is not timed.
        timer = getattr(storage, "timer", None)
        if timer is not None and not timer.done():
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        if pool is not None:
            await pool.aclose()


async def delete_keys(redis_url: str, prefix: str) -> None:
    """Delete every key the benchmark made under ``prefix``."""
    from redis.asyncio import Redis

    client = Redis.from_url(plain_url(redis_url))
    pattern = re.sub(r"([\\*?\[\]])", r"\\\1", prefix) + "-*"
    try:
        keys = [k async for k in client.scan_iter(match=pattern, count=1000)]
        for i in range(0, len(keys), 1000):
            await client.unlink(*keys[i : i + 1000])
    finally:
        await client.aclose()
