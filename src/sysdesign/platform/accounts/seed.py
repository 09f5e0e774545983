"""Demo accounts: ``demo1@example.com`` ... ``demoN@example.com``, all with ``DEMO_PASSWORD``.

Seeding is idempotent: accounts that exist are left as they are.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import select

from sysdesign.platform.accounts import store

if TYPE_CHECKING:
    from sysdesign.platform.context import Platform

DEMO_PASSWORD = "demo-password"
BATCH = 16


def demo_email(i: int) -> str:
    return f"demo{i}@example.com"


async def seed(platform: Platform, size: int, progress: Callable[[int], None]) -> int:
    """Create up to ``size`` demo accounts; returns how many were new."""
    db = platform.db.primary
    emails = [demo_email(i) for i in range(1, size + 1)]
    async with db.read() as conn:
        existing = set(
            (
                await conn.execute(
                    select(store.users_table.c.email).where(store.users_table.c.email.in_(emails))
                )
            ).scalars()
        )
    progress(len(existing))
    todo = [e for e in emails if e not in existing]
    created = 0
    for start in range(0, len(todo), BATCH):
        batch = todo[start : start + BATCH]
        # argon2 releases the GIL: hash a batch on threads, insert it in one transaction.
        hashes = await asyncio.gather(*(platform.passwords.hash(DEMO_PASSWORD) for _ in batch))
        now = int(platform.clock.time() * 1000)
        async with db.begin() as conn:
            for email, password_hash in zip(batch, hashes, strict=True):
                await store.insert_user(
                    conn,
                    store.UserRow(
                        id=platform.ids.next_id(),
                        email=email,
                        password_hash=password_hash,
                        display_name=email.split("@")[0].capitalize(),
                        avatar_url=None,
                        created_at=now,
                        updated_at=now,
                    ),
                )
        created += len(batch)
        progress(len(batch))
    return created
