"""The lock contract: a fair queue of tickets per lock name, each with a fencing token.

Every lock, read/write lock and semaphore is the same thing underneath: a
queue of *tickets* for a name. Asking for a lock appends a ticket; the store
gives it the next *token* of that name, a number that strictly increases
across every ticket the name ever had, so tokens also order the queue (first
come, first served). Whether a ticket holds the lock follows from the live
tickets ahead of it alone (``grants``): an exclusive ticket holds when it is
first, a shared one when no exclusive ticket is ahead of it, a permit of a
semaphore of N when fewer than N tickets are ahead of it. Holders are
therefore granted in token order, and each holder's token is higher than
every earlier holder's: the fencing token a protected resource checks
(``FencedResource``).

A ticket lives until it is removed or its TTL runs out without a refresh;
waiting tickets are refreshed too, so a waiter that dies leaves the queue
by itself. Expiry is measured by the store's clock (the database's, Redis's,
etcd's leases; this process's for memory and sqlite).

A ``TicketStore`` is a backend: it keeps the queues and makes ``enqueue``
atomic (the next token and the append in one step). ``LockService`` in
``locks.py`` builds everything else on it, the same for every backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Mode = Literal["exclusive", "shared", "permit"]
MODES: tuple[Mode, ...] = ("exclusive", "shared", "permit")
MAX_NAME_CHARS = 256
MAX_TTL_SECONDS = 86_400.0
# Below this a lease ends before a waiter or a keepalive can act on it.
MIN_TTL_SECONDS = 0.05


class LockError(Exception):
    """Base class of the lock block's errors."""


class LockUnavailable(LockError):
    """The store could not be reached; whether the lock is held is unknown."""


class LockTimeout(LockError, TimeoutError):
    """The lock was not granted within the wait; nothing is left queued."""


class LeaseLost(LockError):
    """The lease ran out (or was released) before it was renewed: another
    holder may have the lock now, and writes must carry the lease's token."""


class LockConflict(LockError):
    """A ticket asks for a name that is already used another way (a lock
    versus a semaphore, or a semaphore of another size)."""


@dataclass(frozen=True, slots=True)
class Ticket:
    """One place in a name's queue. ``expires_at`` is by the store's clock."""

    name: str
    id: str
    token: int
    mode: Mode
    permits: int
    owner: str
    expires_at: float


def grants(ticket: Ticket, queue: Sequence[Ticket]) -> bool:
    """Whether ``ticket`` holds its lock, given the live tickets of its name
    (in any order; ``ticket`` among them or not). Raises ``LockConflict``
    when a ticket ahead uses the name another way."""
    ahead = [t for t in queue if t.token < ticket.token]
    for other in ahead:
        if (other.mode == "permit") != (ticket.mode == "permit") or (
            ticket.mode == "permit" and other.permits != ticket.permits
        ):
            raise LockConflict(
                f"lock {ticket.name!r} is in use as {_usage(other)}, not as {_usage(ticket)}"
            )
    if ticket.mode == "exclusive":
        return not ahead
    if ticket.mode == "shared":
        return all(t.mode == "shared" for t in ahead)
    return len(ahead) < ticket.permits


def blockers(ticket: Ticket, queue: Sequence[Ticket]) -> list[Ticket]:
    """The tickets whose leaving could grant ``ticket``: those a waiter watches.
    For an exclusive lock, only the one just ahead (so a release wakes one
    waiter); for a shared one, the nearest exclusive ticket ahead; for a
    permit, every ticket ahead."""
    ahead = sorted((t for t in queue if t.token < ticket.token), key=lambda t: t.token)
    if not ahead:
        return []
    if ticket.mode == "exclusive":
        return [ahead[-1]]
    if ticket.mode == "shared":
        exclusive = [t for t in ahead if t.mode == "exclusive"]
        return exclusive[-1:]
    return ahead


def _usage(ticket: Ticket) -> str:
    if ticket.mode == "permit":
        return f"a semaphore of {ticket.permits}"
    return "a lock"


class TicketStore(ABC):
    """The queues of tickets, per name. Every method raises ``LockUnavailable``
    when the store cannot be reached."""

    name: str = "?"

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    @abstractmethod
    async def enqueue(
        self, name: str, ticket_id: str, mode: Mode, permits: int, owner: str, ttl: float
    ) -> Ticket:
        """Append a ticket with the name's next token, atomically: no two
        tickets of a name ever get the same token, and a later call gets a
        higher one, even after every ticket of the name is gone."""

    async def enqueue_and_read(
        self, name: str, ticket_id: str, mode: Mode, permits: int, owner: str, ttl: float
    ) -> tuple[Ticket, list[Ticket]]:
        """``enqueue``, then the name's queue as ``queue`` would give it. A
        store may do both in one round trip: an uncontended lock is then one
        call to take and one to give back."""
        ticket = await self.enqueue(name, ticket_id, mode, permits, owner, ttl)
        return ticket, await self.queue(name)

    @abstractmethod
    async def queue(self, name: str) -> list[Ticket]:
        """The live tickets of ``name`` (expired ones dropped), in token order."""

    @abstractmethod
    async def refresh(self, name: str, ticket_id: str, ttl: float) -> Ticket | None:
        """Give the ticket ``ttl`` seconds more from now; ``None`` when it is
        gone (removed, or expired before this call)."""

    @abstractmethod
    async def remove(self, name: str, ticket_id: str) -> bool:
        """Take the ticket out of its queue; ``False`` when it was already gone."""

    @abstractmethod
    async def wait(self, name: str, watched: Sequence[Ticket], timeout: float) -> None:
        """Return once one of ``watched`` may have left its queue, or after
        ``timeout`` seconds, whichever is first. Waking early is allowed (the
        caller looks again), sleeping through a departure is not, beyond the
        store's polling interval."""

    async def names(self) -> list[str]:
        """Names that have live tickets, sorted (for listing)."""
        return []
