"""Redis URLs for the blocks' Redis backends: options read by us, a fail-fast pool.

``redis[s]://[user:password@]host:port/db?prefix=NAME&socket_timeout=SECONDS``:
``prefix`` and ``socket_timeout`` are ours, ``decode_responses`` is dropped
(backends need bytes), everything else goes to redis-py.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from sysdesign.platform.errors import ConfigurationError
from sysdesign.platform.urls import redact


def split_options(url: str, *, what: str, prefix: str, timeout: float) -> tuple[str, str, float]:
    """``(url for redis-py, prefix, socket timeout in seconds)``; the defaults
    apply where the URL says nothing. ``what`` names the URL in errors."""
    parts = urlsplit(url)
    kept: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "prefix":
            prefix = value
        elif name == "socket_timeout":
            try:
                timeout = float(value)
            except ValueError:
                timeout = -1.0
            if not 0 < timeout <= 60:
                raise ConfigurationError(
                    f"{what}: socket_timeout must be seconds in (0, 60], "
                    f"not {value!r}, in {redact(url)}"
                )
        elif name != "decode_responses":
            kept.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(kept))), prefix, timeout


def fail_fast_pool(url: str, *, timeout: float, max_connections: int) -> BlockingConnectionPool:
    """A pool whose every wait (connect, reply, a free connection) is bounded by
    ``timeout``: callers beyond ``max_connections`` queue briefly instead of failing.
    One immediate retry replaces a pooled connection the server closed (a
    restart); no backoff, so a dead server fails fast. Raises ``ValueError``
    for a malformed URL."""
    return BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1, (RedisConnectionError,)),
    )
