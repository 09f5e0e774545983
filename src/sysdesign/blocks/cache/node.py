"""``CacheNode``: a ``MemoryStore`` served over RESP, so Redis clients can use it.

One asyncio ``Protocol`` per connection. Each chunk received is parsed for
every complete command, the commands run against the store in order, and
their replies go out in one ``transport.write``: a pipeline of n commands
costs one write, not n. Commands run to completion without awaiting, so
each is atomic, as in Redis.

Replies, errors included, are Redis's own for the commands served (the
string commands, TTLs, INFO, CONFIG GET, and what redis-py, redis-cli and
redis-benchmark send when they connect). ``HELLO 2`` and ``HELLO 3`` are
both accepted, since redis-py 8 opens with ``HELLO 3`` by default and does
not fall back to RESP2 on an error; under RESP3 only the map replies (HELLO,
CONFIG GET) change form, the rest being valid RESP3 as they are.

A client that breaks the protocol has the commands before the break served,
then gets ``-ERR Protocol error: ...`` and is disconnected; any other failure
while serving one client is answered with an error to that client only: the
server keeps running.

Keys are bytes on the wire and ``str`` in the store, decoded as Latin-1:
every byte string maps to exactly one ``str`` and back, whatever it holds.
Time for expiry is the injected clock's ``time()``; a background task
reclaims expired keys nobody reads (active expiry).

This module holds the server, the read loop, dispatch and the hot path
(GET and SET); the other handlers come from two mixins, ``KeyCommands``
(``nodecommands``) and ``ServerCommands`` (``nodeadmin``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from typing import cast

from sysdesign.blocks.cache import parse_size, resp
from sysdesign.blocks.cache.base import NotAnInteger
from sysdesign.blocks.cache.nodeadmin import VERSION, ServerCommands
from sysdesign.blocks.cache.nodecommands import (
    OOM_ERROR,
    SYNTAX_ERROR,
    CommandError,
    KeyCommands,
    key_text,
    ttl_ms_argument,
)
from sysdesign.blocks.cache.store import POLICIES, EntryTooLarge, MemoryStore
from sysdesign.platform.clock import Clock, SystemClock

__all__ = ["VERSION", "CacheNode", "CommandError", "main_node"]

_HIGH_WATER = 4 * 1024 * 1024  # output buffered for one client before we stop reading it
_OOM_REPLY = resp.error(OOM_ERROR)
_QUEUED = b"+QUEUED\r\n"
# Run, not queued, after MULTI: they act on the transaction or the connection itself.
_TRANSACTION = frozenset((b"multi", b"exec", b"discard", b"quit"))


class _Connection(asyncio.Protocol):
    """One client: its parser, its name, and flow control of its replies."""

    def __init__(self, node: CacheNode) -> None:
        self.node = node
        self.parser = resp.RespParser()
        self.transport: asyncio.Transport | None = None
        self.name = b""
        self.closing = False
        self.resp3 = False  # switched by HELLO 3; only map replies differ here
        self.queued: list[list[bytes]] | None = None  # commands after MULTI, until EXEC
        self.queue_failed = False  # a queued command was refused: EXEC aborts

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, only alike.
        self.transport = transport = cast(asyncio.Transport, transport)
        transport.set_write_buffer_limits(high=_HIGH_WATER)
        self.node._connections.add(self)
        self.node.connections_received += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.node._connections.discard(self)

    # A client that pipelines without reading its replies would grow our
    # output buffer without bound: stop reading it until it catches up.
    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or self.closing:
            return
        replies: list[bytes] = []
        node = self.node
        execute, direct = node.execute, node._direct
        try:
            for command in self.parser.parse(data):
                # GET k and SET k v outside MULTI: execute() would look them up,
                # find the arity right and call the handler; this saves that call,
                # a tenth of a pipelined command's cost. Whatever execute() comes
                # to do for every command must be done here too.
                handler = direct.get(command[0])
                if handler is not None and handler[0] == len(command) and self.queued is None:
                    node.commands_processed += 1
                    try:
                        replies.append(handler[1](command, self))
                    except EntryTooLarge:
                        replies.append(_OOM_REPLY)
                    continue
                replies.append(execute(command, self))
                if self.closing:
                    break
            if self.parser.error is not None and not self.closing:
                raise self.parser.error
        except resp.ProtocolError as exc:
            replies.append(resp.error(f"ERR Protocol error: {exc}"))
            self.closing = True
        except Exception as exc:  # a bug must cost this client, never the server
            replies.append(resp.error(f"ERR internal error: {type(exc).__name__}"))
            self.closing = True
        if replies:
            transport.write(b"".join(replies))
        if self.closing:
            transport.close()


class CacheNode(KeyCommands, ServerCommands):
    """A RESP cache server on ``host:port`` (port 0: any free port, read
    ``port`` after ``start``), evicting under ``max_bytes`` (0: unbounded) by
    ``policy``. Use ``async with`` or ``start``/``close``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 6380,
        max_bytes: int = 0,
        policy: str = "allkeys-lru",
        clock: Clock | None = None,
        *,
        expire_interval: float = 0.1,
        expire_budget: int = 200,
    ) -> None:
        self.host = host
        self.port = port
        self.store = MemoryStore(max_bytes, policy)
        self.clock = clock or SystemClock()
        self.expire_interval = expire_interval
        self.expire_budget = expire_budget
        self.commands_processed = 0
        self.connections_received = 0
        self._connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._started = 0.0
        self._table = {
            b"ping": (-1, self._ping), b"echo": (2, self._echo), b"get": (2, self._get),
            b"set": (-3, self._set), b"del": (-2, self._del), b"exists": (-2, self._exists),
            b"expire": (3, self._expire), b"pexpire": (3, self._pexpire),
            b"persist": (2, self._persist), b"ttl": (2, self._ttl), b"pttl": (2, self._pttl),
            b"incr": (2, self._incr), b"incrby": (3, self._incrby), b"decr": (2, self._decr),
            b"decrby": (3, self._decrby), b"mget": (-2, self._mget), b"mset": (-3, self._mset),
            b"append": (3, self._append), b"strlen": (2, self._strlen),
            b"getdel": (2, self._getdel), b"dbsize": (1, self._dbsize),
            b"flushdb": (-1, self._flush), b"flushall": (-1, self._flush),
            b"info": (-1, self._info), b"config": (-2, self._config),
            b"command": (-1, self._command), b"client": (-2, self._client),
            b"select": (2, self._select), b"quit": (-1, self._quit), b"hello": (-1, self._hello),
            b"multi": (1, self._multi), b"exec": (1, self._exec), b"discard": (1, self._discard),
        }  # fmt: skip
        # The commands the read loop runs itself (see _Connection.data_received)
        # at this arity; their handlers can raise nothing but EntryTooLarge there.
        self._direct = {
            spelling: (arity, handler)
            for spelling, arity, handler in [
                (b"GET", 2, self._get), (b"get", 2, self._get),
                (b"SET", 3, self._set), (b"set", 3, self._set),
            ]
        }  # fmt: skip
        # Clients send names in upper or in lower case: both spellings are keys
        # here, so that a command costs a lookup and no lower().
        self._lookup = {
            spelling: (name, arity, handler)
            for name, (arity, handler) in self._table.items()
            for spelling in (name, name.upper())
        }

    @property
    def clock(self) -> Clock:
        return self._clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        self._clock = clock
        # GET and SET read the time through _time: time.time itself for the
        # system clock, saving a Python call per command.
        self._time = time.time if type(clock) is SystemClock else clock.time

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._started = self.clock.monotonic()
        self._sweeper = asyncio.create_task(self._sweep(), name="cache-node-expiry")

    async def close(self) -> None:
        """Stop listening, drop every client, and stop active expiry."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._server is not None:
            self._server.close()
            for connection in list(self._connections):
                if connection.transport is not None:
                    connection.transport.abort()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> CacheNode:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _sweep(self) -> None:
        delay = self.expire_interval
        while True:
            await asyncio.sleep(delay)
            # Bounded work per turn; while a full budget of keys had expired,
            # go again as soon as the clients have had a turn.
            removed = self.store.expire_some(self.clock.time(), self.expire_budget)
            delay = 0 if removed == self.expire_budget else self.expire_interval

    def execute(self, args: list[bytes], connection: _Connection) -> bytes:
        """One command's encoded reply; errors become error replies."""
        self.commands_processed += 1
        entry = self._lookup.get(args[0]) or self._lookup.get(args[0].lower())
        if entry is None:
            if connection.queued is not None:
                connection.queue_failed = True
            shown = " ".join(f"'{a[:128].decode('utf-8', 'replace')}'" for a in args[1:17])
            return resp.error(
                f"ERR unknown command '{args[0][:128].decode('utf-8', 'replace')}', "
                f"with args beginning with: {shown}"
            )
        name, arity, handler = entry
        if (arity > 0 and len(args) != arity) or len(args) < -arity:
            if connection.queued is not None:
                connection.queue_failed = True
            return resp.error(f"ERR wrong number of arguments for '{name.decode()}' command")
        if connection.queued is not None and name not in _TRANSACTION:
            connection.queued.append(args)
            return _QUEUED
        try:
            return handler(args, connection)
        except CommandError as exc:
            return resp.error(str(exc))
        except NotAnInteger as exc:
            return resp.error(f"ERR {exc}")
        except EntryTooLarge:
            return _OOM_REPLY

    # --- GET and SET; the other handlers: KeyCommands, ServerCommands ---------

    def _get(self, args: list[bytes], _: _Connection) -> bytes:
        # resp.bulk and key_text written out: GET and SET are most of a cache's traffic.
        value = self.store.get(args[1].decode("latin-1"), self._time())
        return resp.NULL if value is None else b"$%d\r\n%s\r\n" % (len(value), value)

    def _set(self, args: list[bytes], _: _Connection) -> bytes:
        now = self._time()
        if len(args) == 3:  # no options: nothing to parse, and it always writes
            self.store.put(args[1].decode("latin-1"), args[2], now)
            return resp.OK
        ttl_ms: int | None = None
        nx = xx = get = keep_ttl = False
        compare: bytes | None = None  # IFEQ: set only over this value, as Redis 8.4 does
        i = 3
        while i < len(args):
            option = args[i].upper()
            has_value = i + 1 < len(args)
            if option in (b"EX", b"PX", b"EXAT", b"PXAT") and has_value and ttl_ms is None:
                if keep_ttl:
                    raise CommandError(SYNTAX_ERROR)
                unit = 1 if option in (b"PX", b"PXAT") else 1000
                ttl_ms = ttl_ms_argument(args[i + 1], unit, "set")
                if ttl_ms <= 0:
                    raise CommandError("ERR invalid expire time in 'set' command")
                if option in (b"EXAT", b"PXAT"):
                    ttl_ms -= int(now * 1000)
                    if ttl_ms <= 0:  # already past: the key is written and gone at once
                        ttl_ms = 0
                i += 2
            elif option == b"NX" and not xx and compare is None:
                nx, i = True, i + 1
            elif option == b"XX" and not nx and compare is None:
                xx, i = True, i + 1
            elif option == b"IFEQ" and has_value and not (nx or xx or compare is not None):
                compare, i = args[i + 1], i + 2
            elif option == b"GET":
                get, i = True, i + 1
            elif option == b"KEEPTTL" and ttl_ms is None:
                keep_ttl, i = True, i + 1
            else:
                raise CommandError(SYNTAX_ERROR)
        key = key_text(args[1])
        old = self.store.get(key, now) if get or compare is not None else None
        if compare is not None and old != compare:
            return resp.bulk(old) if get else resp.NULL
        if ttl_ms == 0:
            done = self.store.set(key, args[2], now, nx=nx, xx=xx)
            if done:
                self.store.delete(key, now=now)
        else:
            ttl = None if ttl_ms is None else ttl_ms / 1000
            done = self.store.set(key, args[2], now, ttl, nx=nx, xx=xx, keep_ttl=keep_ttl)
        if get:
            return resp.bulk(old)
        return resp.OK if done else resp.NULL


async def _serve(node: CacheNode) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with node:
        print(f"cache node on {node.host}:{node.port} ({node.store.policy}, "
              f"maxmemory {node.store.max_bytes} bytes)", flush=True)  # fmt: skip
        await stop.wait()


def main_node(argv: list[str] | None = None) -> None:
    """``sysdesign cache-node``: serve a cache over RESP until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="sysdesign cache-node", description=main_node.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6380)
    parser.add_argument("--maxmemory", type=parse_size, default="256mb", help="0: unbounded")
    parser.add_argument("--policy", choices=POLICIES, default="allkeys-lru")
    options = parser.parse_args(argv)
    node = CacheNode(options.host, options.port, options.maxmemory, options.policy)
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(node))
    else:
        uvloop.run(_serve(node))


if __name__ == "__main__":
    main_node()
