"""``RedisRealtime``: the realtime contract on Redis pub/sub, across processes.

Channel ``c`` is the Redis channel ``{prefix}:rt:{c}`` (``?prefix=``, default
``sysdesign``; empty: ``c`` as given). Publishing is one PUBLISH on a
pooled connection. Receiving uses ONE connection per instance, whatever the
number of subscriptions: a listener task reads it and fans each message out
to the local subscriptions of its channel, and the server is subscribed to
a channel once, while this process has at least one subscription to it.

That connection is watched: when it has said nothing for a second the
listener pings, and a connection that does not answer within the socket
timeout, or that the server closes, is replaced. The listener reconnects
(backing off up to 2 s while the server is away) and subscribes again to
every channel that still has subscriptions, which count the break in
``interruptions``. Messages published meanwhile are lost, as the contract
allows: subscribers re-read their state.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

import structlog
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import (
    BusyLoadingError,
    RedisError,
)
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)

from sysdesign.blocks.realtime.base import (
    DEFAULT_BUFFER,
    Realtime,
    RealtimeError,
    RealtimeUnavailable,
    Subscription,
    check_channel,
    check_message,
    split_buffer,
)
from sysdesign.platform.background import BackgroundTask
from sysdesign.platform.errors import ConfigurationError
from sysdesign.platform.redisurl import fail_fast_pool, redact, split_options

DEFAULT_PREFIX = "sysdesign"
DEFAULT_TIMEOUT = 1.0  # seconds: bounds a publish, a subscription's confirmation, a ping's answer
DEFAULT_CONNECTIONS = 32  # for publishing; receiving uses one more
IDLE_SECONDS = 1.0  # a silent subscriber connection is pinged after this long
FIRST_BACKOFF, MAX_BACKOFF = 0.05, 2.0
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, BusyLoadingError, OSError)

log = structlog.get_logger("sysdesign.realtime")


class _Dead(Exception):
    """The subscriber connection stopped answering."""


class _Channel:
    """The server-side subscription of one channel, for as long as the channel
    has local subscriptions. A new object each time a channel gains its
    first subscription, so that a late answer to an earlier SUBSCRIBE is not
    taken for this one's."""

    __slots__ = ("confirmed", "waiters")

    def __init__(self) -> None:
        self.confirmed = False
        self.waiters: list[asyncio.Future[None]] = []

    def settle(self, error: BaseException | None = None) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)
        self.waiters.clear()


