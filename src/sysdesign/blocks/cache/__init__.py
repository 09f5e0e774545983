"""The ``cache`` block: a byte cache on memory or Redis, and cache-aside on top.

``open_cache(url)`` picks the backend from the URL's scheme:

- ``memory://?maxmemory=64mb&policy=allkeys-lfu``: this process's memory,
  evicting under ``maxmemory`` (default 64mb; 0: unbounded) by ``policy``
  (``allkeys-lru``, the default, or ``allkeys-lfu``). Sizes are bytes or
  take a unit as Redis reads them: ``k``/``m``/``g`` are powers of 1000,
  ``kb``/``mb``/``gb`` powers of 1024;
- ``redis://host:port/db`` or ``rediss://``: a Redis server (or anything
  speaking its protocol), with ``?prefix=NAME`` to namespace the keys
  (default ``sysdesign``; empty: none) and ``?socket_timeout=SECONDS``
  (default 0.25) bounding how long a dead server can hold a call before
  ``CacheUnavailable``;
- ``sysdesign://h1:6380,h2:6381?replicas=2``: a cluster of cache nodes
  (``sysdesign cache-node``), each key on ``replicas`` of them chosen by a
  consistent-hash ring (``cluster.py`` says how failover and membership
  work).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

from sysdesign.blocks.cache.aside import AsideStats, CacheAside, Envelope
from sysdesign.blocks.cache.base import (
    Cache,
    CacheError,
    CacheStats,
    CacheUnavailable,
    NotAnInteger,
)
from sysdesign.blocks.cache.memory import DEFAULT_MAX_BYTES, MemoryCache
from sysdesign.blocks.cache.ring import HashRing, moved_fraction
from sysdesign.blocks.cache.store import POLICIES, EntryTooLarge, MemoryStore
from sysdesign.platform.clock import Clock
from sysdesign.platform.errors import ConfigurationError

__all__ = [
    "AsideStats",
    "Cache",
    "CacheAside",
    "CacheError",
    "CacheStats",
    "CacheUnavailable",
    "EntryTooLarge",
    "Envelope",
    "HashRing",
    "MemoryCache",
    "MemoryStore",
    "NotAnInteger",
    "moved_fraction",
    "open_cache",
    "parse_size",
]

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1024,
    "m": 1000**2,
    "mb": 1024**2,
    "g": 1000**3,
    "gb": 1024**3,
}
_SIZE = re.compile(r"(\d+)([a-z]*)")


def parse_size(text: str) -> int:
    """Bytes in ``text``: ``1048576``, ``512kb``, ``64mb``, ``1gb`` (any case)."""
    match = _SIZE.fullmatch(text.strip().lower())
    if match is None or match[2] not in _UNITS:
        raise ValueError(f"not a size: {text!r} (use bytes, or a unit such as 64mb or 1gb)")
    return int(match[1]) * _UNITS[match[2]]


def _memory(url: str, clock: Clock | None) -> MemoryCache:
    max_bytes, policy = DEFAULT_MAX_BYTES, "allkeys-lru"
    for name, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        if name == "maxmemory":
            try:
                max_bytes = parse_size(value)
            except ValueError as exc:
                raise ConfigurationError(f"cache URL {url}: maxmemory: {exc}") from None
        elif name == "policy":
            if value not in POLICIES:
                raise ConfigurationError(
                    f"cache URL {url}: unknown policy {value!r}: use one of {', '.join(POLICIES)}"
                )
            policy = value
        else:
            raise ConfigurationError(
                f"cache URL {url}: unknown parameter {name!r}: memory:// takes maxmemory and policy"
            )
    return MemoryCache(max_bytes, policy, clock=clock)


def open_cache(url: str, *, clock: Clock | None = None) -> Cache:
    """The cache named by ``url``, not yet connected. ``clock`` drives the
    memory backend's expiry (Redis uses its own). Raises
    ``ConfigurationError`` for an unknown scheme, a bad parameter, or a
    missing driver."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return _memory(url, clock)
    if scheme in ("redis", "rediss"):
        try:
            from sysdesign.blocks.cache.redis import RedisCache
        except ImportError:
            raise ConfigurationError(
                "the redis cache needs redis-py: pip install 'sysdesign[redis]'"
            ) from None
        return RedisCache.from_url(url)
    if scheme == "sysdesign":
        try:
            from sysdesign.blocks.cache.cluster import ClusterCache
        except ImportError:
            raise ConfigurationError(
                "the cache cluster needs redis-py: pip install 'sysdesign[redis]'"
            ) from None
        return ClusterCache.from_url(url)
    raise ConfigurationError(
        f"unsupported cache URL scheme {scheme!r}: use memory://, redis://, rediss:// "
        "or sysdesign://"
    )
