"""``RedisCache``: the ``Cache`` contract on Redis, or anything speaking its protocol.

Keys live under the URL's ``prefix`` (default ``sysdesign``) as
``{prefix}:cache:{key}``; ``?prefix=`` (empty) uses the keys as given, for
a server that holds nothing else. Expiry is the server's: TTLs are relative
and measured by its clock, so this class needs none.

Each operation is one round trip: ``get_many`` one MGET; ``set_many`` one
MSET, or with a TTL a MULTI/EXEC of ``SET ... PX``; ``incr`` with a TTL a
MULTI/EXEC of ``SET key 0 PX ttl NX`` and ``INCRBY`` (the key is created
with its TTL, and counted, atomically); ``compare_and_set`` a Lua script
that reads and writes in one step (``SET NX`` when expecting no key). TTLs
travel in whole milliseconds, rounded, at least 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import (
    BusyLoadingError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)

from sysdesign.blocks.cache.base import (
    Cache,
    CacheError,
    CacheStats,
    CacheUnavailable,
    NotAnInteger,
)
from sysdesign.platform.errors import ConfigurationError
from sysdesign.platform.redisurl import fail_fast_pool, redact, split_options

DEFAULT_PREFIX = "sysdesign"
DEFAULT_TIMEOUT = 0.25  # seconds: a dead or stuck server is reported, not waited for
DEFAULT_CONNECTIONS = 64  # per cache; ?max_connections= in the URL overrides it
# Errors that mean the server cannot answer now, as opposed to a wrong request.
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, BusyLoadingError, ReadOnlyError, OSError)
_UNAVAILABLE_REPLIES = ("OOM", "BUSY", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")
_NOT_AN_INTEGER = ("not an integer", "would overflow")

# KEYS[1]: the key. ARGV: expected value, new value, TTL in ms ('' for none).
# A key holding the expected value is replaced; anything else is left alone.
COMPARE_AND_SET = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[3] == '' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
"""


def _ms(ttl: float | None) -> int | None:
    if ttl is None:
        return None
    if not ttl > 0:
        raise ValueError(f"ttl must be > 0 seconds or None, not {ttl}")
    return max(1, round(ttl * 1000))


