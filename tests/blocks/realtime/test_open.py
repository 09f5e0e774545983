"""``open_realtime``: the backend by URL scheme, and its options."""

from __future__ import annotations

import pytest

from sysdesign.blocks.realtime import MemoryRealtime, open_realtime
from sysdesign.blocks.realtime.redis import RedisRealtime
from sysdesign.platform.errors import ConfigurationError


def test_open_realtime_by_scheme() -> None:
    assert isinstance(open_realtime("memory://"), MemoryRealtime)
    assert open_realtime("memory://?buffer=5").buffer == 5
    redis = open_realtime("redis://localhost:6379/0?prefix=app&buffer=7&socket_timeout=2")
    assert isinstance(redis, RedisRealtime)
    assert redis.buffer == 7
    assert redis.key("c") == b"app:rt:c"
    assert open_realtime("rediss://localhost/0?prefix=").key("c") == b"c"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nats://localhost:4222", "unsupported realtime URL scheme 'nats'"),
        ("kafka://x", "unsupported realtime URL scheme"),
        ("memory://?buffer=0", "buffer"),
        ("memory://?buffer=lots", "buffer"),
        ("memory://?maxmemory=1mb", "memory:// takes only buffer"),
        ("redis://localhost/0?buffer=-1", "buffer"),
        ("redis://localhost/0?socket_timeout=0", "socket_timeout"),
    ],
)
def test_bad_urls_are_configuration_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        open_realtime(url)
