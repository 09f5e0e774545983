"""The Redis ticket store's own promises: its key layout (a counter that
outlives the tickets, the rest expiring with them), waking a waiter in
another client on release or expiry through pub/sub, and failing in one
line when its server stops, then working again once it is back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from sysdesign.blocks.lock import LockService, LockUnavailable, open_store
from sysdesign.blocks.lock.redis import RedisTicketStore
from tests.backends import delete_prefix, redis_url, service_url
from tests.redis_server import PrivateRedis

BOUND = 5.0  # seconds: a waiter must wake well before its own timeout


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"t{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        await delete_prefix(name)


async def connected(url: str) -> RedisTicketStore:
    store = open_store(url)
    assert isinstance(store, RedisTicketStore)
    await store.connect()
    return store


async def test_the_counter_outlives_the_tickets_and_the_rest_expires_with_them(
    prefix: str,
) -> None:
    store = await connected(redis_url(prefix))
    raw = Redis.from_url(service_url("redis"))
    try:
        ticket = await store.enqueue("job", "a", "exclusive", 1, "me", 30)
        token_key, *per_name, names_key = store.keys("job")
        assert await raw.pttl(token_key) == -1  # never expires
        for key in per_name:
            assert 30_000 < await raw.pttl(key) <= 31_000  # the last expiry, plus a second
        assert await store.names() == ["job"]
        assert await store.remove("job", ticket.id) is True
        assert [await raw.exists(key) for key in per_name] == [0, 0, 0]
        assert await raw.smembers(names_key) == set()
        again = await store.enqueue("job", "b", "exclusive", 1, "me", 30)
        assert again.token == ticket.token + 1
        await store.remove("job", again.id)
    finally:
        await raw.aclose()
        await store.close()


async def test_a_release_by_another_client_wakes_the_waiter(prefix: str) -> None:
    url = redis_url(prefix)
    mine, theirs = await connected(url), await connected(url)
    try:
        holder = await theirs.enqueue("job", "held", "exclusive", 1, "them", 30)
        waiting = asyncio.create_task(mine.wait("job", [holder], timeout=30))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        assert await theirs.remove("job", holder.id)
        await asyncio.wait_for(waiting, BOUND)
    finally:
        await mine.close()
        await theirs.close()


async def test_an_expired_ticket_wakes_its_watchers_with_nobody_calling(prefix: str) -> None:
    store = await connected(redis_url(prefix))
    try:
        holder = await store.enqueue("job", "lapsing", "exclusive", 1, "gone", 0.2)
        await asyncio.wait_for(store.wait("job", [holder], timeout=30), BOUND)
        assert await store.queue("job") == []
    finally:
        await store.close()


async def test_a_stopped_server_fails_in_one_line_and_a_restart_recovers(
    private_redis: PrivateRedis,
) -> None:
    url = private_redis.url.replace("redis://", "redis://user:secret@", 1)
    await private_redis.kill()
    store = open_store(f"{url}?socket_timeout=0.5")
    try:
        with pytest.raises(LockUnavailable) as refused:
            await store.connect()
        message = str(refused.value)
        assert "\n" not in message and "secret" not in message
        assert f"redis at redis://user:***@127.0.0.1:{private_redis.port}/0" in message
        await private_redis.start()
        # Generous: a loaded machine can take a while to reconnect; a dead
        # server is refused at once whatever the timeout.
        private_url = private_redis.url + "?socket_timeout=3"
        locks = LockService(await connected(private_url))
        try:
            lease = await locks.acquire("job", ttl=30)
            await private_redis.kill()
            with pytest.raises(LockUnavailable, match="is unavailable"):
                await locks.acquire("job", ttl=30)
            await private_redis.start()  # empty: the lease went with the old server
            assert (await locks.acquire("job", ttl=30, wait=BOUND)).token >= 1
            assert await locks.release(lease) is False
        finally:
            await locks.close()
    finally:
        await store.close()