class RedisRealtime(Realtime):
    """Pub/sub on one Redis server (tested on Redis 7).

    ``publish`` and ``ping`` raise ``RealtimeUnavailable`` when the server
    cannot be reached or times out, ``RealtimeError`` for another error
    reply or before ``connect``. Entering a subscription raises
    ``RealtimeUnavailable`` when the server does not confirm it within the
    socket timeout (default 1 s)."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = DEFAULT_TIMEOUT,
        buffer: int = DEFAULT_BUFFER,
    ) -> None:
        super().__init__(buffer=buffer)
        self._url = url
        self._prefix = f"{prefix}:rt:" if prefix else ""
        self._prefix_length = len(self._prefix.encode())  # in the Redis channel's bytes
        self._timeout = timeout
        self._pool: BlockingConnectionPool | None = None
        self._client: Redis | None = None
        self._listener = BackgroundTask(self._listen, "realtime-redis-listener")
        self._conn: AbstractConnection | None = None  # the subscriber connection, when live
        self._states: dict[str, _Channel] = {}
        # SUBSCRIBEs sent on the current connection and not yet answered, by Redis
        # channel, in the order sent: the server answers them in that order.
        self._inflight: dict[bytes, deque[_Channel]] = {}
        # Commands on the subscriber connection are written one at a time, so
        # that the order of ``_inflight`` is the order on the wire.
        self._write_lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str) -> RedisRealtime:
        """``redis[s]://[user:password@]host:port/db?prefix=NAME&socket_timeout=SECONDS&buffer=N``;
        other query parameters go to redis-py. ``ConfigurationError`` for a bad option."""
        try:
            url, buffer = split_buffer(url)
        except ValueError as exc:
            raise ConfigurationError(f"realtime URL {redact(url)}: {exc}") from None
        url, prefix, timeout = split_options(
            url, what="realtime URL", prefix=DEFAULT_PREFIX, timeout=DEFAULT_TIMEOUT
        )
        return cls(url, prefix=prefix, timeout=timeout, buffer=buffer)

    def key(self, channel: str) -> bytes:
        """The Redis channel carrying ``channel``."""
        return (self._prefix + channel).encode()

    @property
    def server(self) -> str:
        return redact(self._url)

    # --- lifecycle --------------------------------------------------------------

    async def connect(self) -> None:
        """Build the clients, start the listener and ping the server:
        ``RealtimeUnavailable`` when it cannot be reached (the instance works
        once it can; ``close`` it either way), ``ConfigurationError`` for a
        bad URL."""
        if self._client is None:
            try:
                pool = fail_fast_pool(
                    self._url, timeout=self._timeout, max_connections=DEFAULT_CONNECTIONS
                )
            except ValueError as exc:
                raise ConfigurationError(f"realtime URL {self.server}: {exc}") from None
            self._pool = pool
            self._client = Redis.from_pool(pool)
            self._listener.start()
        await self.ping()

    async def close(self) -> None:
        await self._listener.stop()
        await self._drop_connection()
        closed = RealtimeError("the realtime backend was closed")
        for state in self._states.values():
            state.settle(closed)
        self._states.clear()
        await super().close()
        client, self._client, self._pool = self._client, None, None
        if client is not None:
            await client.aclose()

    async def ping(self) -> None:
        await self._call(self._r.ping)

    @property
    def _r(self) -> Redis:
        if self._client is None:
            raise RealtimeError("the redis realtime backend is not connected")
        return self._client

    async def _call(self, method: Any, *args: Any) -> Any:
        try:
            return await method(*args)
        except _UNAVAILABLE as exc:
            raise RealtimeUnavailable(f"redis at {self.server} is unavailable: {exc}") from None
        except RedisError as exc:
            raise RealtimeError(f"redis at {self.server} refused: {exc}") from None

    # --- the contract -------------------------------------------------------------

    async def publish(self, channel: str, message: bytes) -> None:
        key = self.key(check_channel(channel))
        await self._call(self._r.publish, key, check_message(message))

    async def _attach(self, sub: Subscription) -> None:
        _ = self._r  # not connected: say so now rather than time out
        state = self._states.get(sub.channel)
        if state is None:
            state = self._states[sub.channel] = _Channel()
        self._fanout.add(sub)
        if not state.confirmed:
            waiter = asyncio.get_running_loop().create_future()
            state.waiters.append(waiter)
            try:
                await self._subscribe(sub.channel, state)
                async with asyncio.timeout(self._timeout):
                    await waiter
            except BaseException as exc:
                sub._end()
                await self._detach(sub)
                if isinstance(exc, TimeoutError):
                    raise RealtimeUnavailable(
                        f"redis at {self.server} did not confirm a subscription "
                        f"to {sub.channel!r} within {self._timeout} s"
                    ) from None
                raise

    async def _detach(self, sub: Subscription) -> None:
        if not self._fanout.remove(sub):
            return
        state = self._states.pop(sub.channel, None)
        if state is not None:
            state.settle(RealtimeError("unsubscribed"))
        key = self.key(sub.channel)
        async with self._write_lock:
            # A subscription to the channel made meanwhile keeps the server's.
            if self._conn is None or sub.channel in self._states:
                return
            with contextlib.suppress(RedisError, OSError):
                await self._conn.send_command(b"UNSUBSCRIBE", key, check_health=False)

    async def _subscribe(self, channel: str, state: _Channel) -> None:
        key = self.key(channel)
        async with self._write_lock:
            conn = self._conn
            # Without a connection, or already asked on this one, the listener's
            # answer will do: it subscribes every channel when it connects.
            if conn is None or state.confirmed or state in self._inflight.get(key, ()):
                return
            self._inflight.setdefault(key, deque()).append(state)
            # A failed write breaks the connection; the listener then reconnects
            # and subscribes again.
            with contextlib.suppress(RedisError, OSError):
                await conn.send_command(b"SUBSCRIBE", key, check_health=False)

    # --- the listener -------------------------------------------------------------

    async def _listen(self) -> None:
        backoff = FIRST_BACKOFF
        while True:
            try:
                conn = await self._open()
                backoff = FIRST_BACKOFF
                await self._read(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The connection is gone (or never came): whatever was published
                # meanwhile is lost to this process's subscriptions, say so.
                had_connection = self._conn is not None
                await self._drop_connection()
                if had_connection:
                    log.warning(
                        "realtime.connection_lost",
                        server=self.server,
                        error=f"{exc.__class__.__name__}: {exc}",
                    )
                    for subs in self._fanout.channels.values():
                        for sub in subs:
                            sub.interruptions += 1
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def _open(self) -> AbstractConnection:
        """A new subscriber connection, subscribed to every channel with subscriptions."""
        pool = self._pool
        assert pool is not None
        # RESP2: the replies read below are plain arrays whatever the URL's protocol.
        conn = pool.connection_class(**{**pool.connection_kwargs, "protocol": 2})
        try:
            await conn.connect()
            async with self._write_lock:
                self._inflight = {}
                self._conn = conn
                keys = []
                for channel, state in self._states.items():
                    state.confirmed = False
                    keys.append(self.key(channel))
                    self._inflight.setdefault(keys[-1], deque()).append(state)
                if keys:
                    await conn.send_command(b"SUBSCRIBE", *keys, check_health=False)
        except BaseException:
            if self._conn is not conn:
                await conn.disconnect(nowait=True)
            raise
        return conn

    async def _read(self, conn: AbstractConnection) -> None:
        pinged = False
        while True:
            wait = self._timeout if pinged else IDLE_SECONDS
            reply = await conn.read_response(timeout=wait)
            if reply is None:
                if pinged:
                    raise _Dead(f"redis at {self.server} did not answer a ping in {wait} s")
                async with self._write_lock:
                    await conn.send_command(b"PING", check_health=False)
                pinged = True
                continue
            pinged = False
            self._dispatch(reply)

    def _dispatch(self, reply: Any) -> None:
        if not isinstance(reply, list) or len(reply) < 3:
            return  # a PONG, in either shape
        kind, key, payload = reply[0], reply[1], reply[2]
        if kind == b"message":
            channel = key[self._prefix_length :].decode()
            self._fanout.deliver(channel, payload)
        elif kind == b"subscribe":
            pending = self._inflight.get(key)
            state = pending.popleft() if pending else None
            if pending is not None and not pending:
                del self._inflight[key]
            channel = key[self._prefix_length :].decode()
            if state is not None and self._states.get(channel) is state:
                state.confirmed = True
                state.settle()

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        self._inflight = {}
        for state in self._states.values():
            state.confirmed = False
        if conn is not None:
            with contextlib.suppress(RedisError, OSError):
                await conn.disconnect(nowait=True)
