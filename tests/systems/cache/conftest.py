"""The root app with the cache system on each backend: memory, a cluster of
three cache nodes in this process, Redis when ``SYSDESIGN_TEST_REDIS_URL``
is set; and two signed-in callers.

Redis and the nodes keep time by their own clocks, so ``elapse`` moves the
manual clock and, on them, also waits that long for real: tests that need a
key to expire on every backend give it a TTL of ``SHORT`` seconds. Each Redis
test gets a key prefix of its own and deletes its keys afterwards; each
cluster test starts fresh nodes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from sysdesign.blocks.cache.node import CacheNode
from sysdesign.platform.app import create_app
from sysdesign.platform.clock import ManualClock
from tests.backends import delete_prefix, redis_url
from tests.conftest import Headers, make_settings, open_client, sign_in

SHORT = 0.4  # seconds

Elapse = Callable[[float], Awaitable[None]]


@pytest.fixture(params=["memory", "redis", "cluster"])
def cache_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def cache_url(cache_backend: str) -> AsyncIterator[str]:
    if cache_backend == "memory":
        yield "memory://"
        return
    if cache_backend == "cluster":
        # Three of our own cache nodes in this process, each key on two of them.
        nodes = [CacheNode(port=0) for _ in range(3)]
        for node in nodes:
            await node.start()
        try:
            addresses = ",".join(f"127.0.0.1:{node.port}" for node in nodes)
            yield f"sysdesign://{addresses}?replicas=2&socket_timeout=5"
        finally:
            for node in nodes:
                await node.close()
        return
    prefix = f"t{uuid.uuid4().hex[:12]}"
    yield redis_url(prefix)
    await delete_prefix(prefix)


@pytest.fixture
async def client(
    tmp_path: Path, cache_url: str, clock: ManualClock
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path}/app.db", cache_url=cache_url
    )
    async for c in open_client(create_app(settings, clock=clock)):
        yield c


@pytest.fixture
def elapse(cache_backend: str, clock: ManualClock) -> Elapse:
    async def elapse(seconds: float) -> None:
        clock.advance(seconds)
        if cache_backend != "memory":
            await asyncio.sleep(seconds)  # the server's own clock decides

    return elapse


@pytest.fixture
async def alice(client: httpx.AsyncClient) -> Headers:
    return await sign_in(client, "alice@example.com")


@pytest.fixture
async def bob(client: httpx.AsyncClient) -> Headers:
    return await sign_in(client, "bob@example.com")
