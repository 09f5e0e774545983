"""The commands of ``CacheNode`` about the server and the connection rather
than keys: PING, ECHO, SELECT, MULTI/EXEC/DISCARD, QUIT, HELLO, CLIENT,
CONFIG, COMMAND and INFO.

``ServerCommands`` is a mixin, as ``KeyCommands`` is: ``CacheNode`` inherits
the handlers and its dispatch table holds them as bound methods.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

from sysdesign.blocks.cache import resp
from sysdesign.blocks.cache.nodecommands import SYNTAX_ERROR, CommandError, int_argument
from sysdesign.blocks.cache.store import MemoryStore
from sysdesign.platform.clock import Clock

if TYPE_CHECKING:
    from sysdesign.blocks.cache.node import _Connection

VERSION = "7.2.0"  # the Redis version reported: clients gate features on it

_KEYLESS = frozenset(
    b"ping echo dbsize flushdb flushall info config command client select quit "
    b"multi exec discard".split()
)


def _unknown_subcommand(args: list[bytes], command: str) -> str:
    sub = args[1][:128].decode("utf-8", "replace") if len(args) > 1 else ""
    return f"ERR unknown subcommand '{sub}'. Try {command} HELP."


class ServerCommands:
    """Handlers that read the node's state (its command table, connections,
    counters, settings) and the client's connection; they raise
    ``CommandError``, which ``CacheNode.execute`` turns into an error reply."""

    port: int
    store: MemoryStore
    clock: Clock
    commands_processed: int
    connections_received: int
    _connections: set[_Connection]
    _started: float
    _table: dict[bytes, tuple[int, Callable[[list[bytes], _Connection], bytes]]]
    execute: Callable[[list[bytes], _Connection], bytes]

    def _ping(self, args: list[bytes], _: _Connection) -> bytes:
        if len(args) > 2:
            raise CommandError("ERR wrong number of arguments for 'ping' command")
        return resp.PONG if len(args) == 1 else resp.bulk(args[1])

    def _echo(self, args: list[bytes], _: _Connection) -> bytes:
        return resp.bulk(args[1])

    def _select(self, args: list[bytes], _: _Connection) -> bytes:
        if int_argument(args[1]) != 0:
            raise CommandError("ERR DB index is out of range")
        return resp.OK

    # A transaction's commands are queued, then run one after the other with
    # no await in between: nothing else runs on the node until EXEC returns.
    def _multi(self, args: list[bytes], connection: _Connection) -> bytes:
        if connection.queued is not None:
            raise CommandError("ERR MULTI calls can not be nested")
        connection.queued, connection.queue_failed = [], False
        return resp.OK

    def _exec(self, args: list[bytes], connection: _Connection) -> bytes:
        queued, failed = connection.queued, connection.queue_failed
        if queued is None:
            raise CommandError("ERR EXEC without MULTI")
        connection.queued, connection.queue_failed = None, False
        if failed:
            raise CommandError("EXECABORT Transaction discarded because of previous errors.")
        return resp.array([self.execute(command, connection) for command in queued])

    def _discard(self, args: list[bytes], connection: _Connection) -> bytes:
        if connection.queued is None:
            raise CommandError("ERR DISCARD without MULTI")
        connection.queued, connection.queue_failed = None, False
        return resp.OK

    def _quit(self, args: list[bytes], connection: _Connection) -> bytes:
        connection.closing = True
        return resp.OK

    def _hello(self, args: list[bytes], connection: _Connection) -> bytes:
        """Protocol 2 or 3: redis-py 8 opens with ``HELLO 3`` and does not fall
        back, so both are served. In RESP3 the replies here are RESP2's but
        for maps (HELLO, CONFIG GET), which every RESP3 client reads alike."""
        if len(args) > 1:
            try:
                version = int(args[1])
            except ValueError:
                raise CommandError(
                    "ERR Protocol version is not an integer or out of range"
                ) from None
            if version not in (2, 3):
                raise CommandError("NOPROTO unsupported protocol version")
            i = 2
            while i < len(args):
                if args[i].upper() == b"SETNAME" and i + 1 < len(args):
                    self._client([b"CLIENT", b"SETNAME", args[i + 1]], connection)
                    i += 2
                else:
                    raise CommandError(SYNTAX_ERROR)
            connection.resp3 = version == 3
        fields = [
            (b"server", resp.bulk(b"redis")),
            (b"version", resp.bulk(VERSION.encode())),
            (b"proto", resp.integer(3 if connection.resp3 else 2)),
            (b"id", resp.integer(id(connection) & 0xFFFFFFFF)),
            (b"mode", resp.bulk(b"standalone")),
            (b"role", resp.bulk(b"master")),
            (b"modules", resp.EMPTY_ARRAY),
        ]
        return resp.mapping(((resp.bulk(k), v) for k, v in fields), connection.resp3)

    def _client(self, args: list[bytes], connection: _Connection) -> bytes:
        sub = args[1].lower()
        if sub == b"setname" and len(args) == 3:
            if any(c <= 32 or c > 126 for c in args[2]):
                raise CommandError(
                    "ERR Client names cannot contain spaces, newlines or special characters."
                )
            connection.name = args[2]
            return resp.OK
        if sub == b"getname" and len(args) == 2:
            return resp.bulk(connection.name or None)
        if sub == b"setinfo" and len(args) == 4:
            return resp.OK
        if sub == b"id" and len(args) == 2:
            return resp.integer(id(connection) & 0xFFFFFFFF)
        raise CommandError(_unknown_subcommand(args, "CLIENT"))

    def _config(self, args: list[bytes], connection: _Connection) -> bytes:
        if args[1].lower() != b"get" or len(args) < 3:
            raise CommandError(_unknown_subcommand(args, "CONFIG"))
        settings = {
            "maxmemory": str(self.store.max_bytes),
            "maxmemory-policy": self.store.policy,
            "save": "",
            "appendonly": "no",
            "databases": "1",
        }
        found: dict[str, str] = {}
        for pattern in args[2:]:
            text = pattern.decode("latin-1").lower()
            found.update((k, v) for k, v in settings.items() if fnmatchcase(k, text))
        pairs = ((resp.bulk(k.encode()), resp.bulk(v.encode())) for k, v in found.items())
        return resp.mapping(pairs, connection.resp3)

    def _command(self, args: list[bytes], _: _Connection) -> bytes:
        sub = args[1].lower() if len(args) > 1 else b""
        if sub == b"count":
            return resp.integer(len(self._table))
        if sub == b"docs":
            # Clients use the docs for hints only; none is fine.
            return resp.EMPTY_ARRAY
        if sub in (b"", b"info"):
            names = list(self._table) if not sub else [a.lower() for a in args[2:]]
            return resp.array(self._command_info(name) for name in names)
        raise CommandError(_unknown_subcommand(args, "COMMAND"))

    def _command_info(self, name: bytes) -> bytes:
        entry = self._table.get(name)
        if entry is None:
            return resp.NULL_ARRAY
        arity = entry[0]
        keyed = name not in _KEYLESS
        last = -1 if arity < 0 and name in (b"del", b"exists", b"mget") else 1
        return resp.array(
            [
                resp.bulk(name),
                resp.integer(arity),
                resp.EMPTY_ARRAY,
                resp.integer(1 if keyed else 0),
                resp.integer(last if keyed else 0),
                resp.integer((2 if name == b"mset" else 1) if keyed else 0),
                # Redis 7's ACL categories, tips, key specs and subcommands: none here.
                *[resp.EMPTY_ARRAY] * 4,
            ]
        )

    def _info(self, args: list[bytes], _: _Connection) -> bytes:
        wanted = {a.decode("latin-1").lower() for a in args[1:]}
        if not wanted or wanted & {"all", "everything", "default"}:
            wanted = {"server", "clients", "memory", "stats", "keyspace"}
        stats = self.store.stats
        sections = {
            "server": {
                "redis_version": VERSION,
                "redis_mode": "standalone",
                "sysdesign_node": "1",
                "process_id": os.getpid(),
                "tcp_port": self.port,
                "uptime_in_seconds": int(self.clock.monotonic() - self._started),
            },
            "clients": {"connected_clients": len(self._connections)},
            "memory": {
                "used_memory": stats.used_bytes,
                "maxmemory": self.store.max_bytes,
                "maxmemory_policy": self.store.policy,
            },
            "stats": {
                "total_connections_received": self.connections_received,
                "total_commands_processed": self.commands_processed,
                "keyspace_hits": stats.hits,
                "keyspace_misses": stats.misses,
                "evicted_keys": stats.evictions,
                "expired_keys": stats.expirations,
            },
            # Redis lists a database only when it holds keys.
            # expires and avg_ttl are not tracked by the store; reported as 0.
            "keyspace": {"db0": f"keys={stats.keys},expires=0,avg_ttl=0"} if stats.keys else {},
        }
        lines: list[str] = []
        for title, fields in sections.items():
            if title in wanted:
                if lines:
                    lines.append("")
                lines.append(f"# {title.capitalize()}")
                lines.extend(f"{k}:{v}" for k, v in fields.items())
        return resp.bulk("\r\n".join(lines).encode() + (b"\r\n" if lines else b""))
