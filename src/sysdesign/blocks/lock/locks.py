"""``LockService``: locks, read/write locks and semaphores over any ``TicketStore``.

``acquire`` enqueues a ticket and waits, refreshing it, until the ticket is
granted (``base.grants``) or the wait runs out; a ticket that is not granted
in time, or whose waiter is cancelled, is removed before the call returns,
so an abandoned wait never blocks the queue. A lease is kept by ``renew``
(or by ``hold``'s background keepalive) and given back by ``release``; a
lease that lapsed cannot be renewed (``LeaseLost``), and releasing it is a
no-op that says so (``False``).

Time for deadlines and keepalives is this process's monotonic clock; expiry
of tickets is the store's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from sysdesign.blocks.lock.base import (
    MAX_NAME_CHARS,
    MAX_TTL_SECONDS,
    MIN_TTL_SECONDS,
    MODES,
    LeaseLost,
    LockTimeout,
    Mode,
    Ticket,
    TicketStore,
    blockers,
    grants,
)
from sysdesign.platform.clock import Clock, SystemClock


@dataclass(frozen=True, slots=True)
class Lease:
    """A granted ticket. ``token`` is the fencing token: send it with every
    write to the protected resource. ``expires_at`` is by the store's clock."""

    name: str
    token: int
    ticket_id: str
    mode: Mode
    permits: int
    owner: str
    ttl: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class LockState:
    """A name's queue now: who holds it and who waits, in order."""

    name: str
    holders: list[Ticket]
    waiters: list[Ticket]


L = TypeVar("L", bound="_Renewable")


class _Renewable(Protocol):
    @property
    def ttl(self) -> float: ...


@dataclass
class Held(Generic[L]):
    """What ``hold`` yields: the lease as last renewed, and ``lost``, set when
    a keepalive found the lease gone (the body should stop writing)."""

    lease: L
    lost: asyncio.Event = field(default_factory=asyncio.Event)


@contextlib.asynccontextmanager
async def kept(
    lease: L,
    renew: Callable[[L], Awaitable[L]],
    release: Callable[[L], Awaitable[object]],
    name: str,
) -> AsyncIterator[Held[L]]:
    """``lease`` renewed by ``renew`` every ``ttl / 3`` seconds while the body
    runs, and released by ``release`` on the way out, even when cancelled.
    ``held.lost`` is set when a renewal raises ``LeaseLost``; any other
    failure (the store is unreachable) is tried again at the next beat, and
    the renewal says ``LeaseLost`` once the lease has lapsed."""
    held = Held(lease)

    async def keep() -> None:
        while True:
            await asyncio.sleep(held.lease.ttl / 3)
            try:
                held.lease = await renew(held.lease)
            except LeaseLost:
                held.lost.set()
                return
            except Exception:
                continue

    keeper = asyncio.create_task(keep(), name=f"lock-keepalive:{name}")
    try:
        yield held
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        with contextlib.suppress(Exception):
            await asyncio.shield(release(held.lease))


class _TicketExpired(Exception):
    """A waiting ticket ran out before it was granted."""


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def check_request(name: str, ttl: float, mode: str, permits: int) -> None:
    """``ValueError`` naming what is wrong with a lock request."""
    if not name or len(name) > MAX_NAME_CHARS:
        raise ValueError(f"name must be 1 to {MAX_NAME_CHARS} characters")
    if not MIN_TTL_SECONDS <= ttl <= MAX_TTL_SECONDS:
        raise ValueError(
            f"ttl must be {MIN_TTL_SECONDS:g} to {MAX_TTL_SECONDS:g} seconds, not {ttl:g}"
        )
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if permits < 1 or (mode != "permit" and permits != 1):
        raise ValueError("permits must be at least 1, and 1 unless mode is permit")


