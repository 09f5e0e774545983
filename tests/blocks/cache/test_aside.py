"""``CacheAside`` on every backend: single flight, negative caching, jitter,
stale-while-revalidate, the near cache, and failures of the loader and the cache.

Freshness is judged by the envelope's times on the manual clock, so these
tests move the clock instead of waiting, on Redis too.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Mapping

import pytest

from sysdesign.blocks.cache import Cache, CacheAside, CacheUnavailable, Envelope
from sysdesign.platform.clock import ManualClock
from tests.blocks.cache.conftest import eventually


class Source:
    """A loader that counts its calls and answers from a script."""

    def __init__(self, *answers: bytes | Exception | None) -> None:
        self.answers = list(answers)
        self.loads = 0
        self.called = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self) -> bytes | None:
        self.loads += 1
        self.called.set()
        answer = self.answers[min(self.loads, len(self.answers)) - 1]
        await asyncio.sleep(0)  # let the other callers arrive
        await self.gate.wait()
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_100_concurrent_misses_load_once(cache: Cache, clock: ManualClock) -> None:
    aside = CacheAside(cache, clock)
    source = Source(b"v")
    source.gate.clear()  # the load lasts until all 100 have missed
    callers = [asyncio.create_task(aside.get_or_load("k", source, 60)) for _ in range(100)]
    await eventually(lambda: aside.stats.misses == 100)
    source.gate.set()
    assert await asyncio.gather(*callers) == [b"v"] * 100
    assert source.loads == 1
    assert await aside.get_or_load("k", source, 60) == b"v"
    assert source.loads == 1
    assert aside.stats.loads == 1 and aside.stats.misses == 100


async def test_a_loader_error_reaches_every_waiter_and_caches_nothing(
    cache: Cache, clock: ManualClock
) -> None:
    aside = CacheAside(cache, clock)
    source = Source(RuntimeError("source down"), b"v")
    source.gate.clear()
    callers = [asyncio.create_task(aside.get_or_load("k", source, 60)) for _ in range(20)]
    await eventually(lambda: aside.stats.misses == 20)
    source.gate.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) and str(r) == "source down" for r in results)
    assert source.loads == 1 and aside.stats.load_errors == 1
    assert await cache.get("k") is None
    assert await aside.get_or_load("k", source, 60) == b"v"
    assert source.loads == 2


async def test_a_miss_is_remembered_for_negative_ttl(cache: Cache, clock: ManualClock) -> None:
    aside = CacheAside(cache, clock, negative_ttl=5, jitter=0)
    source = Source(None, b"now it exists")
    assert await aside.get_or_load("k", source, 60) is None
    assert await aside.get_or_load("k", source, 60) is None
    assert source.loads == 1
    raw = await cache.get("k")
    assert raw is not None and Envelope.unpack(raw) == Envelope(
        None, clock.time() + 5, clock.time() + 5
    )

    empty = Source(b"")
    assert await aside.get_or_load("e", empty, 60) == b""  # a value, unlike the miss
    assert await aside.get_or_load("e", empty, 60) == b""
    raw = await cache.get("e")
    assert raw is not None and Envelope.unpack(raw) == Envelope(
        b"", clock.time() + 60, clock.time() + 60
    )

    clock.advance(5)
    assert await aside.get_or_load("k", source, 60) == b"now it exists"
    assert source.loads == 2

    forgetful = CacheAside(cache, clock, negative_ttl=0)
    nothing = Source(None)
    assert await forgetful.get_or_load("n", nothing, 60) is None
    assert await forgetful.get_or_load("n", nothing, 60) is None
    assert nothing.loads == 2 and await cache.get("n") is None


async def test_ttls_are_jittered_within_bounds(cache: Cache, clock: ManualClock) -> None:
    aside = CacheAside(cache, clock, jitter=0.2, rng=random.Random(7))
    keys = [f"k{i}" for i in range(200)]
    for key in keys:
        await aside.get_or_load(key, Source(b"v"), 100)
    found = await cache.get_many(keys)
    envelopes = [Envelope.unpack(found[key]) for key in keys]
    ttls = [e.fresh_until - clock.time() for e in envelopes if e is not None]
    assert len(ttls) == 200
    assert all(80 <= t <= 120 for t in ttls)
    assert max(ttls) - min(ttls) > 30  # spread out, not expiring together
    samples = [aside.jittered(10) for _ in range(10_000)]
    assert 8 <= min(samples) < 8.1 and 11.9 < max(samples) <= 12


async def test_a_stale_value_is_served_while_one_refresh_runs(
    cache: Cache, clock: ManualClock
) -> None:
    aside = CacheAside(cache, clock, stale_ttl=60, jitter=0)
    assert await aside.get_or_load("k", Source(b"v1"), 10) == b"v1"
    clock.advance(15)
    source = Source(b"v2")
    source.gate.clear()  # the refresh hangs until the test lets it go
    for _ in range(5):
        assert await asyncio.wait_for(aside.get_or_load("k", source, 10), 1) == b"v1"
    assert aside.stats.stale_hits == 5
    await source.called.wait()
    source.gate.set()
    await aside.drain()
    assert source.loads == 1
    assert await aside.get_or_load("k", source, 10) == b"v2"
    assert aside.stats.hits == 1

    clock.advance(10 + 60)  # past fresh and stale: a plain miss
    late = Source(b"v3")
    assert await aside.get_or_load("k", late, 10) == b"v3"
    assert late.loads == 1


async def test_a_failed_refresh_keeps_serving_the_stale_value(
    cache: Cache, clock: ManualClock
) -> None:
    aside = CacheAside(cache, clock, stale_ttl=60, jitter=0)
    await aside.get_or_load("k", Source(b"v1"), 10)
    clock.advance(15)
    failing = Source(RuntimeError("source down"))
    assert await aside.get_or_load("k", failing, 10) == b"v1"
    await aside.drain()
    assert failing.loads == 1 and aside.stats.load_errors == 1
    assert await aside.get_or_load("k", failing, 10) == b"v1"
    await aside.drain()


async def test_the_near_cache_is_stale_for_at_most_near_ttl(
    cache: Cache, clock: ManualClock
) -> None:
    reader = CacheAside(cache, clock, near_size=10, near_ttl=2)
    writer = CacheAside(cache, clock)
    assert await reader.get_or_load("k", Source(b"v1"), 60) == b"v1"
    await writer.invalidate("k")
    assert await writer.get_or_load("k", Source(b"v2"), 60) == b"v2"
    unused = Source(b"never")
    clock.advance(1.9)
    assert await reader.get_or_load("k", unused, 60) == b"v1"  # from the near cache
    assert reader.stats.near_hits == 1
    clock.advance(0.2)
    assert await reader.get_or_load("k", unused, 60) == b"v2"  # past near_ttl: the cache's
    assert unused.loads == 0

    await reader.invalidate("k")  # its own invalidation takes effect at once
    assert await reader.get_or_load("k", Source(b"v3"), 60) == b"v3"


async def test_the_near_cache_is_bounded_and_never_serves_past_freshness(
    cache: Cache, clock: ManualClock
) -> None:
    aside = CacheAside(cache, clock, near_size=3, near_ttl=100, jitter=0)
    for i in range(5):
        await aside.get_or_load(f"k{i}", Source(b"v"), 1)
    assert len(aside._near) == 3
    await aside.get_or_load("k4", Source(b"v"), 1)
    assert aside.stats.near_hits == 1
    clock.advance(1)
    source = Source(b"fresh")
    assert await aside.get_or_load("k4", source, 1) == b"fresh"
    assert source.loads == 1


async def test_invalidate_during_a_load_keeps_its_result_out_of_the_cache(
    cache: Cache, clock: ManualClock
) -> None:
    aside = CacheAside(cache, clock, near_size=10)
    source = Source(b"old")
    source.gate.clear()
    waiter = asyncio.create_task(aside.get_or_load("k", source, 60))
    await source.called.wait()
    await aside.invalidate("k")  # the source changed while it was being read
    source.gate.set()
    assert await waiter == b"old"
    assert await cache.get("k") is None
    assert await aside.get_or_load("k", Source(b"new"), 60) == b"new"


async def test_a_foreign_value_counts_as_a_miss(cache: Cache, clock: ManualClock) -> None:
    aside = CacheAside(cache, clock)
    await cache.set("k", b"written by someone else")
    assert await aside.get_or_load("k", Source(b"v"), 60) == b"v"
    raw = await cache.get("k")
    assert raw is not None and Envelope.unpack(raw) is not None


class DownCache(Cache):
    """A cache whose server is unreachable."""

    async def _down(self, *args: object, **kwargs: object) -> None:
        raise CacheUnavailable("down")

    async def get(self, key: str) -> bytes | None:
        return await self._down()

    async def set(self, key: str, value: bytes, ttl: float | None = None, **kw: bool) -> bool:
        await self._down()
        return False

    async def delete(self, *keys: str) -> int:
        await self._down()
        return 0

    async def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        await self._down()
        return {}

    async def set_many(self, items: Mapping[str, bytes], ttl: float | None = None) -> None:
        await self._down()

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        await self._down()
        return 0

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None = None
    ) -> bool:
        await self._down()
        return False

    async def ttl(self, key: str) -> float | None:
        return await self._down()


async def test_an_unavailable_cache_falls_back_to_the_source(clock: ManualClock) -> None:
    aside = CacheAside(DownCache(), clock)
    source = Source(b"v")
    results = await asyncio.gather(*(aside.get_or_load("k", source, 60) for _ in range(10)))
    assert results == [b"v"] * 10 and source.loads == 1
    assert aside.stats.cache_errors >= 2
    with pytest.raises(CacheUnavailable):
        await aside.invalidate("k")


async def test_close_cancels_refreshes(cache: Cache, clock: ManualClock) -> None:
    aside = CacheAside(cache, clock, stale_ttl=60)
    await aside.get_or_load("k", Source(b"v1"), 10)
    clock.advance(15)
    hanging = Source(b"v2")
    hanging.gate.clear()
    assert await aside.get_or_load("k", hanging, 10) == b"v1"
    await aside.close()
    assert not aside._flights


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="jitter"):
        CacheAside(DownCache(), jitter=1)
    with pytest.raises(ValueError):
        CacheAside(DownCache(), near_size=-1)


async def test_ttl_must_be_positive(clock: ManualClock) -> None:
    with pytest.raises(ValueError, match="ttl"):
        await CacheAside(DownCache(), clock).get_or_load("k", Source(b"v"), 0)
