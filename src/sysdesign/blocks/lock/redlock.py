"""``Redlock``: an exclusive lock over N independent Redis servers (N >= 3, odd is best).

``redlock://[user:password@]h1:6379,h2:6379,h3:6379[/db]?prefix=NAME&socket_timeout=SECONDS``

Acquiring: a fresh random value per attempt; ``SET key value NX PX ttl`` on
every server at once, each bounded by the short per-server timeout
(``socket_timeout``, default 0.1 s). The lock is ours when a majority
(``N // 2 + 1``) took it and the time spent is less than the TTL minus an
allowance for clock drift (``ttl * 0.01 + 2 ms``); the lease is valid for
what is left, ``ttl - elapsed - drift``, measured on this process's
monotonic clock. Otherwise the value is deleted wherever it was set (only
where it still matches, in Lua) and the attempt is repeated after a random
pause, until ``wait`` runs out (``LockTimeout``). Renewal extends the key
with ``PEXPIRE`` where it still holds our value, and needs a majority
before the lease's validity ends, else ``LeaseLost``.

This is not a fair queue (there is no queue: retries race), so it is not a
``TicketStore``; it offers the exclusive-lock part of ``LockService``.

Fencing tokens: Redlock has none, so we make one. Each server keeps a
counter per name. The first step returns it from each server that took the
key; the token is one more than the largest of those (a majority); the
second step raises the counter to the token on each of those servers, only
while it still holds our key, and the lock counts only when a majority
confirmed both steps. A later holder's majority shares a server with ours,
and that server's counter already held our token when it let the later
holder in (our key had to be gone first), so the later token is higher.
(Taking the largest INCR reply of one step would not do: a server that
missed acquisitions could answer with an old count in a later majority.)

What this does not guarantee:

- Counters, like keys, live in each server's memory. A server restarted
  without persistence comes back empty: it can let a second holder into a
  majority while the first still holds (mutual exclusion lost) and can hand
  out a token that was used before (fencing lost). Run the servers with
  ``appendfsync always``, or keep a restarted server out for longer than
  the longest TTL.
- Safety rests on timing: servers' clocks advancing at about the same rate
  (a jump forward expires keys early) and this process not pausing (GC, VM,
  network) between checking its lease and acting on it. A holder can always
  wake after its lease lapsed and write anyway; only the resource can refuse
  that, so send the lease's token with every write (``FencedResource``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from sysdesign.blocks.lock.base import LeaseLost, LockError, LockTimeout, LockUnavailable
from sysdesign.blocks.lock.locks import Held, Lease, check_request, default_owner, kept
from sysdesign.blocks.lock.redlockservers import (
    DEFAULT_TIMEOUT,
    NoAnswer,
    RedlockServer,
    answered,
    decoded,
    granted,
    ms,
    on_each,
    open_server,
    server_urls,
    unavailable,
)
from sysdesign.platform.clock import Clock, SystemClock
from sysdesign.platform.errors import ConfigurationError
from sysdesign.platform.redisurl import redact

__all__ = ["DEFAULT_TIMEOUT", "RETRY_DELAY", "Redlock", "drift", "server_urls"]

RETRY_DELAY = 0.05  # seconds, on average, between attempts (randomised: see acquire)


def drift(ttl: float) -> float:
    """The clock-drift allowance for a TTL, in seconds: 1% plus 2 ms."""
    return ttl * 0.01 + 0.002


class Redlock:
    """An exclusive lock by name over independent Redis servers (tested on Redis 7).

    Raises ``LockUnavailable`` (one line naming the servers that failed)
    when fewer than a majority of the servers answer; ``LockError`` for an
    error reply that is not about availability; ``ValueError`` for a bad
    request, before anything is sent."""

    name = "redlock"

    def __init__(
        self,
        urls: Sequence[str],
        *,
        prefix: str = "sysdesign",
        timeout: float = DEFAULT_TIMEOUT,
        retry_delay: float = RETRY_DELAY,
        owner: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        if len(urls) < 3:
            raise ConfigurationError("Redlock needs at least 3 independent servers")
        self._urls = list(urls)
        self._prefix = prefix
        self._timeout = timeout
        self._retry_delay = retry_delay
        self.owner = owner or default_owner()
        self.clock: Clock = clock or SystemClock()
        self.quorum = len(self._urls) // 2 + 1
        self._servers: list[RedlockServer] = []

    @classmethod
    def from_url(cls, url: str, *, owner: str | None = None, clock: Clock | None = None) -> Redlock:
        """See the module's docstring for the URL; other query parameters go
        to redis-py for every server."""
        urls, prefix, timeout = server_urls(url)
        return cls(urls, prefix=prefix, timeout=timeout, owner=owner, clock=clock)

    @property
    def servers(self) -> list[str]:
        return [redact(url) for url in self._urls]

    def keys(self, name: str) -> tuple[str, str]:
        """``(lock key, fencing counter key)`` of ``name`` on every server."""
        return f"{self._prefix}:redlock:lock:{name}", f"{self._prefix}:redlock:fence:{name}"

    # --- lifecycle --------------------------------------------------------------

    async def connect(self) -> None:
        """Build a client per server and ping them: ``LockUnavailable`` when
        fewer than a majority answer (``close`` it either way)."""
        if not self._servers:
            for url in self._urls:
                self._servers.append(open_server(url, self._timeout))
        await self.ping()

    async def close(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            await server.client.aclose()

    async def ping(self) -> None:
        self._majority_answered(await self._each(lambda s: s.client.ping()))

    # --- locking ----------------------------------------------------------------

    async def acquire(
        self, name: str, ttl: float, *, wait: float | None = None, owner: str | None = None
    ) -> Lease:
        """The lease once a majority granted it. ``wait``: seconds to keep
        trying at most (``None``: as long as it takes; 0: once).
        ``LockTimeout`` when not granted in time; ``LockUnavailable`` as soon
        as an attempt finds fewer than a majority of servers answering."""
        check_request(name, ttl, "exclusive", 1)
        if wait is not None and wait < 0:
            raise ValueError("wait must be at least 0 seconds, or None")
        deadline = None if wait is None else self.clock.monotonic() + wait
        who = owner or self.owner
        while True:
            value = f"{secrets.token_hex(16)} {who}"
            lease = None
            try:
                lease = await self._attempt(name, ttl, value, who)
            finally:
                if lease is None:
                    # Failed, refused or cancelled part-way: take back whatever
                    # servers did take, so no stray key blocks the next attempts.
                    with contextlib.suppress(Exception):
                        await asyncio.shield(self._delete_everywhere(name, value))
            if lease is not None:
                return lease
            now = self.clock.monotonic()
            if deadline is not None and now >= deadline:
                raise LockTimeout(f"lock {name!r} was not granted in time")
            # Random, so contenders that split the servers between them do not
            # collide again in step.
            pause = random.uniform(0.5, 1.5) * self._retry_delay
            await asyncio.sleep(pause if deadline is None else min(pause, deadline - now))

    async def _attempt(self, name: str, ttl: float, value: str, owner: str) -> Lease | None:
        lock_key, fence_key = self.keys(name)
        started = self.clock.monotonic()
        replies = await self._each(
            lambda s: s.scripts["acquire"](keys=[lock_key, fence_key], args=[value, ms(ttl)])
        )
        self._majority_answered(replies)
        took = [(s, int(r)) for s, r in zip(self._servers, replies, strict=True) if granted(r)]
        if len(took) < self.quorum:
            return None
        token = max(counter for _, counter in took) + 1
        confirmed = await self._each(
            lambda s: s.scripts["fence"](keys=[lock_key, fence_key], args=[value, token]),
            [s for s, _ in took],
        )
        if sum(1 for r in confirmed if r == 1) < self.quorum:
            return None
        validity = ttl - (self.clock.monotonic() - started) - drift(ttl)
        if validity <= 0:
            return None
        return Lease(
            name=name,
            token=token,
            ticket_id=value,
            mode="exclusive",
            permits=1,
            owner=owner,
            ttl=ttl,
            expires_at=self.clock.time() + validity,
        )

    async def try_acquire(self, name: str, ttl: float) -> Lease | None:
        """The lease if a majority grants it at the first attempt, else ``None``."""
        try:
            return await self.acquire(name, ttl, wait=0)
        except LockTimeout:
            return None

    async def renew(self, lease: Lease, ttl: float | None = None) -> Lease:
        """The same lease (same token), valid for about ``ttl`` (default: its
        own) from now. ``LeaseLost`` when its validity had ended, or fewer
        than a majority still hold it (it is then deleted where it is left);
        ``LockUnavailable`` when that is unknown because servers did not answer."""
        seconds = lease.ttl if ttl is None else ttl
        check_request(lease.name, seconds, "exclusive", 1)
        lost = LeaseLost(f"the lease on {lease.name!r} (token {lease.token}) has lapsed")
        if self.clock.time() >= lease.expires_at:
            raise lost
        lock_key, _ = self.keys(lease.name)
        started = self.clock.monotonic()
        replies = await self._each(
            lambda s: s.scripts["extend"](keys=[lock_key], args=[lease.ticket_id, ms(seconds)])
        )
        extended = sum(1 for r in replies if r == 1)
        validity = seconds - (self.clock.monotonic() - started) - drift(seconds)
        if extended >= self.quorum and validity > 0:
            return dataclasses.replace(lease, ttl=seconds, expires_at=self.clock.time() + validity)
        failed = sum(1 for r in replies if isinstance(r, NoAnswer))
        if validity > 0 and extended + failed >= self.quorum:
            raise self._unavailable(replies)  # the silent servers would decide
        with contextlib.suppress(Exception):
            await self._delete_everywhere(lease.name, lease.ticket_id)
        raise lost

    async def release(self, lease: Lease) -> bool:
        """Give the lock back; ``True`` when a majority still held it. A lapsed
        lease's release deletes nothing of anyone else's and says ``False``."""
        replies = await self._delete_everywhere(lease.name, lease.ticket_id)
        deleted = sum(1 for r in replies if r == 1)
        if deleted >= self.quorum:
            return True
        failed = sum(1 for r in replies if isinstance(r, NoAnswer))
        if self.clock.time() < lease.expires_at and deleted + failed >= self.quorum:
            raise self._unavailable(replies)  # the silent servers would decide
        return False

    async def holder(self, name: str) -> tuple[str, int] | None:
        """``(owner, token)`` of the lock's holder when a majority of servers
        hold the same acquisition, else ``None``. The token is the highest
        counter among those servers: the holder's, once it is confirmed."""
        lock_key, fence_key = self.keys(name)
        replies = await self._each(lambda s: s.client.mget(lock_key, fence_key))
        self._majority_answered(replies)
        answers = [(r[0], int(r[1] or 0)) for r in replies if not isinstance(r, NoAnswer)]
        values = Counter(value for value, _ in answers if value is not None)
        if not values:
            return None
        value, count = values.most_common(1)[0]
        if count < self.quorum:
            return None
        token = max(fence for v, fence in answers if v == value)
        return decoded(value).split(" ", 1)[1], token

    @contextlib.asynccontextmanager
    async def hold(
        self, name: str, ttl: float, *, wait: float | None = None, owner: str | None = None
    ) -> AsyncIterator[Held[Lease]]:
        """``async with redlock.hold("job", ttl=10) as held:``: the lease,
        renewed every ``ttl / 3`` seconds in the background, released on the
        way out. ``held.lost`` is set when a renewal finds the lease lost."""
        lease = await self.acquire(name, ttl, wait=wait, owner=owner)
        async with kept(lease, self.renew, self.release, name) as held:
            yield held

    # --- talking to every server ------------------------------------------------

    async def _delete_everywhere(self, name: str, value: str) -> list[Any]:
        lock_key, _ = self.keys(name)
        return await self._each(lambda s: s.scripts["release"](keys=[lock_key], args=[value]))

    async def _each(
        self,
        call: Callable[[RedlockServer], Awaitable[Any]],
        servers: Sequence[RedlockServer] | None = None,
    ) -> list[Any]:
        """``call`` on every server (or ``servers``) at once: see ``on_each``."""
        if not self._servers:
            raise LockError("the redlock is not connected")
        return await on_each(self._servers if servers is None else servers, call)

    def _majority_answered(self, replies: Sequence[Any]) -> None:
        if answered(replies) < self.quorum:
            raise self._unavailable(replies)

    def _unavailable(self, replies: Sequence[Any]) -> LockUnavailable:
        return unavailable(replies, self.quorum)
