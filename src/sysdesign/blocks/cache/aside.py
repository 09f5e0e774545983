"""Cache-aside: read the cache; on a miss, load from the source and fill the cache.

``CacheAside.get_or_load(key, loader, ttl)`` adds to the plain pattern:

- **Single flight.** Concurrent misses for one key in this process share one
  load: the first starts it, the others await the same result, and a loader
  exception reaches all of them and caches nothing. (Processes do not
  coordinate: each may load a key once.) A load first reads the cache
  again, so a miss that raced a finishing load does not load twice.
- **Negative caching.** A loader returning ``None`` ("no such thing") is
  remembered for ``negative_ttl`` seconds (0: not at all), apart from a
  cached empty value.
- **TTL jitter.** Every TTL is scaled by a random factor in
  ``[1 - jitter, 1 + jitter]``, so keys filled together do not expire together.
- **Stale-while-revalidate.** An entry is fresh for its TTL, then stale for
  ``stale_ttl`` more seconds: a stale read returns the stale value at once
  and starts one background refresh for the key (none if one is running).
  Past that, a read is a miss.
- **Near cache.** With ``near_size > 0``, the most recently read keys (under
  a skewed load, the hot ones) are kept in this process for at most
  ``near_ttl`` seconds, never past their freshness: a value read from it is
  at most ``near_ttl`` seconds older than the shared cache's. ``invalidate``
  drops the key here and in the shared cache; other processes' near
  caches keep it for up to their ``near_ttl``.

The cache may be unavailable: then reads count as misses and writes are
skipped, so the source answers, one load per key at a time in this process.

**Envelope.** Each cached value is stored as an 18-byte header and the
value: ``struct ">BBdd"`` of the format byte ``0xA1``, flags (bit 0: a
remembered miss, with no value after the header), the wall-clock time
(``clock.time()``) the value is fresh until, and the time it may be served
stale until. The entry's TTL in the cache ends at the latter. Times are
absolute, so every process judges freshness alike as long as their clocks
agree (NTP). A value in another format counts as a miss and is replaced.
"""

from __future__ import annotations

import asyncio
import random
import struct
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

from sysdesign.blocks.cache.base import Cache, CacheError
from sysdesign.platform.clock import Clock, SystemClock

Loader = Callable[[], Awaitable[bytes | None]]

_HEADER = struct.Struct(">BBdd")
_FORMAT = 0xA1
_MISS = 0x01


@dataclass(frozen=True, slots=True)
class Envelope:
    """One cached entry: ``value`` (``None``: a remembered miss) and its
    wall-clock freshness bounds."""

    value: bytes | None
    fresh_until: float
    stale_until: float

    def pack(self) -> bytes:
        flags = _MISS if self.value is None else 0
        header = _HEADER.pack(_FORMAT, flags, self.fresh_until, self.stale_until)
        return header if self.value is None else header + self.value

    @classmethod
    def unpack(cls, blob: bytes) -> Envelope | None:
        """The envelope in ``blob``, or ``None`` when it is not one."""
        if len(blob) < _HEADER.size or blob[0] != _FORMAT:
            return None
        _, flags, fresh, stale = _HEADER.unpack_from(blob)
        value = None if flags & _MISS else blob[_HEADER.size :]
        return cls(value, fresh, stale)


@dataclass
class AsideStats:
    hits: int = 0  # fresh from the shared cache
    near_hits: int = 0
    stale_hits: int = 0
    misses: int = 0  # read nothing servable: waited for a load
    loads: int = 0  # loader calls
    load_errors: int = 0
    cache_errors: int = 0  # failed cache reads and writes, passed over


class _Flight:
    """One load of one key; ``invalidated`` keeps its result out of the caches."""

    __slots__ = ("invalidated", "task")

    def __init__(self) -> None:
        self.invalidated = False
        self.task: asyncio.Task[bytes | None] | None = None


