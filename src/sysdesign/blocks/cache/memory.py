"""``MemoryCache``: the ``Cache`` contract over a ``MemoryStore`` in this process.

Every method calls the store without awaiting in between, so each is atomic
on the event loop: ``incr`` never loses an update and ``compare_and_set``
lets exactly one of several racing writers through. Time comes from the
injected clock, so tests move expiry forward without sleeping.

Between ``connect()`` and ``close()`` a background task reclaims expired keys
that nobody reads (active expiry), ``expire_interval`` seconds apart and at
most ``expire_budget`` keys at a time, going again at once while it finds a
full budget of expired keys.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

from sysdesign.blocks.cache.base import Cache, CacheStats
from sysdesign.blocks.cache.store import MemoryStore
from sysdesign.platform.background import BackgroundTask
from sysdesign.platform.clock import Clock, SystemClock

DEFAULT_MAX_BYTES = 64 * 1024 * 1024


def _check_ttl(ttl: float | None) -> None:
    if ttl is not None and not ttl > 0:
        raise ValueError(f"ttl must be > 0 seconds or None, not {ttl}")


class MemoryCache(Cache):
    """A cache in this process's memory, evicting under ``max_bytes`` (0:
    unbounded) by ``policy`` (``allkeys-lru`` or ``allkeys-lfu``).

    ``ValueError`` for a ``ttl`` that is not positive, or for both
    ``only_if_absent`` and ``only_if_present``; ``EntryTooLarge`` for an
    entry bigger than the whole budget.
    """

    name = "memory"

    def __init__(
        self,
        max_bytes: int = DEFAULT_MAX_BYTES,
        policy: str = "allkeys-lru",
        *,
        clock: Clock | None = None,
        expire_interval: float = 0.1,
        expire_budget: int = 200,
    ) -> None:
        self.store = MemoryStore(max_bytes, policy)
        self._clock: Clock = clock or SystemClock()
        self._interval = expire_interval
        self._budget = expire_budget
        self._sweeper = BackgroundTask(self._sweep, "cache-active-expiry")

    async def connect(self) -> None:
        self._sweeper.start()

    async def close(self) -> None:
        await self._sweeper.stop()

    async def _sweep(self) -> None:
        while True:
            removed = self.store.expire_some(self._clock.time(), self._budget)
            # Paced by real time, not the clock: a manual clock's sleep would
            # move the time the cache's own callers see.
            await asyncio.sleep(0 if removed >= self._budget else self._interval)

    async def get(self, key: str) -> bytes | None:
        return self.store.get(key, self._clock.time())

    async def set(
        self,
        key: str,
        value: bytes,
        ttl: float | None = None,
        *,
        only_if_absent: bool = False,
        only_if_present: bool = False,
    ) -> bool:
        return self.store.set(
            key, value, self._clock.time(), ttl, nx=only_if_absent, xx=only_if_present
        )

    async def delete(self, *keys: str) -> int:
        return self.store.delete(*keys, now=self._clock.time())

    async def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        now = self._clock.time()
        found: dict[str, bytes] = {}
        for key in keys:
            value = self.store.get(key, now)
            if value is not None:
                found[key] = value
        return found

    async def set_many(self, items: Mapping[str, bytes], ttl: float | None = None) -> None:
        _check_ttl(ttl)
        now = self._clock.time()
        for key, value in items.items():
            self.store.set(key, value, now, ttl)

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        _check_ttl(ttl)
        now = self._clock.time()
        created = ttl is not None and not self.store.exists(key, now=now)
        result = self.store.incr_by(key, amount, now)
        if created and ttl is not None:
            self.store.expire(key, ttl, now)
        return result

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None = None
    ) -> bool:
        _check_ttl(ttl)
        now = self._clock.time()
        if self.store.get(key, now) != expected:
            return False
        return self.store.set(key, value, now, ttl)

    async def ttl(self, key: str) -> float | None:
        return self.store.ttl(key, self._clock.time())

    async def stats(self) -> CacheStats:
        return self.store.stats
