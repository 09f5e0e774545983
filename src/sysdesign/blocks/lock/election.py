"""``Election``: one leader among candidates, on an exclusive lock.

Candidates queue for the lock ``election:<name>`` with their own value as
the ticket's owner; the holder is the leader, the others wait in the order
they campaigned, and the next one takes over when the leader resigns or its
lease lapses (it died). The leader's fencing token numbers its term: writes
that carry it are refused once a later leader has written
(``FencedResource``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sysdesign.blocks.lock.locks import Held, Lease, LockService


class Election:
    def __init__(self, locks: LockService, name: str, ttl: float) -> None:
        self.locks = locks
        self.name = f"election:{name}"
        self.ttl = ttl

    async def campaign(self, candidate: str, *, wait: float | None = None) -> Lease:
        """Wait until ``candidate`` leads; its lease, to renew and to resign with.
        ``LockTimeout`` when it does not lead within ``wait`` seconds."""
        return await self.locks.acquire(self.name, self.ttl, wait=wait, owner=candidate)

    def lead(
        self, candidate: str, *, wait: float | None = None
    ) -> contextlib.AbstractAsyncContextManager[Held]:
        """``async with election.lead("node-1") as term:``: campaign, keep the
        lease alive while the body runs, resign on the way out; ``term.lost``
        is set if leadership was lost meanwhile."""
        return self.locks.hold(self.name, self.ttl, wait=wait, owner=candidate)

    async def resign(self, lease: Lease) -> bool:
        """Step down; ``False`` when the term had already ended."""
        return await self.locks.release(lease)

    async def leader(self) -> tuple[str, int] | None:
        """The leader now and its term (fencing token), or ``None``."""
        holders = (await self.locks.inspect(self.name)).holders
        return (holders[0].owner, holders[0].token) if holders else None

    async def observe(self, poll: float = 1.0) -> AsyncIterator[tuple[str, int] | None]:
        """Yield the leader now, then each change of leader (``None`` while
        there is none), until the caller stops iterating."""
        last: object = object()
        while True:
            queue = await self.locks.store.queue(self.name)
            current = (queue[0].owner, queue[0].token) if queue else None
            if current != last:
                last = current
                yield current
            await self.locks.store.wait(self.name, queue[:1], poll)
