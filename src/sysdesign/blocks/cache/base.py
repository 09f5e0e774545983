"""The cache contract: bytes by key, with expiry, bounded memory, and atomic updates.

A cache may forget any key at any time (eviction under its memory budget,
expiry, a node restart); callers treat a miss as "ask the source". Values
are bytes; ``CacheAside`` and callers encode their own objects. Every
operation on one key is atomic with respect to the others on that key:
``incr`` never loses an update, ``compare_and_set`` succeeds for exactly one
of several racing writers.

Backends: ``memory://`` (one process: LRU or LFU eviction under a byte
budget, lazy and active expiry), ``redis://`` (Redis or anything speaking
its protocol, such as ``sysdesign cache-node``), and ``sysdesign://h1,h2``
(a client-side consistent-hashing cluster of cache nodes).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


class CacheError(Exception):
    """Base class of the cache's own errors."""


class CacheUnavailable(CacheError):
    """The cache server could not be reached; callers usually fall back to the source."""


class NotAnInteger(CacheError, ValueError):
    """``incr`` on a value that is not a base-10 signed 64-bit integer in
    canonical form (as Redis reads one: no ``+``, spaces or leading zeros),
    or whose result would not fit in one."""


@dataclass
class CacheStats:
    """Counters since start: reads that found a value (``hits``) or not
    (``misses``), keys dropped for the memory budget (``evictions``) or
    for their TTL (``expirations``); and now: the ``keys`` held and the
    ``used_bytes`` they take (for the memory backend its accounted cost,
    for Redis the server's ``used_memory``)."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    expirations: int = 0
    keys: int = 0
    used_bytes: int = 0

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class Cache(ABC):
    """Keys are str; values bytes. ``ttl`` is seconds (float, > 0: anything
    else raises ``ValueError`` before any change); ``None`` keeps the key until
    it is evicted or deleted. Writing a key without ``ttl`` removes its
    expiry, as Redis's SET does (``incr`` keeps it). ``get_many`` and
    ``set_many`` are one round trip on a remote backend."""

    name: str = "?"

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    @abstractmethod
    async def get(self, key: str) -> bytes | None: ...

    @abstractmethod
    async def set(
        self,
        key: str,
        value: bytes,
        ttl: float | None = None,
        *,
        only_if_absent: bool = False,
        only_if_present: bool = False,
    ) -> bool:
        """Store ``value``; ``False`` when a condition (NX/XX) kept it from
        being set. Both conditions at once raise ``ValueError``."""

    @abstractmethod
    async def delete(self, *keys: str) -> int:
        """Remove keys; returns how many existed."""

    @abstractmethod
    async def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        """The keys that are present, with their values (misses are absent)."""

    @abstractmethod
    async def set_many(self, items: Mapping[str, bytes], ttl: float | None = None) -> None: ...

    @abstractmethod
    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add ``amount`` to the integer at ``key`` (absent: 0) and return the
        result; ``ttl`` applies only when the key is created. Raises
        ``NotAnInteger`` when the value is not one."""

    @abstractmethod
    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None = None
    ) -> bool:
        """Set ``value`` only if the current value is ``expected`` (``None``:
        only if absent); ``True`` if it was set. The key then has ``ttl``,
        or no expiry, as after ``set``."""

    @abstractmethod
    async def ttl(self, key: str) -> float | None:
        """Seconds until ``key`` expires; ``None`` if it has no expiry. Raises
        ``KeyError`` when the key is absent."""

    async def stats(self) -> CacheStats:
        return CacheStats()
