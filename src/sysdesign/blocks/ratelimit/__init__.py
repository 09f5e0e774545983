"""The ``ratelimit`` block: six algorithms over a store that decides atomically.

``open_store(url)`` picks the store from the URL's scheme:

- ``memory://``: counters in this process (tests, single-process services,
  and the ``local`` fallback while a shared store is down);
- ``redis://host:port/db`` or ``rediss://``: counters shared by every process,
  with ``?prefix=NAME`` to namespace the keys (default ``sysdesign``) and
  ``?socket_timeout=SECONDS`` (default 0.25) bounding how long a dead or stuck
  server can hold a request before ``StoreUnavailable``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from sysdesign.blocks.ratelimit.base import (
    Algorithm,
    Decision,
    Hit,
    Limit,
    RateLimitError,
    RateLimitStore,
    StoreUnavailable,
)
from sysdesign.blocks.ratelimit.memory import MemoryRateLimitStore
from sysdesign.platform.clock import Clock
from sysdesign.platform.errors import ConfigurationError

__all__ = [
    "Algorithm",
    "Decision",
    "Hit",
    "Limit",
    "MemoryRateLimitStore",
    "RateLimitError",
    "RateLimitStore",
    "StoreUnavailable",
    "open_store",
]


def open_store(url: str, *, clock: Clock | None = None) -> RateLimitStore:
    """The store named by ``url``, not yet connected. Raises
    ``ConfigurationError`` for an unknown scheme, a bad parameter, or a
    missing driver."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryRateLimitStore(clock)
    if scheme in ("redis", "rediss"):
        try:
            from sysdesign.blocks.ratelimit.redis import RedisRateLimitStore
        except ImportError:
            raise ConfigurationError(
                "the redis rate-limit store needs redis-py: pip install 'sysdesign[redis]'"
            ) from None
        return RedisRateLimitStore.from_url(url, clock)
    raise ConfigurationError(
        f"unsupported rate-limit store URL scheme {scheme!r}: use memory:// or redis://"
    )
