"""``LocksClient`` against the app: hold with keepalive, errors mapped to the block's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from sysdesign.blocks.lock import LeaseLost, LockConflict, LockTimeout
from sysdesign.platform.app import create_app
from sysdesign.platform.clock import ManualClock
from sysdesign.systems.locks.client import LocksClient
from tests.conftest import make_settings, open_client, sign_in


@pytest.fixture
async def locks(tmp_path: Path, clock: ManualClock) -> AsyncIterator[LocksClient]:
    settings = make_settings(tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path}/app.db")
    app = create_app(settings, clock=clock)
    async for client in open_client(app):
        headers = await sign_in(client, "svc@example.com")
        token = headers["Authorization"].removeprefix("Bearer ")
        transport = httpx.ASGITransport(app=app)
        async with LocksClient("http://testserver", token, transport=transport) as locks:
            yield locks


async def test_hold_renews_releases_and_fences(locks: LocksClient) -> None:
    async with locks.hold("nightly", ttl=0.3, label="cron") as held:
        first = held.lease
        await asyncio.sleep(0.6)  # the keepalive renews every ttl / 3, in real time
        assert not held.lost.is_set() and held.lease.token == first.token
        assert await locks.try_acquire("nightly", ttl=5) is None
    after = await locks.acquire("nightly", ttl=5, wait=1)
    assert after.token > first.token
    assert (await locks.inspect("nightly"))["holders"][0]["token"] == after.token
    assert await locks.release(after) is True
    assert await locks.release(after) is False


async def test_errors_are_the_block_s(locks: LocksClient, clock: ManualClock) -> None:
    lease = await locks.acquire("x", ttl=5)
    with pytest.raises(LockTimeout):
        await locks.acquire("x", ttl=5, wait=0.05)
    with pytest.raises(LockConflict):
        await locks.acquire("x", ttl=5, mode="permit", permits=2, wait=0)
    clock.advance(6)
    with pytest.raises(LeaseLost):
        await locks.renew(lease)