class RedisCache(Cache):
    """A cache on one Redis server (tested on Redis 7).

    Every method raises ``CacheUnavailable`` when the server cannot be
    reached, times out (``socket_timeout``, default 250 ms, which also bounds
    the wait for a free connection; one immediate reconnect, no other
    retries), or is loading, read-only or out of memory; ``NotAnInteger``
    from ``incr`` on a value that is not a 64-bit integer or would overflow
    one; ``CacheError`` for any other error reply (such as a key of another
    type); ``ValueError`` for a ``ttl`` that is not positive, before sending.
    """

    name = "redis"

    def __init__(
        self, url: str, *, prefix: str = DEFAULT_PREFIX, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self._url = url
        self._prefix = f"{prefix}:cache:" if prefix else ""
        self._timeout = timeout
        self._client: Redis | None = None
        self._cas: AsyncScript | None = None

    @classmethod
    def from_url(cls, url: str) -> RedisCache:
        """``redis[s]://[user:password@]host:port/db?prefix=NAME&socket_timeout=SECONDS``;
        other query parameters go to redis-py."""
        url, prefix, timeout = split_options(
            url, what="cache URL", prefix=DEFAULT_PREFIX, timeout=DEFAULT_TIMEOUT
        )
        return cls(url, prefix=prefix, timeout=timeout)

    def key(self, key: str) -> str:
        """The Redis key holding ``key``."""
        return self._prefix + key

    # --- lifecycle --------------------------------------------------------------

    @property
    def _r(self) -> Redis:
        if self._client is None:
            raise CacheError("the redis cache is not connected")
        return self._client

    async def connect(self) -> None:
        """Build the client and ping the server. ``ConfigurationError`` for a
        bad URL; ``CacheUnavailable`` when the server cannot be reached, and
        the cache is usable all the same: it answers once the server does."""
        if self._client is not None:
            return
        try:
            pool = fail_fast_pool(
                self._url, timeout=self._timeout, max_connections=DEFAULT_CONNECTIONS
            )
        except ValueError as exc:
            raise ConfigurationError(f"cache URL {redact(self._url)}: {exc}") from None
        self._client = Redis.from_pool(pool)
        self._cas = self._client.register_script(COMPARE_AND_SET)
        await self.ping()

    async def close(self) -> None:
        client, self._client, self._cas = self._client, None, None
        if client is not None:
            await client.aclose()

    async def ping(self) -> None:
        await self._call(self._r.ping)

    async def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(*args, **kwargs)
        except (RedisError, OSError) as exc:
            raise self._translate(exc) from None

    def _translate(self, exc: RedisError | OSError) -> CacheError:
        reason = " ".join(str(exc).split()) or exc.__class__.__name__
        # A failed command inside MULTI/EXEC comes back as "Command # n (...) of
        # pipeline caused error: REPLY": the reply is what classifies it.
        reply = reason.rpartition("caused error: ")[2]
        if isinstance(exc, _UNAVAILABLE) or (
            isinstance(exc, ResponseError) and reply.startswith(_UNAVAILABLE_REPLIES)
        ):
            return CacheUnavailable(f"redis at {redact(self._url)} is unavailable: {reason}")
        if isinstance(exc, ResponseError) and any(s in reply for s in _NOT_AN_INTEGER):
            return NotAnInteger(reply)
        return CacheError(f"redis at {redact(self._url)} refused: {reason}")

    # --- the contract -------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        value: bytes | None = await self._call(self._r.get, self.key(key))
        return value

    async def set(
        self,
        key: str,
        value: bytes,
        ttl: float | None = None,
        *,
        only_if_absent: bool = False,
        only_if_present: bool = False,
    ) -> bool:
        if only_if_absent and only_if_present:
            raise ValueError("only_if_absent and only_if_present exclude each other")
        reply = await self._call(
            self._r.set,
            self.key(key),
            value,
            px=_ms(ttl),
            nx=only_if_absent,
            xx=only_if_present,
        )
        return bool(reply)

    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        removed: int = await self._call(self._r.delete, *(self.key(k) for k in keys))
        return removed

    async def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        names = list(dict.fromkeys(keys))
        if not names:
            return {}
        values = await self._call(self._r.mget, [self.key(k) for k in names])
        return {k: v for k, v in zip(names, values, strict=True) if v is not None}

    async def set_many(self, items: Mapping[str, bytes], ttl: float | None = None) -> None:
        ms = _ms(ttl)
        if not items:
            return
        if ms is None:
            await self._call(self._r.mset, {self.key(k): v for k, v in items.items()})
            return
        pipe = self._r.pipeline(transaction=True)
        for key, value in items.items():
            pipe.set(self.key(key), value, px=ms)
        await self._call(pipe.execute)

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        ms = _ms(ttl)
        name = self.key(key)
        if ms is None:
            result: int = await self._call(self._r.incrby, name, amount)
            return result
        pipe = self._r.pipeline(transaction=True)
        pipe.set(name, b"0", px=ms, nx=True)
        pipe.incrby(name, amount)
        _, result = await self._call(pipe.execute)
        return result

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None = None
    ) -> bool:
        ms = _ms(ttl)
        if expected is None:
            return bool(await self._call(self._r.set, self.key(key), value, px=ms, nx=True))
        if self._cas is None:
            raise CacheError("the redis cache is not connected")
        reply = await self._call(
            self._cas, keys=[self.key(key)], args=[expected, value, "" if ms is None else ms]
        )
        return reply == 1

    async def ttl(self, key: str) -> float | None:
        ms: int = await self._call(self._r.pttl, self.key(key))
        if ms == -2:
            raise KeyError(key)
        return None if ms == -1 else ms / 1000

    async def stats(self) -> CacheStats:
        """The server's figures (every key on it, not only this prefix's):
        keyspace hits and misses, evicted and expired keys, the keys in this
        database, and ``used_memory``."""
        pipe = self._r.pipeline(transaction=False)
        pipe.info("stats")
        pipe.info("memory")
        pipe.dbsize()
        counters, memory, keys = await self._call(pipe.execute)
        return CacheStats(
            hits=int(counters.get("keyspace_hits", 0)),
            misses=int(counters.get("keyspace_misses", 0)),
            evictions=int(counters.get("evicted_keys", 0)),
            expirations=int(counters.get("expired_keys", 0)),
            keys=int(keys),
            used_bytes=int(memory.get("used_memory", 0)),
        )
