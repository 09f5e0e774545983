"""What the shortener's guarantees rest on, on every database engine: counter
blocks that never overlap, a visit limit that concurrent visits cannot pass,
and codes that differ only by case being two codes (MariaDB's default
collations would make them one)."""

from __future__ import annotations

import asyncio

import pytest

from sysdesign.platform.context import Platform
from sysdesign.systems.shortener import policy_for
from sysdesign.systems.shortener.service import AliasTaken, CodeAllocator, LinkService, NewLink


async def test_allocators_take_disjoint_blocks(engine_platform: Platform) -> None:
    allocators = [CodeAllocator(engine_platform.db.primary, block_size=5) for _ in range(4)]

    async def draw(allocator: CodeAllocator) -> list[int]:
        return [await allocator.next_number() for _ in range(100)]

    drawn = [n for part in await asyncio.gather(*map(draw, allocators)) for n in part]
    assert sorted(drawn) == list(range(400))


async def test_concurrent_visits_never_pass_the_limit(engine_platform: Platform) -> None:
    service = LinkService(engine_platform, policy_for(engine_platform))
    link = await service.create(1, NewLink("https://example.com/", max_visits=7))
    visit = {"code": link.code, "at_ms": 0, "referrer": None, "user_agent": None}
    counted = await asyncio.gather(
        *(service.count_limited_visit(link.id, link.code, visit) for _ in range(30))
    )
    assert counted.count(True) == 7
    assert (await service.get(1, link.code)).visits == 7


async def test_codes_that_differ_by_case_are_two_codes(engine_platform: Platform) -> None:
    service = LinkService(engine_platform, policy_for(engine_platform))
    upper = await service.create(1, NewLink("https://example.com/u", alias="Launch-x"))
    lower = await service.create(1, NewLink("https://example.com/l", alias="launch-x"))
    assert (await service.get(1, "Launch-x")).target == upper.target
    assert (await service.get(1, "launch-x")).target == lower.target
    with pytest.raises(AliasTaken):
        await service.create(2, NewLink("https://example.com/again", alias="launch-x"))
