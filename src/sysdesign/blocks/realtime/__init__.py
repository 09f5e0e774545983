"""The ``realtime`` block: live fan-out of small messages (an inbox changed, a
typing indicator) to whoever is listening, for Server-Sent Events and
WebSockets. ``base.py`` states what it guarantees and what it does not.

``open_realtime(url)`` picks the backend from the URL's scheme:

- ``memory://?buffer=N``: this process only;
- ``redis://host:port/db`` or ``rediss://``: Redis pub/sub, heard by every
  process on the server, with ``?prefix=NAME`` to namespace the channels
  (default ``sysdesign``; empty: none), ``?socket_timeout=SECONDS``
  (default 1) and ``?buffer=N``.

``buffer`` is how many unread messages each subscription keeps before it
drops the oldest (default 1,000).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from sysdesign.blocks.realtime.base import (
    DEFAULT_BUFFER,
    Realtime,
    RealtimeError,
    RealtimeUnavailable,
    Subscription,
    check_channel,
    split_buffer,
)
from sysdesign.blocks.realtime.memory import MemoryRealtime
from sysdesign.platform.clock import Clock
from sysdesign.platform.errors import ConfigurationError

__all__ = [
    "DEFAULT_BUFFER",
    "MemoryRealtime",
    "Realtime",
    "RealtimeError",
    "RealtimeUnavailable",
    "Subscription",
    "check_channel",
    "open_realtime",
]


def _memory(url: str) -> MemoryRealtime:
    try:
        rest, buffer = split_buffer(url)
    except ValueError as exc:
        raise ConfigurationError(f"realtime URL {url}: {exc}") from None
    if urlsplit(rest).query:
        raise ConfigurationError(
            f"realtime URL {url}: unknown parameter in {urlsplit(rest).query!r}: "
            "memory:// takes only buffer"
        )
    return MemoryRealtime(buffer=buffer)


def open_realtime(url: str, *, clock: Clock | None = None) -> Realtime:
    """The realtime backend named by ``url``, not yet connected. ``clock`` is
    accepted like the other blocks' but unused: realtime keeps no time, and
    its timeouts are operational, in real seconds. Raises
    ``ConfigurationError`` for an unknown scheme, a bad parameter, or a
    missing driver."""
    del clock
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return _memory(url)
    if scheme in ("redis", "rediss"):
        try:
            from sysdesign.blocks.realtime.redis import RedisRealtime
        except ImportError:
            raise ConfigurationError(
                "the redis realtime backend needs redis-py: pip install 'sysdesign[redis]'"
            ) from None
        return RedisRealtime.from_url(url)
    raise ConfigurationError(
        f"unsupported realtime URL scheme {scheme!r}: use memory://, redis:// or rediss://"
    )
