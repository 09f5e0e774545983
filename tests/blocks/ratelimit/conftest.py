"""A ``RateLimitStore`` on each backend (memory always, Redis when configured),
driven by the manual clock so that no test sleeps.

Each Redis test gets its own key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator

import pytest

from sysdesign.blocks.ratelimit import MemoryRateLimitStore, RateLimitStore, open_store
from sysdesign.platform.clock import ManualClock
from tests.backends import delete_prefix, redis_url

STORES = ("memory", "redis")


def align(clock: ManualClock, period: float, offset: float = 0.0) -> None:
    """Move the clock forward to ``offset`` seconds into the next window of
    ``period`` seconds (windows are aligned to the epoch)."""
    start = (math.floor(clock.time() / period) + 1) * period
    clock.set(start + offset)


@pytest.fixture(params=STORES)
def store_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def store(store_backend: str, clock: ManualClock) -> AsyncIterator[RateLimitStore]:
    if store_backend == "memory":
        yield MemoryRateLimitStore(clock)
        return
    prefix = f"t{uuid.uuid4().hex[:12]}"
    s = open_store(redis_url(prefix), clock=clock)
    await s.connect()
    try:
        yield s
    finally:
        await s.close()
        await delete_prefix(prefix)
