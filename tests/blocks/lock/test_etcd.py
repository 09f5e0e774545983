"""The etcd lock store beyond the contract: a three-member cluster that loses
the member the client talks to and keeps locking, a waiter woken by the
holder's lease running out, the key layout and the URL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sysdesign.blocks.lock import LockService, LockUnavailable, open_store
from sysdesign.blocks.lock.etcd import EtcdTicketStore, lease_seconds
from sysdesign.blocks.lock.etcdapi import EtcdClient
from sysdesign.platform.errors import ConfigurationError
from tests.blocks.lock.conftest import LONG, server_url
from tests.blocks.lock.etcd_cluster import etcd_cluster


@pytest.fixture
async def etcd_url() -> AsyncIterator[str]:
    async with server_url("etcd") as url:
        yield url


@pytest.fixture
async def store(etcd_url: str) -> AsyncIterator[EtcdTicketStore]:
    built = EtcdTicketStore.from_url(etcd_url)
    await built.connect()
    try:
        yield built
    finally:
        await built.close()


@pytest.fixture
def locks(store: EtcdTicketStore) -> LockService:
    return LockService(store, owner="test")


async def queued(locks: LockService, name: str, waiters: int) -> None:
    for _ in range(400):
        if len((await locks.inspect(name)).waiters) == waiters:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{name!r} never had {waiters} waiters")


async def leader_first(endpoints: list[str]) -> list[str]:
    members = {}
    for endpoint in endpoints:
        async with EtcdClient([endpoint]) as client:
            status = await client.status()
            members[status.member_id] = endpoint
    leader = members[status.leader]
    return [leader, *(endpoint for endpoint in endpoints if endpoint != leader)]


async def test_locks_keep_working_after_the_member_the_client_uses_is_killed(
    tmp_path: Path,
) -> None:
    with etcd_cluster(tmp_path, size=3) as cluster:
        # The leader first: the client talks to it, so its loss also means an election.
        store = EtcdTicketStore(await leader_first(cluster.client_urls), prefix="/failover/")
        locks = LockService(store, owner="test")
        await locks.connect()
        try:
            first = await locks.acquire("job", ttl=LONG)
            assert await locks.try_acquire("job", ttl=LONG) is None
            # A waiter whose watch streams from the member about to die.
            waiter = asyncio.create_task(locks.acquire("job", ttl=LONG))
            await queued(locks, "job", 1)
            used = cluster.client_urls.index((await store.client.status()).endpoint)
            assert cluster.client_urls[used] == store.endpoints[0]
            cluster.kill(used)
            survivors = [i for i in range(3) if i != used]
            await asyncio.to_thread(cluster.wait_for_leader, survivors)

            assert await locks.release(first) is True
            second = await asyncio.wait_for(waiter, 20)
            assert second.token > first.token
            assert (await store.client.status()).endpoint != cluster.client_urls[used]

            # Exclusion between two waiters, served in order, tokens still growing.
            inside: list[str] = []
            tokens: list[int] = []

            async def holder(label: str) -> None:
                async with locks.hold("job", ttl=LONG) as held:
                    inside.append(label)
                    assert inside == [label]
                    tokens.append(held.lease.token)
                    await asyncio.sleep(0.05)
                    inside.remove(label)

            a = asyncio.create_task(holder("a"))
            await queued(locks, "job", 1)
            b = asyncio.create_task(holder("b"))
            await queued(locks, "job", 2)
            await locks.release(second)
            await asyncio.wait_for(asyncio.gather(a, b), 20)
            assert second.token < tokens[0] < tokens[1]
            assert (await locks.inspect("job")).holders == []
        finally:
            await locks.close()


async def test_a_waiter_is_woken_by_the_holder_s_lease_running_out(locks: LockService) -> None:
    holder = await locks.acquire("expiring", ttl=1)  # never renewed
    assert await locks.try_acquire("expiring", ttl=LONG) is None
    # Its own wait of 8 s is a single look: only the watch seeing the holder's
    # key deleted by the lease's expiry can grant it in time.
    fresh = await locks.acquire("expiring", ttl=LONG, wait=8)
    assert fresh.token > holder.token
    assert await locks.release(holder) is False
    await locks.release(fresh)


async def test_tickets_are_keys_on_their_own_leases(
    locks: LockService, store: EtcdTicketStore
) -> None:
    before = time.time()
    lease = await locks.acquire("a/b c", ttl=2.5)
    assert before + 2 < lease.expires_at < time.time() + 60
    other = await locks.acquire("a", ttl=LONG)  # a prefix of the name, not its queue
    assert await store.names() == ["a", "a/b c"]
    kv = await store.client.get(f"{store.prefix}a%2Fb%20c/{lease.ticket_id}")
    assert kv is not None and kv.create_revision == lease.token
    info = await store.client.lease_time_to_live(kv.lease)
    assert info.granted_ttl >= 3  # 2.5 s rounded up

    # Another TTL moves the key to a new lease: same ticket, same token.
    renewed = await locks.renew(lease, ttl=LONG)
    assert renewed.token == lease.token
    moved = await store.client.get(kv.key)
    assert moved is not None and moved.lease != kv.lease
    assert (await store.client.lease_time_to_live(moved.lease)).granted_ttl == 30

    assert await locks.release(renewed) is True
    assert await store.client.get(kv.key) is None
    await locks.release(other)
    assert await store.names() == []


async def test_waiters_beyond_the_watch_slots_poll(etcd_url: str) -> None:
    store = EtcdTicketStore.from_url(etcd_url + "&watches=1")
    locks = LockService(store, owner="test")
    await locks.connect()
    try:
        holder = await locks.acquire("few", ttl=LONG)
        waiters = []
        for count in (1, 2, 3):  # one at a time, so they queue in this order
            waiters.append(asyncio.create_task(locks.acquire("few", ttl=LONG)))
            await queued(locks, "few", count)
        await locks.release(holder)
        tokens = []
        for waiter in waiters:
            lease = await asyncio.wait_for(waiter, 10)
            tokens.append(lease.token)
            await locks.release(lease)
        assert holder.token < tokens[0] < tokens[1] < tokens[2]
    finally:
        await locks.close()


def test_lease_seconds_round_up_to_whole_seconds() -> None:
    assert [lease_seconds(t) for t in (0.001, 0.5, 1, 1.01, 2.5, 30)] == [1, 1, 1, 2, 3, 30]


def test_urls() -> None:
    store = open_store("etcd://a:1,b?prefix=/x&timeout=2&watches=8")
    assert isinstance(store, EtcdTicketStore)
    assert store.endpoints == ["http://a:1", "http://b:2379"] and store.prefix == "/x/"
    assert EtcdTicketStore.from_url("etcd://a").prefix == "/sysdesign/locks/"
    for bad in ("etcd://a?timeout=0", "etcd://a?watches=x", "etcd://a?pool=1", "etcd://"):
        with pytest.raises(ConfigurationError):
            EtcdTicketStore.from_url(bad)


async def test_an_unreachable_cluster_is_one_line_at_connect() -> None:
    store = EtcdTicketStore.from_url("etcd://127.0.0.1:9,127.0.0.1:7?timeout=1")
    with pytest.raises(LockUnavailable, match=r"^etcd at http://127.0.0.1:9,http") as failure:
        await store.connect()
    assert "\n" not in str(failure.value)
    await store.close()
