"""``MemoryTicketStore``: the queues in this process, for unit tests and one-process use.

Each method runs without awaiting in between, so each is atomic on the event
loop. Expiry is by the injected clock: a test moves it forward, and the next
call that reads the queue drops the tickets whose time ran out and wakes
their watchers. A ticket that leaves wakes only the waiters watching it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sysdesign.blocks.lock.base import Mode, Ticket, TicketStore
from sysdesign.platform.clock import Clock, SystemClock


class MemoryTicketStore(TicketStore):
    name = "memory"

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or SystemClock()
        self._queues: dict[str, dict[str, Ticket]] = {}
        self._last_token: dict[str, int] = {}
        self._gone: dict[str, asyncio.Event] = {}

    def _purge(self, name: str) -> dict[str, Ticket]:
        tickets = self._queues.get(name, {})
        now = self._clock.time()
        for ticket_id in [i for i, t in tickets.items() if t.expires_at <= now]:
            self._drop(tickets, ticket_id)
        if not tickets:
            self._queues.pop(name, None)
        return tickets

    def _drop(self, tickets: dict[str, Ticket], ticket_id: str) -> None:
        del tickets[ticket_id]
        event = self._gone.pop(ticket_id, None)
        if event is not None:
            event.set()

    async def enqueue(
        self, name: str, ticket_id: str, mode: Mode, permits: int, owner: str, ttl: float
    ) -> Ticket:
        token = self._last_token.get(name, 0) + 1
        self._last_token[name] = token
        ticket = Ticket(name, ticket_id, token, mode, permits, owner, self._clock.time() + ttl)
        self._queues.setdefault(name, {})[ticket_id] = ticket
        self._gone[ticket_id] = asyncio.Event()
        return ticket

    async def queue(self, name: str) -> list[Ticket]:
        return sorted(self._purge(name).values(), key=lambda t: t.token)

    async def refresh(self, name: str, ticket_id: str, ttl: float) -> Ticket | None:
        tickets = self._purge(name)
        ticket = tickets.get(ticket_id)
        if ticket is None:
            return None
        ticket = Ticket(
            ticket.name,
            ticket.id,
            ticket.token,
            ticket.mode,
            ticket.permits,
            ticket.owner,
            self._clock.time() + ttl,
        )
        tickets[ticket_id] = ticket
        return ticket

    async def remove(self, name: str, ticket_id: str) -> bool:
        tickets = self._purge(name)
        if ticket_id not in tickets:
            return False
        self._drop(tickets, ticket_id)
        if not tickets:
            self._queues.pop(name, None)
        return True

    async def wait(self, name: str, watched: Sequence[Ticket], timeout: float) -> None:
        if not watched:
            await asyncio.sleep(timeout)
            return
        events = [self._gone[t.id] for t in watched if t.id in self._gone]
        if len(events) < len(watched) or any(e.is_set() for e in events):
            return
        waiters = [asyncio.ensure_future(e.wait()) for e in events]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def expire(self) -> None:
        """Drop every ticket whose time has run out now, waking its watchers
        (what the next read of each queue would do)."""
        for name in list(self._queues):
            self._purge(name)

    async def names(self) -> list[str]:
        return sorted(name for name in list(self._queues) if self._purge(name))
