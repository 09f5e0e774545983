"""A ``RateLimitStore`` on each backend (memory always, Redis when configured),
driven by the manual clock so that no test sleeps.

Each Redis test gets its own key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import signal
import socket
import uuid
from collections.abc import AsyncIterator

import pytest

from sysdesign.blocks.ratelimit import MemoryRateLimitStore, RateLimitStore, open_store
from sysdesign.platform.clock import ManualClock
from tests.backends import delete_prefix, redis_url, services_required

STORES = ("memory", "redis")


def align(clock: ManualClock, period: float, offset: float = 0.0) -> None:
    """Move the clock forward to ``offset`` seconds into the next window of
    ``period`` seconds (windows are aligned to the epoch)."""
    start = (math.floor(clock.time() / period) + 1) * period
    clock.set(start + offset)


@pytest.fixture(params=STORES)
def store_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def store(store_backend: str, clock: ManualClock) -> AsyncIterator[RateLimitStore]:
    if store_backend == "memory":
        yield MemoryRateLimitStore(clock)
        return
    prefix = f"t{uuid.uuid4().hex[:12]}"
    s = open_store(redis_url(prefix), clock=clock)
    await s.connect()
    try:
        yield s
    finally:
        await s.close()
        await delete_prefix(prefix)


REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class PrivateRedis:
    """A throwaway ``redis-server`` on a loopback port, without persistence."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert self.process.stdout is not None
        seen = []
        # Its log says when it listens: no polling.
        while True:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout=10)
            seen.append(line)
            if b"Ready to accept connections" in line:
                break
            if not line:
                raise RuntimeError(b"redis-server did not start: " + b"".join(seen))
        # Its later output is dropped, so a full pipe never blocks it.
        self._drain = asyncio.create_task(self.process.stdout.read())

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()
            await self._drain


@pytest.fixture
async def private_redis() -> AsyncIterator[PrivateRedis]:
    if not os.access(REDIS_SERVER, os.X_OK):
        reason = f"{REDIS_SERVER} is not installed: cannot stop a private Redis"
        if services_required():
            pytest.fail(reason)
        pytest.skip(reason)
    server = PrivateRedis()
    await server.start()
    try:
        yield server
    finally:
        await server.kill()
