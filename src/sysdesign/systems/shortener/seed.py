"""Demo and benchmark links: ``sysdesign seed shortener --size N``.

``seed`` creates ``size`` links owned by the first demo account
(``demo1@example.com``, made with the accounts seed when it is missing), so a
person can sign in and see them. It adds ``size`` more on every run.

Codes come from the same counter blocks as ``POST /v1/links``
(``CodeAllocator``, then ``code_for_number``): a seeded link never takes a
code the service hands out later, in this process or another. Links are
written ``BATCH`` at a time, grouped by the shard ``for_key(code)`` names,
one multi-row insert per shard in one transaction, so a million links take
a thousand commits rather than a million. Seeded links carry no events
(neither ``created`` nor visits): they are data, not history, and a million
outbox rows would only keep the relay busy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from sysdesign.platform.accounts import store as accounts_store
from sysdesign.platform.accounts.seed import demo_email
from sysdesign.platform.accounts.seed import seed as seed_accounts
from sysdesign.systems.shortener import store
from sysdesign.systems.shortener.domain import Link, code_for_number
from sysdesign.systems.shortener.service import CodeAllocator

if TYPE_CHECKING:
    from sysdesign.platform.context import Platform

BATCH = 1000
TARGET_BASE = "https://example.com/articles/"


def seed_target(number: int) -> str:
    """The target of the link with counter value ``number``: one page per link."""
    return f"{TARGET_BASE}{number}"


async def seed_owner(platform: Platform) -> int:
    """The id of the account seeded links belong to, created when missing."""
    await seed_accounts(platform, 1, lambda _n: None)
    async with platform.db.primary.read() as conn:
        user = await accounts_store.user_by_email(conn, demo_email(1))
    if user is None:  # pragma: no cover - the accounts seed has just made it
        raise RuntimeError(f"the demo account {demo_email(1)} is missing")
    return user.id


async def seed(platform: Platform, size: int, progress: Callable[[int], None]) -> int:
    """Create ``size`` links of the demo owner; returns how many were created."""
    owner_id = await seed_owner(platform)
    allocator = CodeAllocator(platform.db.primary)
    router = platform.db
    created = 0
    while created < size:
        count = min(BATCH, size - created)
        now = int(platform.clock.time() * 1000)
        by_shard: dict[int, list[Link]] = {}
        for _ in range(count):
            number = await allocator.next_number()
            code = code_for_number(number)
            link = Link(
                id=platform.ids.next_id(),
                code=code,
                owner_id=owner_id,
                target=seed_target(number),
                custom=False,
                redirect_status=302,
                forward_query=False,
                enabled=True,
                title=None,
                expires_at_ms=None,
                max_visits=None,
                visits=0,
                created_at_ms=now,
                updated_at_ms=now,
            )
            by_shard.setdefault(router.index_for(code), []).append(link)
        for links in by_shard.values():
            # Any code of the group names its shard: the one all of them are on.
            async with platform.unit_of_work(links[0].code) as uow:
                await store.insert_links(uow.conn, links)
        created += count
        progress(count)
    return created


__all__ = ["BATCH", "seed", "seed_owner", "seed_target"]
