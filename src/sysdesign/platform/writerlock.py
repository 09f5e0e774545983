"""The turns of one SQLite database's writers in this process, urgent ones first.

SQLite admits one writer at a time. Writers queue on this lock before they
begin (see ``db.py``); each takes the lock in arrival order, except that a
writer inside ``urgent()`` goes ahead of the writers not in it. A one-time
code written while bulk work queues for the same database then waits for
the transaction in progress, not for the whole queue. So that urgent work
cannot starve the rest, after ``URGENT_BURST`` urgent turns in a row a
waiting ordinary writer gets the next one. Other engines have row locks and
many writers, and take no turns here.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

URGENT_BURST = 8

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
    """A lock handed over in arrival order, urgent waiters before the others
    (but never more than ``URGENT_BURST`` of them in a row while others wait)."""

    def __init__(self) -> None:
        self._held = False
        self._urgent_turns = 0  # urgent hand-overs in a row while others waited
        # A waiter stays in its lane until handed the lock or skipped as cancelled.
        self._lanes: dict[bool, deque[asyncio.Future[None]]] = {True: deque(), False: deque()}

    @property
    def waiting(self) -> int:
        return sum(not w.done() for lane in self._lanes.values() for w in lane)

    async def acquire(self) -> None:
        if not self._held and not self.waiting:
            self._held = True
            return
        waiter = asyncio.get_running_loop().create_future()
        self._lanes[is_urgent()].append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed over just as it was cancelled: pass it on
            raise

    def release(self) -> None:
        """Hand the lock to the next waiter, or free it."""
        urgent_lane, other_lane = self._lanes[True], self._lanes[False]
        _drop_cancelled(urgent_lane)
        _drop_cancelled(other_lane)
        if urgent_lane and not (other_lane and self._urgent_turns >= URGENT_BURST):
            self._urgent_turns = self._urgent_turns + 1 if other_lane else 0
            urgent_lane.popleft().set_result(None)  # stays held: it is the waiter's now
        elif other_lane:
            self._urgent_turns = 0
            other_lane.popleft().set_result(None)
        else:
            self._held = False

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()


def _drop_cancelled(lane: deque[asyncio.Future[None]]) -> None:
    while lane and lane[0].done():
        lane.popleft()