class LockService:
    """Locks by name on ``store``. ``owner`` labels this process's tickets
    (default ``host:pid``) in listings."""

    def __init__(
        self, store: TicketStore, *, clock: Clock | None = None, owner: str | None = None
    ) -> None:
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.owner = owner or default_owner()

    async def connect(self) -> None:
        await self.store.connect()

    async def close(self) -> None:
        await self.store.close()

    async def ping(self) -> None:
        await self.store.ping()

    async def acquire(
        self,
        name: str,
        ttl: float,
        *,
        wait: float | None = None,
        mode: Mode = "exclusive",
        permits: int = 1,
        owner: str | None = None,
    ) -> Lease:
        """The lease once granted. ``wait``: seconds to wait at most (``None``:
        as long as it takes; 0: not at all). ``LockTimeout`` when not granted
        in time; ``ValueError`` for a bad request; ``LockConflict`` when the
        name is used another way; ``LockUnavailable`` when the store is down."""
        check_request(name, ttl, mode, permits)
        if wait is not None and wait < 0:
            raise ValueError("wait must be at least 0 seconds, or None")
        deadline = None if wait is None else self.clock.monotonic() + wait
        while True:
            ticket_id = uuid.uuid4().hex
            try:
                ticket, queue = await self.store.enqueue_and_read(
                    name, ticket_id, mode, permits, owner or self.owner, ttl
                )
            except BaseException:
                # Cancelled or failed while the store may have applied it: the id is
                # ours, so take out a ticket that may have been written anyway.
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.store.remove(name, ticket_id))
                raise
            try:
                return await self._wait_until_granted(ticket, ttl, deadline, queue)
            except _TicketExpired:
                # This process (or the store) stalled past the ticket's TTL while
                # it waited: its place is gone, so queue again at the back.
                continue
            except BaseException:
                # Timed out, cancelled or failed: leave the queue (even when cancelled
                # again meanwhile), so an abandoned ticket never blocks the others.
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.store.remove(name, ticket.id))
                raise

    async def _wait_until_granted(
        self, ticket: Ticket, ttl: float, deadline: float | None, queue: list[Ticket]
    ) -> Lease:
        refresh_every = ttl / 3
        refreshed = self.clock.monotonic()
        while True:
            mine = next((t for t in queue if t.id == ticket.id), None)
            if mine is None:
                raise _TicketExpired
            if grants(mine, queue):
                return _lease(mine, ttl)
            now = self.clock.monotonic()
            if deadline is not None and now >= deadline:
                raise LockTimeout(f"lock {ticket.name!r} was not granted in time")
            if now - refreshed >= refresh_every:
                if await self.store.refresh(ticket.name, ticket.id, ttl) is None:
                    raise _TicketExpired
                refreshed = now
            pause = refresh_every - (now - refreshed)
            if deadline is not None:
                pause = min(pause, deadline - now)
            await self.store.wait(ticket.name, blockers(mine, queue), max(pause, 0.0))
            queue = await self.store.queue(ticket.name)

    async def try_acquire(
        self, name: str, ttl: float, *, mode: Mode = "exclusive", permits: int = 1
    ) -> Lease | None:
        """The lease if it is free now, else ``None``; never waits."""
        try:
            return await self.acquire(name, ttl, wait=0, mode=mode, permits=permits)
        except LockTimeout:
            return None

    async def renew(self, lease: Lease, ttl: float | None = None) -> Lease:
        """The same lease, ``ttl`` (default: its own) from now. ``LeaseLost``
        when it lapsed or was released."""
        return await self.renew_by_id(
            lease.name, lease.ticket_id, lease.ttl if ttl is None else ttl
        )

    async def renew_by_id(self, name: str, lease_id: str, ttl: float) -> Lease:
        """``renew`` for a caller that kept only the name and the lease's id
        (its ``ticket_id``), such as a client of the HTTP service."""
        check_request(name, ttl, "exclusive", 1)
        ticket = await self.store.refresh(name, lease_id, ttl)
        if ticket is None:
            raise LeaseLost(f"the lease {lease_id} on {name!r} has lapsed or was released")
        return _lease(ticket, ttl)

    async def release(self, lease: Lease) -> bool:
        """Give the lock back; ``False`` when the lease had already lapsed or
        been released (a stale release changes nothing)."""
        return await self.store.remove(lease.name, lease.ticket_id)

    async def inspect(self, name: str) -> LockState:
        queue = await self.store.queue(name)
        holders = [t for t in queue if _granted_quietly(t, queue)]
        held = {t.id for t in holders}
        return LockState(name, holders, [t for t in queue if t.id not in held])

    @contextlib.asynccontextmanager
    async def hold(
        self,
        name: str,
        ttl: float,
        *,
        wait: float | None = None,
        mode: Mode = "exclusive",
        permits: int = 1,
        owner: str | None = None,
    ) -> AsyncIterator[Held[Lease]]:
        """``async with locks.hold("job", ttl=10) as held:``: the lease, renewed
        every ``ttl / 3`` seconds in the background, released on the way out.
        When a renewal finds the lease gone, ``held.lost`` is set."""
        lease = await self.acquire(name, ttl, wait=wait, mode=mode, permits=permits, owner=owner)
        async with kept(lease, self.renew, self.release, name) as held:
            yield held


def _lease(ticket: Ticket, ttl: float) -> Lease:
    return Lease(
        name=ticket.name,
        token=ticket.token,
        ticket_id=ticket.id,
        mode=ticket.mode,
        permits=ticket.permits,
        owner=ticket.owner,
        ttl=ttl,
        expires_at=ticket.expires_at,
    )


def _granted_quietly(ticket: Ticket, queue: list[Ticket]) -> bool:
    try:
        return grants(ticket, queue)
    except Exception:
        return False
