"""The platform builds the realtime block from ``realtime_url`` on first use,
connects it in ``start()``, checks it for readiness and closes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from sysdesign.blocks.realtime import MemoryRealtime
from sysdesign.platform.clock import ManualClock
from sysdesign.platform.context import Platform
from sysdesign.platform.errors import BackendUnavailable
from sysdesign.settings import Settings
from tests.backends import redis_url
from tests.conftest import make_settings


async def test_built_on_use_connected_checked_and_closed(
    settings: Settings, clock: ManualClock
) -> None:
    platform = Platform(settings, clock=clock)
    try:
        assert "realtime" not in (await platform.readiness())
        realtime = platform.realtime
        assert isinstance(realtime, MemoryRealtime)
        await platform.start()
        assert (await platform.readiness())["realtime"] == "ok"
        sub = await realtime.subscribe("inbox:1").__aenter__()
    finally:
        await platform.close()
    assert sub.closed


async def test_on_redis(tmp_path: Path, sqlite_url: str, clock: ManualClock) -> None:
    settings = make_settings(
        tmp_path, database_url=sqlite_url, realtime_url=redis_url("trealtimeplatform")
    )
    platform = Platform(settings, clock=clock)
    try:
        realtime = await platform.connect_realtime()
        assert realtime.name == "redis"
        async with realtime.subscribe("c") as sub:
            await realtime.publish("c", b"x")
            assert await sub.get(10) == b"x"
        assert (await platform.readiness())["realtime"] == "ok"
    finally:
        await platform.close()


async def test_an_unreachable_server_stops_start_with_one_line(
    tmp_path: Path, sqlite_url: str, clock: ManualClock
) -> None:
    settings = make_settings(
        tmp_path,
        database_url=sqlite_url,
        realtime_url="redis://127.0.0.1:1/0?socket_timeout=0.2",
    )
    platform = Platform(settings, clock=clock)
    _ = platform.realtime
    try:
        with pytest.raises(BackendUnavailable, match="realtime redis is unreachable"):
            await platform.start()
    finally:
        await platform.close()
