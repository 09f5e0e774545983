"""API keys: how scripts create and manage links without signing in.

A key is ``sdk_`` and 43 random URL-safe characters (256 bits), shown once
when it is made. Only its SHA-256 is stored: a key has the full entropy a
slow hash would make up for in a password, and a fast hash keeps checking
one to a single indexed read. That read is cached (``CACHE_TTL``) and the
entry deleted when the key is revoked, so a script's calls do not each
reach the database.

A key acts as its owner on ``/shortener/v1/links``. It cannot make or
revoke keys: a leaked key cannot mint more.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from sysdesign.blocks.cache.aside import CacheAside
from sysdesign.blocks.cache.base import CacheError
from sysdesign.systems.shortener import store
from sysdesign.systems.shortener.domain import LinkInvalid

if TYPE_CHECKING:
    from sysdesign.platform.context import Platform

log = structlog.get_logger(__name__)

KEY_PREFIX = "sdk_"
MAX_KEYS = 50
CACHE_TTL = 60.0


class ApiKeyNotFound(Exception):
    """The caller has no live key with this id (404)."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    name: str
    prefix: str
    created_at_ms: int


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    def __init__(self, platform: Platform) -> None:
        self._platform = platform
        # Unknown keys are remembered as long as known ones, so a script retrying
        # a wrong key does not reach the database each time. No jitter: a revoked
        # key whose entry could not be deleted works for at most CACHE_TTL.
        self._aside = CacheAside(platform.cache, platform.clock, negative_ttl=CACHE_TTL, jitter=0.0)

    def _now_ms(self) -> int:
        return int(self._platform.clock.time() * 1000)

    @staticmethod
    def _cache_key(key_hash: str) -> str:
        return f"shortener:apikey:{key_hash}"

    async def create(self, owner_id: int, name: str) -> tuple[ApiKey, str]:
        """A new key of ``owner_id`` and its secret (shown this once)."""
        name = name.strip()
        if not 1 <= len(name) <= 100 or any(ord(ch) < 32 for ch in name):
            raise LinkInvalid("name", "a key's name has 1 to 100 printable characters")
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(self._platform.ids.next_id(), name, secret[:12], self._now_ms())
        async with self._platform.unit_of_work() as uow:
            if len(await store.api_keys_of(uow.conn, owner_id)) >= MAX_KEYS:
                raise LinkInvalid("name", f"an account has at most {MAX_KEYS} keys; revoke one")
            await store.insert_api_key(
                uow.conn,
                {"id": key.id, "owner_id": owner_id, "name": key.name, "prefix": key.prefix,
                 "key_hash": hash_key(secret), "created_at": key.created_at_ms,
                 "revoked_at": None},
            )  # fmt: skip
        return key, secret

    async def list(self, owner_id: int) -> list[ApiKey]:
        async with self._platform.db.primary.read() as conn:
            rows = await store.api_keys_of(conn, owner_id)
        return [
            ApiKey(int(r["id"]), str(r["name"]), str(r["prefix"]), int(r["created_at"]))  # type: ignore[call-overload]
            for r in rows
        ]

    async def revoke(self, owner_id: int, key_id: int) -> None:
        async with self._platform.unit_of_work() as uow:
            key_hash = await store.revoke_api_key(uow.conn, owner_id, key_id, self._now_ms())
        if key_hash is None:
            raise ApiKeyNotFound(key_id)
        try:
            await self._aside.invalidate(self._cache_key(key_hash))
        except CacheError as exc:
            # The key then still works for at most CACHE_TTL seconds.
            log.warning("shortener_api_key_uncached_failed", error=repr(exc))

    async def owner_of(self, key: str) -> int | None:
        """The owner of a live key; ``None`` for an unknown or revoked one."""
        if not key.startswith(KEY_PREFIX) or len(key) > 100:
            return None
        key_hash = hash_key(key)

        async def load() -> bytes | None:
            async with self._platform.db.primary.read() as conn:
                owner = await store.owner_of_api_key(conn, key_hash)
            return None if owner is None else str(owner).encode()

        cached = await self._aside.get_or_load(self._cache_key(key_hash), load, CACHE_TTL)
        return None if cached is None else int(cached)
