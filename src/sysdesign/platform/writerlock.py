"""The turns of one SQLite database's writers in this process, urgent ones first.

SQLite admits one writer at a time. Writers queue on this lock before they
begin (see ``db.py``); each takes the lock in arrival order, except that a
writer inside ``urgent()`` goes ahead of every writer not in it. A one-time
code written while bulk work queues for the same database then waits for at
most the transaction in progress, not for the whole queue. Other engines
have row locks and many writers, and take no turns here.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_urgent: ContextVar[bool] = ContextVar("sysdesign_urgent_writes", default=False)


@contextmanager
def urgent() -> Iterator[None]:
    """Write transactions begun inside (and in tasks started inside) go
    ahead of the other writers waiting for the same SQLite database."""
    token = _urgent.set(True)
    try:
        yield
    finally:
        _urgent.reset(token)


def is_urgent() -> bool:
    return _urgent.get()


class WriterLock:
    """A lock handed over in arrival order, urgent waiters before the others."""

    def __init__(self) -> None:
        self._held = False
        self._lanes: dict[bool, deque[asyncio.Future[None]]] = {True: deque(), False: deque()}

    @property
    def waiting(self) -> int:
        return sum(len(lane) for lane in self._lanes.values())

    async def acquire(self) -> None:
        if not self._held and not self.waiting:
            self._held = True
            return
        waiter = asyncio.get_running_loop().create_future()
        lane = self._lanes[is_urgent()]
        lane.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed over just as it was cancelled: pass it on
            else:
                lane.remove(waiter)
            raise

    def release(self) -> None:
        """Hand the lock to the next waiter (urgent first), or free it."""
        for lane in (self._lanes[True], self._lanes[False]):
            while lane:
                waiter = lane.popleft()
                if not waiter.done():
                    waiter.set_result(None)  # stays held: it is the waiter's now
                    return
        self._held = False

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()
