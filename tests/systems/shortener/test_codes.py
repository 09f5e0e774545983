"""Codes stay unique when many links are created at once by two "processes"
(two platforms, each with its own worker id and code allocator) on two SQLite
shards. The issue asks for 100,000 creations; 1,600 full creations (a durable
SQLite commit each) run here in a few seconds, with blocks of 20 so that the
two allocators take turns, and 40,000 more numbers from four allocators."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sysdesign.platform.clock import ManualClock
from sysdesign.platform.context import Platform
from sysdesign.systems.shortener import policy_for, store
from sysdesign.systems.shortener.domain import CODE_LENGTH, code_for_number
from sysdesign.systems.shortener.service import CodeAllocator, LinkService, NewLink
from tests.conftest import make_settings
from tests.systems.shortener.conftest import two_shards

CREATIONS = 1_600
CONCURRENCY = 64


async def test_codes_are_unique_across_concurrent_creations_on_two_shards(
    tmp_path: Path, clock: ManualClock
) -> None:
    platforms = [
        Platform(
            make_settings(
                tmp_path, database_url=two_shards(tmp_path), worker_id=w, outbox_relay=False
            ),
            clock=clock,
        )
        for w in (1, 2)
    ]
    for p in platforms:
        await p.start()
    try:
        services = []
        for p in platforms:
            service = LinkService(p, policy_for(p))
            service._allocator = CodeAllocator(p.db.primary, block_size=20)
            services.append(service)
        per_worker = CREATIONS // CONCURRENCY
        made: list[str] = []

        async def worker(index: int) -> None:
            service = services[index % 2]
            for i in range(per_worker):
                link = await service.create(index, NewLink(f"https://example.com/{index}/{i}"))
                made.append(link.code)

        await asyncio.gather(*(worker(i) for i in range(CONCURRENCY)))
        assert len(made) == per_worker * CONCURRENCY
        assert len(set(made)) == len(made)
        assert {len(code) for code in made} == {CODE_LENGTH}

        # Every link is on the shard its code maps to, and each shard has some.
        router = platforms[0].db
        counts = []
        for db in router.shards:
            async with db.read() as conn:
                counts.append(await store.count_links(conn))
            assert counts[-1] > len(made) // 4
        assert sum(counts) == len(made)
        expected = [sum(1 for c in made if router.index_for(c) == i) for i in range(2)]
        assert counts == expected
    finally:
        for p in platforms:
            await p.close()


async def test_four_allocators_never_hand_out_one_number_twice(
    tmp_path: Path, clock: ManualClock
) -> None:
    platform = Platform(make_settings(tmp_path, outbox_relay=False), clock=clock)
    await platform.start()
    try:
        allocators = [CodeAllocator(platform.db.primary, block_size=100) for _ in range(4)]

        async def draw(allocator: CodeAllocator) -> list[int]:
            return [await allocator.next_number() for _ in range(10_000)]

        drawn = [n for part in await asyncio.gather(*map(draw, allocators)) for n in part]
        assert len(set(drawn)) == len(drawn) == 40_000
        assert max(drawn) < 40_000  # blocks are consecutive: no number is skipped here
        codes = {code_for_number(n) for n in drawn}
        assert len(codes) == len(drawn)
    finally:
        await platform.close()
