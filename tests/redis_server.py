"""A throwaway ``redis-server`` of a test's own, to stop, pause and restart.

Tests about a Redis outage cannot stop the shared server: ``private_redis``
(registered in ``tests/conftest.py``) starts one on a free loopback port and
kills it afterwards.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
from collections.abc import AsyncIterator

import pytest

from tests.backends import services_required

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
