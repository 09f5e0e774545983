"""The key commands of ``CacheNode`` (all but GET and SET), and what every
command handler shares: ``CommandError`` and the argument parsers.

``KeyCommands`` is a mixin: ``CacheNode`` inherits its handlers, so the
dispatch table holds them as bound methods and calling one costs what it
did when they were written in ``CacheNode`` itself. GET and SET stay in
``node.py``, beside the read loop that calls them directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sysdesign.blocks.cache import resp
from sysdesign.blocks.cache.base import NotAnInteger
from sysdesign.blocks.cache.store import MemoryStore, entry_cost, parse_int
from sysdesign.platform.clock import Clock

if TYPE_CHECKING:
    from sysdesign.blocks.cache.node import _Connection

OOM_ERROR = "OOM command not allowed when used memory > 'maxmemory'."
SYNTAX_ERROR = "ERR syntax error"
_NOT_INT = "ERR value is not an integer or out of range"


class CommandError(Exception):
    """A command failed; the message is the whole error reply, code first."""


def key_text(raw: bytes) -> str:
    """A key as the store holds it: Latin-1 maps every byte string to one ``str``."""
    return raw.decode("latin-1")


def int_argument(raw: bytes) -> int:
    """An integer argument; ``CommandError`` with Redis's reply when it is not one."""
    try:
        return parse_int(raw)
    except NotAnInteger:
        raise CommandError(_NOT_INT) from None


def ttl_ms_argument(raw: bytes, unit_ms: int, command: str) -> int:
    """A relative expiry in milliseconds, checked as Redis checks it."""
    value = int_argument(raw)
    if value > (2**63 - 1) // unit_ms or value < -(2**63) // unit_ms:
        raise CommandError(f"ERR invalid expire time in '{command}' command")
    return value * unit_ms


class KeyCommands:
    """DEL, EXISTS, the TTL commands, the counters, MGET/MSET, APPEND, STRLEN,
    GETDEL, DBSIZE and FLUSHDB/FLUSHALL, run against ``store`` at ``clock``'s
    time. Handlers raise ``CommandError`` (or the store's ``NotAnInteger`` and
    ``EntryTooLarge``); ``CacheNode.execute`` turns those into error replies."""

    store: MemoryStore
    clock: Clock

    def _del(self, args: list[bytes], _: _Connection) -> bytes:
        return resp.integer(self.store.delete(*map(key_text, args[1:]), now=self.clock.time()))

    def _exists(self, args: list[bytes], _: _Connection) -> bytes:
        return resp.integer(self.store.exists(*map(key_text, args[1:]), now=self.clock.time()))

    def _expire_ms(self, key: bytes, ttl_ms: int) -> bytes:
        return resp.integer(self.store.expire(key_text(key), ttl_ms / 1000, self.clock.time()))

    def _expire(self, args: list[bytes], _: _Connection) -> bytes:
        return self._expire_ms(args[1], ttl_ms_argument(args[2], 1000, "expire"))

    def _pexpire(self, args: list[bytes], _: _Connection) -> bytes:
        return self._expire_ms(args[1], ttl_ms_argument(args[2], 1, "pexpire"))

    def _persist(self, args: list[bytes], _: _Connection) -> bytes:
        return resp.integer(self.store.persist(key_text(args[1]), self.clock.time()))

    def _remaining_ms(self, key: bytes) -> int:
        """Milliseconds left; -1 without expiry, -2 when absent (Redis's codes)."""
        try:
            left = self.store.ttl(key_text(key), self.clock.time())
        except KeyError:
            return -2
        return -1 if left is None else max(0, round(left * 1000))

    def _ttl(self, args: list[bytes], _: _Connection) -> bytes:
        ms = self._remaining_ms(args[1])
        return resp.integer(ms if ms < 0 else (ms + 500) // 1000)

    def _pttl(self, args: list[bytes], _: _Connection) -> bytes:
        return resp.integer(self._remaining_ms(args[1]))

    def _add(self, key: bytes, amount: int) -> bytes:
        return resp.integer(self.store.incr_by(key_text(key), amount, self.clock.time()))

    def _incr(self, args: list[bytes], _: _Connection) -> bytes:
        return self._add(args[1], 1)

    def _decr(self, args: list[bytes], _: _Connection) -> bytes:
        return self._add(args[1], -1)

    def _incrby(self, args: list[bytes], _: _Connection) -> bytes:
        return self._add(args[1], int_argument(args[2]))

    def _decrby(self, args: list[bytes], _: _Connection) -> bytes:
        amount = int_argument(args[2])
        if amount == -(2**63):
            raise CommandError("ERR decrement would overflow")
        return self._add(args[1], -amount)

    def _mget(self, args: list[bytes], _: _Connection) -> bytes:
        now, get = self.clock.time(), self.store.get
        return resp.bulk_array(get(key_text(key), now) for key in args[1:])

    def _mset(self, args: list[bytes], _: _Connection) -> bytes:
        if len(args) % 2 == 0:
            raise CommandError("ERR wrong number of arguments for 'mset' command")
        budget = self.store.max_bytes
        if budget and any(
            entry_cost(key_text(args[i]), args[i + 1]) > budget for i in range(1, len(args), 2)
        ):
            raise CommandError(OOM_ERROR)  # before any write: MSET is all or nothing
        now = self.clock.time()
        for i in range(1, len(args), 2):
            self.store.set(key_text(args[i]), args[i + 1], now)
        return resp.OK

    def _append(self, args: list[bytes], _: _Connection) -> bytes:
        return resp.integer(self.store.append(key_text(args[1]), args[2], self.clock.time()))

    def _strlen(self, args: list[bytes], _: _Connection) -> bytes:
        return resp.integer(self.store.strlen(key_text(args[1]), self.clock.time()))

    def _getdel(self, args: list[bytes], _: _Connection) -> bytes:
        return resp.bulk(self.store.getdel(key_text(args[1]), self.clock.time()))

    def _dbsize(self, args: list[bytes], _: _Connection) -> bytes:
        return resp.integer(len(self.store))

    def _flush(self, args: list[bytes], _: _Connection) -> bytes:
        if len(args) > 2 or (len(args) == 2 and args[1].upper() not in (b"ASYNC", b"SYNC")):
            raise CommandError(SYNTAX_ERROR)
        self.store.flush()
        return resp.OK
