"""Realtime backends for the contract: memory always, Redis when configured.

``connect`` builds and connects an instance, closed after the test; on Redis
every instance of one test shares a channel prefix of its own, so that two
instances act as two processes on the same channels. Pub/sub keeps no keys,
so there is nothing to delete afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial

import pytest

from sysdesign.blocks.realtime import Realtime, open_realtime
from tests import waiting
from tests.backends import redis_url

BACKENDS = ("memory", "redis")

Connect = Callable[..., Awaitable[Realtime]]


# Long enough for a Redis listener to back off and reconnect.
eventually = partial(waiting.eventually, timeout=10.0)


@pytest.fixture(params=BACKENDS)
def realtime_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def connect(realtime_backend: str) -> AsyncIterator[Connect]:
    opened: list[Realtime] = []
    prefix = f"t{uuid.uuid4().hex[:12]}"

    async def connect(buffer: int | None = None) -> Realtime:
        url = "memory://" if realtime_backend == "memory" else redis_url(prefix)
        if buffer is not None:
            url += ("&" if "?" in url else "?") + f"buffer={buffer}"
        realtime = open_realtime(url)
        opened.append(realtime)
        await realtime.connect()
        return realtime

    try:
        yield connect
    finally:
        for realtime in opened:
            await realtime.close()


@pytest.fixture
async def realtime(connect: Connect) -> Realtime:
    return await connect()
