"""Redlock over three private redis-server processes on loopback ports:
exclusion, fencing tokens that only grow, a majority surviving one stopped
server, refusal without a majority, lapsed leases, and the paused holder
whose late write the fenced resource refuses."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from sysdesign.blocks.lock import (
    FencedResource,
    LeaseLost,
    LockTimeout,
    LockUnavailable,
    StaleToken,
    open_locks,
    open_redlock,
)
from sysdesign.blocks.lock.redlock import Redlock
from sysdesign.platform.errors import ConfigurationError
from tests.backends import services_required
from tests.redis_server import REDIS_SERVER, PrivateRedis

SHORT = 0.3  # seconds: a lease meant to lapse
LONG = 30.0
BOUND = 5.0  # seconds: an answer must come within this, never a hang


@pytest.fixture
async def servers() -> AsyncIterator[list[PrivateRedis]]:
    if not os.access(REDIS_SERVER, os.X_OK):
        reason = f"{REDIS_SERVER} is not installed: Redlock's tests start three servers"
        if services_required():
            pytest.fail(reason)
        pytest.skip(reason)
    started: list[PrivateRedis] = []
    try:
        for _ in range(3):
            server = PrivateRedis()
            await server.start()
            started.append(server)
        yield started
    finally:
        for server in started:
            await server.kill()


def url_of(servers: list[PrivateRedis], timeout: float = 1.0) -> str:
    hosts = ",".join(f"127.0.0.1:{s.port}" for s in servers)
    return f"redlock://{hosts}?socket_timeout={timeout}&prefix=t"


@pytest.fixture
async def redlock(servers: list[PrivateRedis]) -> AsyncIterator[Redlock]:
    lock = open_redlock(url_of(servers), owner="test")
    await lock.connect()
    try:
        yield lock
    finally:
        await lock.close()


@contextlib.asynccontextmanager
async def another_client(servers: list[PrivateRedis]) -> AsyncIterator[Redlock]:
    lock = open_redlock(url_of(servers), owner="other")
    await lock.connect()
    try:
        yield lock
    finally:
        await lock.close()


async def test_fifty_concurrent_holders_lose_no_update_and_tokens_grow(redlock: Redlock) -> None:
    counter = {"value": 0}
    tokens: list[int] = []

    async def worker() -> None:
        async with redlock.hold("counter", ttl=LONG) as held:
            value = counter["value"]
            await asyncio.sleep(0.001)  # the read-modify-write spans real waiting
            counter["value"] = value + 1
            tokens.append(held.lease.token)

    await asyncio.gather(*(worker() for _ in range(50)))
    assert counter["value"] == 50
    assert tokens == sorted(tokens) and len(set(tokens)) == 50  # in the order granted


async def test_tokens_strictly_increase_across_clients(
    redlock: Redlock, servers: list[PrivateRedis]
) -> None:
    tokens = []
    async with another_client(servers) as other:
        for client in [redlock, other] * 4:
            lease = await client.acquire("job", ttl=LONG, wait=BOUND)
            assert await redlock.holder("job") == (client.owner, lease.token)
            assert await other.try_acquire("job", ttl=LONG) is None
            tokens.append(lease.token)
            assert await client.release(lease) is True
            assert await client.release(lease) is False  # a second release changes nothing
    assert tokens == sorted(set(tokens))
    assert await redlock.holder("job") is None


async def test_tokens_grow_when_each_acquisition_wins_a_different_majority(
    redlock: Redlock, servers: list[PrivateRedis]
) -> None:
    """Each server in turn is held by someone else, so the three acquisitions
    win {B, C}, {A, C}, {A, B}. Taking the largest of one INCR per winning
    server would answer 1, 2, 2 here; reading the counters with the key and
    raising them on the majority answers 1, 2, 3."""
    lock_key, _ = redlock.keys("job")
    tokens = []
    for server in servers:
        client = Redis.from_url(server.url)
        try:
            await client.set(lock_key, "someone else")
            lease = await redlock.acquire("job", ttl=LONG, wait=BOUND)
            tokens.append(lease.token)
            assert await redlock.release(lease) is True
            await client.delete(lock_key)
        finally:
            await client.aclose()
    assert tokens == [1, 2, 3]


async def test_one_stopped_server_of_three_leaves_a_working_majority(
    redlock: Redlock, servers: list[PrivateRedis]
) -> None:
    before = await redlock.acquire("job", ttl=LONG)
    await servers[0].kill()
    renewed = await redlock.renew(before)  # two of three still hold it
    assert renewed.token == before.token
    assert await redlock.try_acquire("job", ttl=LONG) is None
    assert await redlock.release(renewed) is True
    after = await asyncio.wait_for(redlock.acquire("job", ttl=LONG, wait=BOUND), BOUND)
    assert after.token > before.token
    await redlock.ping()
    assert await redlock.release(after) is True


async def test_a_hung_server_is_outwaited_by_its_timeout(
    redlock: Redlock, servers: list[PrivateRedis]
) -> None:
    servers[2].pause()  # accepts nothing, answers nothing
    lease = await asyncio.wait_for(redlock.acquire("job", ttl=LONG, wait=BOUND), BOUND)
    assert await redlock.release(lease) is True


async def test_without_a_majority_acquisition_refuses_promptly(
    redlock: Redlock, servers: list[PrivateRedis]
) -> None:
    held = await redlock.acquire("job", ttl=LONG)
    await servers[0].kill()
    await servers[1].kill()
    for wait in (None, 0.0, 1.0):
        with pytest.raises((LockUnavailable, LockTimeout)):
            await asyncio.wait_for(redlock.acquire("other", ttl=LONG, wait=wait), BOUND)
    with pytest.raises(LockUnavailable, match=r"1 of 3 servers answered, 2 needed \(redis://"):
        await asyncio.wait_for(redlock.try_acquire("other", ttl=LONG), BOUND)
    with pytest.raises(LockUnavailable):  # whether it still holds is unknown
        await redlock.renew(held)
    with pytest.raises(LockUnavailable):
        await redlock.ping()


async def test_a_lapsed_lease_cannot_be_renewed_and_its_release_is_a_no_op(
    redlock: Redlock, servers: list[PrivateRedis]
) -> None:
    stale = await redlock.acquire("lease", ttl=SHORT)
    assert stale.expires_at - stale.ttl < redlock.clock.time()  # validity under the TTL
    await asyncio.sleep(SHORT * 1.5)
    with pytest.raises(LeaseLost, match="has lapsed"):
        await redlock.renew(stale)
    async with another_client(servers) as other:
        fresh = await other.acquire("lease", ttl=LONG, wait=BOUND)
        assert fresh.token > stale.token
        assert await redlock.release(stale) is False
        assert await redlock.holder("lease") == ("other", fresh.token)  # untouched
        assert await other.release(fresh) is True


async def test_a_paused_holder_s_late_write_is_refused_by_the_resource(
    redlock: Redlock, servers: list[PrivateRedis]
) -> None:
    resource = FencedResource([])
    paused = await redlock.acquire("row", ttl=SHORT)
    resource.write(paused.token, lambda v: [*v, "paused-1"])
    await asyncio.sleep(SHORT * 1.5)  # the pause: the lease lapses meanwhile
    async with another_client(servers) as other:
        active = await other.acquire("row", ttl=LONG, wait=BOUND)
        resource.write(active.token, lambda v: [*v, "active"])
        with pytest.raises(StaleToken, match=f"{paused.token} is stale: {active.token}"):
            resource.write(paused.token, lambda v: [*v, "paused-2"])
        assert resource.value == ["paused-1", "active"] and resource.refused == 1
        await other.release(active)


async def test_hold_keeps_the_lease_and_says_when_it_is_lost(
    redlock: Redlock, servers: list[PrivateRedis]
) -> None:
    async with redlock.hold("kept", ttl=SHORT) as held:
        first = held.lease
        await asyncio.sleep(SHORT * 3)  # the keepalive renews every ttl / 3
        assert not held.lost.is_set() and held.lease.token == first.token
        assert await redlock.try_acquire("kept", ttl=LONG) is None
        lock_key, _ = redlock.keys("kept")
        for server in servers[:2]:  # taken away from a majority, from outside
            client = Redis.from_url(server.url)
            await client.delete(lock_key)
            await client.aclose()
        await asyncio.wait_for(held.lost.wait(), BOUND)
    assert await redlock.holder("kept") is None


async def test_a_cancelled_acquisition_leaves_no_key(
    redlock: Redlock, servers: list[PrivateRedis]
) -> None:
    holder = await redlock.acquire("busy", ttl=LONG)
    waiter = asyncio.create_task(redlock.acquire("busy", ttl=LONG))
    await asyncio.sleep(0.1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await redlock.release(holder)
    assert await redlock.holder("busy") is None
    lease = await redlock.acquire("busy", ttl=LONG, wait=0)
    await redlock.release(lease)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redlock://a:1,b:1", "at least 3 independent servers, not 2"),
        ("redlock://a:1,b:1,a:1", "a:1 is listed twice"),
        ("redlock://a,b:6379,b", "b is listed twice"),
        ("redlock://a:1,,b:1", "a bad host"),
        ("redlock://a,b,c?socket_timeout=0", "socket_timeout must be"),
        ("redlock://a,b,c?prefix=", "empty prefix"),
    ],
)
def test_bad_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        open_redlock(url)


def test_open_locks_gives_a_redlock_for_its_scheme() -> None:
    lock = open_locks("redlock://:secret@a:1,b:2,c:3/2?socket_timeout=0.2")
    assert isinstance(lock, Redlock) and lock.quorum == 2
    assert lock.servers == [f"redis://:***@{h}/2" for h in ("a:1", "b:2", "c:3")]
    assert Redlock.from_url("redlock://a,b,c,d,e").quorum == 3


async def test_bad_requests_are_refused_before_anything_is_sent(redlock: Redlock) -> None:
    with pytest.raises(ValueError, match="name must be"):
        await redlock.acquire("", ttl=1)
    with pytest.raises(ValueError, match="ttl must be"):
        await redlock.acquire("a", ttl=0)
    with pytest.raises(ValueError, match="wait must be at least 0"):
        await redlock.acquire("a", ttl=1, wait=-1)
