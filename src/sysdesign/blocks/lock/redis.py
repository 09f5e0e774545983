"""``RedisTicketStore``: the lock queues on one Redis server, shared by every process.

Keys, under the URL's ``prefix`` (default ``sysdesign``), per lock name:
``{prefix}:lock:token:{name}`` (the last token, a counter that never
expires), ``{prefix}:lock:queue:{name}`` (ZSET of ticket ids by token),
``{prefix}:lock:expiry:{name}`` (ZSET of ticket ids by expiry) and
``{prefix}:lock:ticket:{name}`` (HASH of each ticket's fields); and one SET
``{prefix}:lock:names`` of the names in use. ``lua/tickets.lua`` says more.

Each operation is one Lua script, so it is atomic on the server: ``enqueue``
takes the next token and appends in one step. Expiry is by the server's
clock (``TIME`` inside the scripts): every client agrees on it whatever its
own clock says, and every script drops the expired tickets before it
answers, so none is ever returned or refreshed.

Waiting: a script that takes a ticket out (``remove``, or the purge of an
expired one) publishes its id on ``{prefix}:lock:gone``. One pub/sub
connection per store hears them and wakes only the waiters watching that
id, so a release wakes the one waiter next in line. The same task checks
the watched tickets on the server every ``CHECK_SECONDS``: that catches
expiry nobody else noticed and any message lost while reconnecting.

One Redis server (or primary), not a cluster: a script touches keys of one
name plus the shared set. A failover to a replica that had not received
the last writes can hand out a token again; use PostgreSQL or etcd where
that matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Sequence
from importlib.resources import files
from typing import Any, TypeVar, cast

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.commands.core import AsyncScript
from redis.exceptions import BusyLoadingError, ReadOnlyError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sysdesign.blocks.lock.base import LockError, LockUnavailable, Mode, Ticket, TicketStore
from sysdesign.platform.background import BackgroundTask
from sysdesign.platform.errors import ConfigurationError
from sysdesign.platform.redisurl import fail_fast_pool, redact, split_options

T = TypeVar("T")
DEFAULT_TIMEOUT = 1.0  # seconds: a dead or stuck server is reported, not waited for
DEFAULT_CONNECTIONS = 64
CHECK_SECONDS = 0.05  # how often the watched tickets are looked up on the server
RECENT_SECONDS = 5.0  # how long a departure heard on the channel is remembered
_OPERATIONS = ("enqueue", "queue", "refresh", "remove", "check")
_LUA = files("sysdesign.blocks.lock").joinpath("lua")
_PRELUDE = _LUA.joinpath("tickets.lua").read_text("utf-8")
SCRIPTS = {op: _PRELUDE + _LUA.joinpath(f"{op}.lua").read_text("utf-8") for op in _OPERATIONS}
# Errors that mean the server cannot answer now, as opposed to a wrong request.
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, BusyLoadingError, ReadOnlyError, OSError)
_UNAVAILABLE_REPLIES = ("OOM", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "LOADING")


def _tickets(name: str, flat: list[Any]) -> list[Ticket]:
    """The tickets of a flat ``{id, fields, ...}`` reply, in token order."""
    tickets = [_ticket(name, _text(i), f) for i, f in zip(flat[::2], flat[1::2], strict=True)]
    return sorted(tickets, key=lambda t: t.token)


def _ticket(name: str, ticket_id: str, fields: bytes | str) -> Ticket:
    text = fields.decode() if isinstance(fields, bytes) else fields
    token, expires_ms, permits, mode, owner = text.split(" ", 4)
    expires_at = int(expires_ms) / 1000
    return Ticket(name, ticket_id, int(token), cast(Mode, mode), int(permits), owner, expires_at)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisTicketStore(TicketStore):
    """Ticket queues on one Redis server (tested on Redis 7).

    Every method raises ``LockUnavailable`` (one line naming the server,
    without its password) when the server cannot be reached, times out
    (``socket_timeout``, default 1 s, which also bounds the wait for a free
    connection), or is loading, read-only or out of memory; ``LockError``
    for any other error reply."""

    name = "redis"

    def __init__(
        self, url: str, *, prefix: str = "sysdesign", timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self._url = url
        self._prefix = prefix
        self._timeout = timeout
        self._channel = f"{prefix}:lock:gone"
        self._client: Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._pubsub: PubSub | None = None
        self._listener = BackgroundTask(self._listen, "lock-redis-listener")
        # Waiters by the ticket id they watch, and the name of each watched id.
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._watched_names: dict[str, str] = {}
        # Ids heard leaving, by when: a waiter that starts watching an id just
        # after its message arrived still sees it gone.
        self._recent: dict[str, float] = {}

    @classmethod
    def from_url(cls, url: str) -> RedisTicketStore:
        """``redis[s]://[user:password@]host:port/db?prefix=NAME&socket_timeout=SECONDS``;
        other query parameters go to redis-py. ``ConfigurationError`` for a
        bad option."""
        url, prefix, timeout = split_options(
            url, what="lock store URL", prefix="sysdesign", timeout=DEFAULT_TIMEOUT
        )
        if not prefix:
            raise ConfigurationError(f"lock store URL: empty prefix in {redact(url)}")
        return cls(url, prefix=prefix, timeout=timeout)

    @property
    def server(self) -> str:
        return redact(self._url)

    def keys(self, name: str) -> list[str]:
        """The keys a script on ``name`` touches, in the order the scripts expect."""
        base = f"{self._prefix}:lock"
        return [
            f"{base}:token:{name}",
            f"{base}:queue:{name}",
            f"{base}:expiry:{name}",
            f"{base}:ticket:{name}",
            f"{base}:names",  # the same for every name
        ]

    # --- lifecycle --------------------------------------------------------------

    async def connect(self) -> None:
        """Build the client, start the listener and ping the server:
        ``LockUnavailable`` when it cannot be reached (the store answers once
        it can; ``close`` it either way), ``ConfigurationError`` for a bad URL."""
        if self._client is None:
            try:
                pool = fail_fast_pool(
                    self._url, timeout=self._timeout, max_connections=DEFAULT_CONNECTIONS
                )
            except ValueError as exc:
                raise ConfigurationError(f"lock store URL {self.server}: {exc}") from None
            client = self._client = Redis.from_pool(pool)
            self._scripts = {op: client.register_script(text) for op, text in SCRIPTS.items()}
            self._pubsub = client.pubsub()
            self._listener.start()
        await self.ping()

    async def close(self) -> None:
        await self._listener.stop()
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
        self._wake_all()

    async def ping(self) -> None:
        await self._call(self._r.ping())

    @property
    def _r(self) -> Redis:
        if self._client is None:
            raise LockError("the redis lock store is not connected")
        return self._client

    async def _call(self, awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except (RedisError, OSError) as exc:
            raise self._translate(exc) from None

    def _translate(self, exc: RedisError | OSError) -> LockError:
        reason = " ".join(str(exc).split()) or exc.__class__.__name__
        if isinstance(exc, _UNAVAILABLE) or (
            isinstance(exc, ResponseError) and reason.startswith(_UNAVAILABLE_REPLIES)
        ):
            return LockUnavailable(f"redis at {self.server} is unavailable: {reason}")
        return LockError(f"redis at {self.server} refused: {reason}")

    async def _run(self, op: str, name: str, *args: Any) -> Any:
        if self._client is None:
            raise LockError("the redis lock store is not connected")
        script = self._scripts[op]
        return await self._call(script(keys=self.keys(name), args=[name, self._channel, *args]))

    # --- the contract -----------------------------------------------------------

    async def enqueue(
        self, name: str, ticket_id: str, mode: Mode, permits: int, owner: str, ttl: float
    ) -> Ticket:
        ticket, _ = await self.enqueue_and_read(name, ticket_id, mode, permits, owner, ttl)
        return ticket

    async def enqueue_and_read(
        self, name: str, ticket_id: str, mode: Mode, permits: int, owner: str, ttl: float
    ) -> tuple[Ticket, list[Ticket]]:
        token, expires_ms, flat = await self._run(
            "enqueue", name, ticket_id, mode, permits, owner, _ms(ttl)
        )
        ticket = Ticket(name, ticket_id, int(token), mode, permits, owner, int(expires_ms) / 1000)
        return ticket, _tickets(name, flat)

    async def queue(self, name: str) -> list[Ticket]:
        return _tickets(name, await self._run("queue", name))

    async def refresh(self, name: str, ticket_id: str, ttl: float) -> Ticket | None:
        fields = await self._run("refresh", name, ticket_id, _ms(ttl))
        return None if fields is None else _ticket(name, ticket_id, fields)

    async def remove(self, name: str, ticket_id: str) -> bool:
        return bool(await self._run("remove", name, ticket_id))

    async def names(self) -> list[str]:
        members = await self._call(self._r.smembers(f"{self._prefix}:lock:names"))
        names = sorted(_text(m) for m in members)
        # Each name is checked (and dropped from the set once empty) by its script.
        counts = await asyncio.gather(*(self._run("check", name) for name in names))
        return [name for name, reply in zip(names, counts, strict=True) if int(reply[0]) > 0]

    async def wait(self, name: str, watched: Sequence[Ticket], timeout: float) -> None:
        if not watched or not self._listener.running:
            await asyncio.sleep(max(timeout, 0.0))
            return
        if any(t.id in self._recent for t in watched):
            return
        event = asyncio.Event()
        for ticket in watched:
            self._watchers.setdefault(ticket.id, set()).add(event)
            self._watched_names[ticket.id] = name
        try:
            await asyncio.wait_for(event.wait(), max(timeout, 0.0))
        except TimeoutError:
            pass
        finally:
            for ticket in watched:
                events = self._watchers.get(ticket.id)
                if events is not None:
                    events.discard(event)
                    if not events:
                        del self._watchers[ticket.id]
                        self._watched_names.pop(ticket.id, None)

    # --- waking waiters ---------------------------------------------------------

    def _gone(self, ticket_id: str, now: float) -> None:
        self._recent[ticket_id] = now
        for event in self._watchers.get(ticket_id, ()):
            event.set()

    def _wake_all(self) -> None:
        # Early wakes are allowed: each waiter looks at its queue again and
        # meets the server's state, or its error, itself.
        for events in self._watchers.values():
            for event in events:
                event.set()

    async def _listen(self) -> None:
        """Dispatch departures heard on the channel, and look up the watched
        tickets every ``CHECK_SECONDS``; after an error, wake every waiter,
        pause, and start over (redis-py resubscribes on reconnecting)."""
        loop = asyncio.get_running_loop()
        pubsub = self._pubsub
        assert pubsub is not None
        subscribed = False
        next_check = 0.0
        while True:
            try:
                if not subscribed:
                    await pubsub.subscribe(self._channel)
                    subscribed = True
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=CHECK_SECONDS
                )
                now = loop.time()
                if message is not None and message.get("type") == "message":
                    self._gone(_text(message["data"]), now)
                if now >= next_check:
                    next_check = now + CHECK_SECONDS
                    self._forget_old(now)
                    if self._watchers:
                        await self._check_watched(now)
            except asyncio.CancelledError:
                raise
            except Exception:
                self._wake_all()
                next_check = 0.0  # messages may have been missed: look at once
                await asyncio.sleep(CHECK_SECONDS)

    def _forget_old(self, now: float) -> None:
        stale = [i for i, seen in self._recent.items() if now - seen > RECENT_SECONDS]
        for ticket_id in stale:
            del self._recent[ticket_id]

    async def _check_watched(self, now: float) -> None:
        by_name: dict[str, list[str]] = {}
        for ticket_id, name in self._watched_names.items():
            by_name.setdefault(name, []).append(ticket_id)
        replies = await asyncio.gather(
            *(self._run("check", name, *ids) for name, ids in by_name.items())
        )
        for reply in replies:
            for ticket_id in reply[1:]:
                self._gone(_text(ticket_id), now)


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))
