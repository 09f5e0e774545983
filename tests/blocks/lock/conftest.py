"""A ``LockService`` on each backend: memory and sqlite always, the real
servers when configured.

Memory and sqlite expire tickets by the manual clock; the servers by their
own. ``elapse`` moves the manual clock and, on a server, also waits that long
for real, so tests that need a lease to lapse give it a TTL of ``SHORT``
seconds and give waiters a long one (a waiter refreshes its ticket by real
time, which a manual clock jumping past it would not see).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from sysdesign.blocks.lock import LockService, TicketStore, open_store
from sysdesign.blocks.lock.memory import MemoryTicketStore
from sysdesign.blocks.lock.sqlite import SqliteTicketStore
from sysdesign.platform.clock import ManualClock
from tests.backends import delete_prefix, fresh_database, redis_url, service_url

SERVER_BACKENDS = ("postgres", "redis", "etcd")
BACKENDS = ("memory", "sqlite", *SERVER_BACKENDS)
SHORT = 0.5  # seconds
LONG = 30.0

Elapse = Callable[[float], Awaitable[None]]


@pytest.fixture(params=BACKENDS)
def lock_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def store(
    lock_backend: str, clock: ManualClock, tmp_path: Path
) -> AsyncIterator[TicketStore]:
    built: TicketStore
    if lock_backend == "memory":
        built = MemoryTicketStore(clock)
    elif lock_backend == "sqlite":
        built = SqliteTicketStore(tmp_path / "locks.db", clock)
    else:
        async with server_url(lock_backend) as url:
            built = open_store(url)
            await built.connect()
            try:
                yield built
            finally:
                await built.close()
        return
    await built.connect()
    try:
        yield built
    finally:
        await built.close()


@contextlib.asynccontextmanager
async def server_url(backend: str) -> AsyncIterator[str]:
    """A lock URL on the real server for ``backend``, with nothing of other
    tests in it, cleaned up afterwards."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    if backend == "postgres":
        async with fresh_database(service_url("postgres")) as url:
            yield url.replace("postgresql+asyncpg://", "postgresql://", 1)
    elif backend == "redis":
        try:
            yield redis_url(prefix)
        finally:
            await delete_prefix(prefix)
    elif backend == "etcd":
        from sysdesign.blocks.lock.etcdapi import EtcdClient

        base = service_url("etcd")
        try:
            yield f"{base}?prefix=/{prefix}/"
        finally:
            async with EtcdClient.from_url(base) as client:
                await client.delete(f"/{prefix}/".encode(), prefix=True)
    else:
        raise AssertionError(f"no server for {backend}")


@pytest.fixture
def locks(store: TicketStore) -> LockService:
    return LockService(store, owner="test")


@pytest.fixture
def elapse(lock_backend: str, clock: ManualClock, store: TicketStore) -> Elapse:
    async def elapse(seconds: float) -> None:
        clock.advance(seconds)
        if isinstance(store, MemoryTicketStore):
            store.expire()
        elif lock_backend in SERVER_BACKENDS:
            await asyncio.sleep(seconds)  # the server's clock decides
        await asyncio.sleep(0.05)  # let waiters see it

    return elapse
