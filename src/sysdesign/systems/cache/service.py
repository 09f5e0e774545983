"""``KeyValueService``: the cache's operations for one caller, in that caller's namespace.

Every key a caller names is stored as ``u<user id>:<key>``: two accounts can
use the same key and never see each other's values. The namespace is added
here and nowhere else, so no route can forget it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sysdesign.blocks.cache import Cache, CacheStats
from sysdesign.systems.cache.domain import (
    KEY_ABSENT,
    KEY_EXISTS,
    PreconditionFailed,
    WriteConditions,
)

# A plain write tries "create", then "replace", to tell which one happened. When
# another writer deletes and recreates the key between the two, try again; past
# this many rounds, give up telling and write.
_WRITE_ROUNDS = 3


@dataclass(frozen=True, slots=True)
class Entry:
    value: bytes
    ttl: float | None  # seconds left; None: no expiry


class KeyValueService:
    """The cache seen by user ``user_id``. Errors are the cache's
    (``CacheUnavailable``, ``NotAnInteger``, ``EntryTooLarge``...) and
    ``PreconditionFailed`` for a write whose conditions do not hold."""

    def __init__(self, cache: Cache, user_id: int) -> None:
        self._cache = cache
        self._prefix = f"u{user_id}:"

    def _key(self, key: str) -> str:
        return self._prefix + key

    def stored_name(self, key: str) -> str:
        """The name the cache holds the caller's ``key`` under."""
        return self._key(key)

    async def get(self, key: str) -> Entry | None:
        name = self._key(key)
        value = await self._cache.get(name)
        if value is None:
            return None
        try:
            ttl = await self._cache.ttl(name)
        except KeyError:
            return None  # expired or deleted since the read: it is gone now
        return Entry(value, ttl)

    async def put(
        self, key: str, value: bytes, ttl: float | None, conditions: WriteConditions
    ) -> bool:
        """Store ``value`` under ``conditions``; True if the key was created,
        False if it was replaced. ``PreconditionFailed`` when a condition did
        not hold, including a value that changed between the check and the write."""
        name = self._key(key)
        if conditions.on_value:
            current = await self._cache.get(name)
            conditions.allows(current)
            # Atomic on every backend: the write happens only if nobody changed
            # the value since it was checked.
            if not await self._cache.compare_and_set(name, current, value, ttl):
                raise PreconditionFailed("the value changed while it was being written")
            return current is None
        for _ in range(_WRITE_ROUNDS):
            if not conditions.only_if_present:
                if await self._cache.set(name, value, ttl, only_if_absent=True):
                    return True
                if conditions.only_if_absent:
                    raise PreconditionFailed(KEY_EXISTS)
            if await self._cache.set(name, value, ttl, only_if_present=True):
                return False
            if conditions.only_if_present:
                raise PreconditionFailed(KEY_ABSENT)
        await self._cache.set(name, value, ttl)
        return False

    async def delete(self, key: str) -> bool:
        """True if the key existed."""
        return await self._cache.delete(self._key(key)) > 0

    async def incr(self, key: str, amount: int, ttl: float | None) -> int:
        return await self._cache.incr(self._key(key), amount, ttl)

    async def get_many(self, keys: Iterable[str]) -> dict[str, bytes | None]:
        """Every key asked for, in order, with ``None`` for a miss."""
        wanted = list(dict.fromkeys(keys))
        found = await self._cache.get_many(self._key(k) for k in wanted)
        return {k: found.get(self._key(k)) for k in wanted}

    async def set_many(self, items: Mapping[str, bytes], ttl: float | None) -> None:
        await self._cache.set_many({self._key(k): v for k, v in items.items()}, ttl)

    async def stats(self) -> CacheStats:
        """The whole cache's figures, shared by every caller."""
        return await self._cache.stats()