class CacheAside:
    """Cache-aside over ``cache``; see the module docstring. Defaults: misses
    remembered 5 s, ±10 % jitter, no stale serving, no near cache."""

    def __init__(
        self,
        cache: Cache,
        clock: Clock | None = None,
        *,
        negative_ttl: float = 5.0,
        stale_ttl: float = 0.0,
        jitter: float = 0.1,
        near_size: int = 0,
        near_ttl: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be a fraction in [0, 1), not {jitter}")
        if min(negative_ttl, stale_ttl, near_size, near_ttl) < 0:
            raise ValueError("negative_ttl, stale_ttl, near_size and near_ttl must be >= 0")
        self._cache = cache
        self._clock: Clock = clock or SystemClock()
        self._negative_ttl = negative_ttl
        self._stale_ttl = stale_ttl
        self._jitter = jitter
        self._near_size = near_size
        self._near_ttl = near_ttl
        self._rng = rng or random.Random()
        self._near: OrderedDict[str, tuple[float, Envelope]] = OrderedDict()
        self._flights: dict[str, _Flight] = {}
        # Bumped by every invalidate: a read that overlapped one is not kept near.
        self._invalidations = 0
        self.stats = AsideStats()

    async def get_or_load(
        self,
        key: str,
        loader: Loader,
        ttl: float,
        *,
        negative_ttl: float | None = None,
        stale_ttl: float | None = None,
    ) -> bytes | None:
        """The value at ``key``, from the near cache, the cache, or ``loader``
        (which returns ``None`` when the source has nothing). ``ttl`` (> 0),
        ``negative_ttl`` and ``stale_ttl`` are seconds; the last two default
        to the helper's. Raises what the loader raised, when a load it
        waited for failed."""
        if not ttl > 0:
            raise ValueError(f"ttl must be > 0 seconds, not {ttl}")
        near = self._near_get(key)
        if near is not None:
            self.stats.near_hits += 1
            return near.value
        invalidations = self._invalidations
        envelope = await self._read(key)
        if envelope is not None:
            now = self._clock.time()
            if now < envelope.fresh_until:
                self.stats.hits += 1
                if invalidations == self._invalidations:
                    self._near_put(key, envelope)
                return envelope.value
            if now < envelope.stale_until:
                self.stats.stale_hits += 1
                if key not in self._flights:
                    self._start(key, loader, ttl, negative_ttl, stale_ttl)
                return envelope.value
        self.stats.misses += 1
        flight = self._flights.get(key) or self._start(key, loader, ttl, negative_ttl, stale_ttl)
        assert flight.task is not None
        # Shielded: a waiter that gives up does not cancel the load the others await.
        return await asyncio.shield(flight.task)

    async def invalidate(self, *keys: str) -> None:
        """Forget ``keys`` here and in the cache (one delete); a load of one
        running now still answers its waiters but caches nothing. Raises the
        cache's error when the delete fails (the cache may then keep the old
        value)."""
        if not keys:
            return
        self._invalidations += 1
        for key in keys:
            self._near.pop(key, None)
            flight = self._flights.pop(key, None)
            if flight is not None:
                flight.invalidated = True
        await self._cache.delete(*keys)

    async def drain(self) -> None:
        """Wait for the loads and refreshes running now to end."""
        tasks = [f.task for f in self._flights.values() if f.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        """Cancel the loads and refreshes running now."""
        tasks = [f.task for f in self._flights.values() if f.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- loading ----------------------------------------------------------------

    def _start(
        self,
        key: str,
        loader: Loader,
        ttl: float,
        negative_ttl: float | None,
        stale_ttl: float | None,
    ) -> _Flight:
        flight = _Flight()
        fill = self._fill(flight, key, loader, ttl, negative_ttl, stale_ttl)
        flight.task = asyncio.create_task(fill, name=f"cache-aside load {key[:64]}")
        flight.task.add_done_callback(partial(self._landed, key, flight))
        self._flights[key] = flight
        return flight

    def _landed(self, key: str, flight: _Flight, task: asyncio.Task[bytes | None]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not task.cancelled() and task.exception() is not None:
            # Counted here, once per load; retrieving it also marks it seen
            # when a background refresh fails with nobody waiting.
            self.stats.load_errors += 1

    async def _fill(
        self,
        flight: _Flight,
        key: str,
        loader: Loader,
        ttl: float,
        negative_ttl: float | None,
        stale_ttl: float | None,
    ) -> bytes | None:
        envelope = await self._read(key)
        if envelope is not None and self._clock.time() < envelope.fresh_until:
            if not flight.invalidated:
                self._near_put(key, envelope)
            return envelope.value
        self.stats.loads += 1
        value = await loader()
        envelope = self._envelope(
            value,
            ttl,
            self._negative_ttl if negative_ttl is None else negative_ttl,
            self._stale_ttl if stale_ttl is None else stale_ttl,
        )
        if envelope is not None and not flight.invalidated:
            lifetime = envelope.stale_until - self._clock.time()
            try:
                await self._cache.set(key, envelope.pack(), ttl=lifetime)
            except CacheError:
                self.stats.cache_errors += 1
            if not flight.invalidated:
                self._near_put(key, envelope)
        return value

    def _envelope(
        self, value: bytes | None, ttl: float, negative_ttl: float, stale_ttl: float
    ) -> Envelope | None:
        """The envelope to cache ``value`` in; ``None`` when a miss is not remembered."""
        now = self._clock.time()
        if value is None:
            if not negative_ttl > 0:
                return None
            fresh = now + self.jittered(negative_ttl)
            return Envelope(None, fresh, fresh)
        fresh = now + self.jittered(ttl)
        return Envelope(value, fresh, fresh + stale_ttl)

    def jittered(self, ttl: float) -> float:
        """``ttl`` scaled by a random factor in ``[1 - jitter, 1 + jitter]``."""
        return ttl * (1 + self._rng.uniform(-self._jitter, self._jitter))

    async def _read(self, key: str) -> Envelope | None:
        try:
            blob = await self._cache.get(key)
        except CacheError:
            self.stats.cache_errors += 1
            return None
        return None if blob is None else Envelope.unpack(blob)

    # --- the near cache -----------------------------------------------------------

    def _near_get(self, key: str) -> Envelope | None:
        if not self._near_size:
            return None
        item = self._near.get(key)
        if item is None:
            return None
        deadline, envelope = item
        if self._clock.monotonic() < deadline and self._clock.time() < envelope.fresh_until:
            self._near.move_to_end(key)
            return envelope
        del self._near[key]
        return None

    def _near_put(self, key: str, envelope: Envelope) -> None:
        if not self._near_size:
            return
        self._near[key] = (self._clock.monotonic() + self._near_ttl, envelope)
        self._near.move_to_end(key)
        if len(self._near) > self._near_size:
            self._near.popitem(last=False)
