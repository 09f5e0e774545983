"""Redis pub/sub as processes see it: two instances hear each other, one server
subscription per channel per instance, and subscriptions that outlive a
killed connection or a restarted server."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from sysdesign.blocks.realtime import RealtimeError, RealtimeUnavailable, Subscription
from sysdesign.blocks.realtime.redis import RedisRealtime
from tests.backends import redis_url, service_url
from tests.blocks.realtime.conftest import eventually
from tests.blocks.realtime.test_contract import WAIT, take
from tests.redis_server import PrivateRedis

pytestmark = pytest.mark.redis


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def admin() -> AsyncIterator[Redis]:
    client = Redis.from_url(service_url("redis"))
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def two(prefix: str) -> AsyncIterator[tuple[RedisRealtime, RedisRealtime]]:
    a, b = RedisRealtime.from_url(redis_url(prefix)), RedisRealtime.from_url(redis_url(prefix))
    await a.connect()
    await b.connect()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def subscribers(admin: Redis, channel: bytes) -> int:
    [(_, count)] = await admin.pubsub_numsub(channel)
    return int(count)


async def heard_again(realtime: RedisRealtime, sub: Subscription, channel: str) -> None:
    """Publish probes until one arrives: the subscription is live again."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while loop.time() < deadline:
        with contextlib.suppress(RealtimeUnavailable):  # the server may still be coming back
            await realtime.publish(channel, b"probe")
        if await sub.get(0.05) == b"probe":
            while await sub.get(0.05) is not None:
                pass  # the probes still in flight
            return
    pytest.fail(f"the subscription did not come back within {WAIT} s")


async def test_two_instances_hear_each_other(two: tuple[RedisRealtime, RedisRealtime]) -> None:
    a, b = two
    async with a.subscribe("inbox:7") as on_a, b.subscribe("inbox:7") as on_b:
        await a.publish("inbox:7", b"from a")
        await b.publish("inbox:7", b"from b")
        assert await take(on_a, 2) == [b"from a", b"from b"]
        assert await take(on_b, 2) == [b"from a", b"from b"]


async def test_channels_are_namespaced_by_prefix(prefix: str) -> None:
    mine = RedisRealtime.from_url(redis_url(prefix))
    theirs = RedisRealtime.from_url(redis_url(prefix + "x"))
    await mine.connect()
    await theirs.connect()
    try:
        async with mine.subscribe("c") as sub:
            await theirs.publish("c", b"not for me")
            await mine.publish("c", b"mine")
            assert await take(sub, 1) == [b"mine"]
        assert mine.key("c") == f"{prefix}:rt:c".encode()
    finally:
        await mine.close()
        await theirs.close()


async def test_one_server_subscription_per_channel_per_instance(
    two: tuple[RedisRealtime, RedisRealtime], admin: Redis
) -> None:
    a, _ = two
    key = a.key("shared")
    subs = [a.subscribe("shared") for _ in range(5)]
    for sub in subs:
        await sub.__aenter__()
    assert await subscribers(admin, key) == 1
    for sub in subs[:4]:
        await sub.close()
    assert await subscribers(admin, key) == 1
    await subs[4].close()
    # The UNSUBSCRIBE is not waited for: the server gets to it shortly.
    for _ in range(int(WAIT / 0.01)):
        if await subscribers(admin, key) == 0:
            break
        await asyncio.sleep(0.01)
    assert await subscribers(admin, key) == 0


async def test_resubscribing_at_once_after_leaving_still_hears(
    two: tuple[RedisRealtime, RedisRealtime],
) -> None:
    a, b = two
    for i in range(20):
        async with a.subscribe("flap"):
            pass
        async with a.subscribe("flap") as sub:
            await b.publish("flap", f"{i}".encode())
            assert await take(sub, 1) == [f"{i}".encode()]


async def test_a_subscription_survives_the_server_killing_its_connection(
    two: tuple[RedisRealtime, RedisRealtime], admin: Redis
) -> None:
    a, b = two
    async with a.subscribe("inbox:9") as sub:
        await b.publish("inbox:9", b"before")
        assert await take(sub, 1) == [b"before"]
        killed = await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        assert int(killed) >= 1
        await eventually(lambda: sub.interruptions >= 1)
        await heard_again(b, sub, "inbox:9")
        await b.publish("inbox:9", b"after")
        assert await take(sub, 1) == [b"after"]
        assert not sub.closed


async def test_a_subscription_survives_a_server_restart(private_redis: PrivateRedis) -> None:
    realtime = RedisRealtime.from_url(private_redis.url + "?socket_timeout=2")
    await realtime.connect()
    try:
        async with realtime.subscribe("c") as sub:
            await private_redis.kill()
            with pytest.raises(RealtimeUnavailable):
                await realtime.publish("c", b"lost")
            await eventually(lambda: sub.interruptions >= 1)
            await private_redis.start()
            await heard_again(realtime, sub, "c")
            await realtime.publish("c", b"back")
            assert await take(sub, 1) == [b"back"]
    finally:
        await realtime.close()


async def test_a_silent_connection_is_noticed_and_replaced(private_redis: PrivateRedis) -> None:
    # A stopped server keeps the connection open and says nothing: only the
    # listener's ping, unanswered, tells it that the connection is dead.
    realtime = RedisRealtime.from_url(private_redis.url + "?socket_timeout=0.5")
    await realtime.connect()
    try:
        async with realtime.subscribe("c") as sub:
            private_redis.pause()
            await eventually(lambda: sub.interruptions >= 1)
            assert private_redis.process is not None
            private_redis.process.send_signal(signal.SIGCONT)
            await heard_again(realtime, sub, "c")
            await realtime.publish("c", b"awake")
            assert await take(sub, 1) == [b"awake"]
    finally:
        await realtime.close()


async def test_a_subscription_the_server_cannot_confirm_fails_clearly(
    private_redis: PrivateRedis,
) -> None:
    realtime = RedisRealtime.from_url(private_redis.url + "?socket_timeout=0.3")
    await realtime.connect()
    try:
        await private_redis.kill()
        with pytest.raises(RealtimeUnavailable, match="did not confirm"):
            async with realtime.subscribe("c"):
                pass
        assert realtime.subscriptions == 0
        with pytest.raises(RealtimeUnavailable, match="unavailable"):
            await realtime.ping()
    finally:
        await realtime.close()


async def test_connect_to_a_dead_server_says_so_and_closes_cleanly() -> None:
    realtime = RedisRealtime.from_url("redis://127.0.0.1:1/0?socket_timeout=0.2")
    with pytest.raises(RealtimeUnavailable, match=r"127\.0\.0\.1:1\b"):
        await realtime.connect()
    await realtime.close()


async def test_using_it_unconnected_is_an_error(prefix: str) -> None:
    realtime = RedisRealtime.from_url(redis_url(prefix))
    with pytest.raises(RealtimeError, match="not connected"):
        await realtime.publish("c", b"x")
    with pytest.raises(RealtimeError, match="not connected"):
        async with realtime.subscribe("c"):
            pass
