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
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from sysdesign.blocks.lock import LockService, TicketStore
from sysdesign.blocks.lock.memory import MemoryTicketStore
from sysdesign.blocks.lock.sqlite import SqliteTicketStore
from sysdesign.platform.clock import ManualClock

BACKENDS = ("memory", "sqlite")
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
    else:  # pragma: no cover - a backend listed without a builder
        raise AssertionError(lock_backend)
    await built.connect()
    try:
        yield built
    finally:
        await built.close()


@pytest.fixture
def locks(store: TicketStore) -> LockService:
    return LockService(store, owner="test")


@pytest.fixture
def elapse(lock_backend: str, clock: ManualClock, store: TicketStore) -> Elapse:
    async def elapse(seconds: float) -> None:
        clock.advance(seconds)
        if isinstance(store, MemoryTicketStore):
            store.expire()
        elif lock_backend != "sqlite":
            await asyncio.sleep(seconds)  # the server's clock decides
        await asyncio.sleep(0.05)  # let waiters see it

    return elapse
