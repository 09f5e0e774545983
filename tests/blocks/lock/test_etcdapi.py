"""The etcd gateway client against a real etcd (``SYSDESIGN_TEST_ETCD_URL``), and
against a three-member cluster these tests start, to see it survive one loss
and fail in bounded time without a quorum."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sysdesign.blocks.lock.etcdapi import (
    Compare,
    Delete,
    EtcdClient,
    EtcdError,
    EtcdLeaseNotFound,
    EtcdUnavailable,
    Put,
    PutResult,
    Range,
    RangeResult,
    parse_endpoints,
    prefix_end,
)
from tests.backends import service_url
from tests.blocks.lock.etcd_cluster import etcd_cluster, free_ports


@pytest.fixture
def prefix() -> str:
    return f"sysdesign-test/{uuid.uuid4().hex}/"


@pytest.fixture
async def etcd(prefix: str) -> AsyncIterator[EtcdClient]:
    client = EtcdClient.from_url(service_url("etcd"))
    try:
        yield client
    finally:
        await client.delete(prefix, prefix=True)
        await client.aclose()


def test_urls_and_prefix_ends() -> None:
    assert parse_endpoints("etcd://a:1,b:2, c") == ["http://a:1", "http://b:2", "http://c:2379"]
    assert parse_endpoints("etcds://a:1") == ["https://a:1"]
    with pytest.raises(ValueError):
        parse_endpoints("redis://a:1")
    assert prefix_end(b"a/") == b"a0"
    assert prefix_end(b"a\xff\xff") == b"b"
    assert prefix_end(b"\xff") == b"\0"


async def test_put_range_delete(etcd: EtcdClient, prefix: str) -> None:
    first = await etcd.put(prefix + "k", b"one")
    second = await etcd.put(prefix + "k", "two", prev_kv=True)
    assert second.revision > first.revision
    assert second.prev_kv is not None and second.prev_kv.value == b"one"
    kv = await etcd.get(prefix + "k")
    assert kv is not None
    assert (kv.key, kv.value, kv.version) == ((prefix + "k").encode(), b"two", 2)
    assert (kv.create_revision, kv.mod_revision, kv.lease) == (first.revision, second.revision, 0)
    deleted = await etcd.delete(prefix + "k", prev_kv=True)
    assert deleted.deleted == 1 and deleted.prev_kvs[0].value == b"two"
    assert await etcd.get(prefix + "k") is None
    assert (await etcd.delete(prefix + "k")).deleted == 0


async def test_prefix_range_sorted_by_creation(etcd: EtcdClient, prefix: str) -> None:
    for name in ("c", "a", "b"):  # created in this order, keys sort differently
        await etcd.put(prefix + "q/" + name, name)
    await etcd.put(prefix + "q/a", "rewritten")  # a new value keeps its creation revision
    await etcd.put(prefix + "qx", "outside the prefix")
    result = await etcd.range(Range(prefix + "q/", prefix=True, sort_by_create=True))
    assert [kv.value for kv in result.kvs] == [b"c", b"rewritten", b"b"]
    assert result.count == 3 and not result.more
    limited = await etcd.range(Range(prefix + "q/", prefix=True, sort_by_create=True, limit=1))
    assert [kv.value for kv in limited.kvs] == [b"c"]
    assert limited.count == 3 and limited.more


async def test_txn_branches_and_compares(etcd: EtcdClient, prefix: str) -> None:
    key = prefix + "t"
    absent = Compare.create_revision(key, "==", 0)
    created = await etcd.txn([absent], [Put(key, "v1")], [Range(key)])
    assert created.succeeded and isinstance(created.responses[0], PutResult)
    again = await etcd.txn([absent], [Put(key, "v2")], [Range(key)])
    assert not again.succeeded
    assert isinstance(again.responses[0], RangeResult)
    assert again.responses[0].kvs[0].value == b"v1"
    kv = await etcd.get(key)
    assert kv is not None
    swapped = await etcd.txn(
        [Compare.mod_revision(key, "==", kv.mod_revision), Compare.value(key, "==", "v1")],
        [Put(key, "v3"), Delete(prefix + "nothing")],
    )
    assert swapped.succeeded and len(swapped.responses) == 2
    stale = await etcd.txn([Compare.mod_revision(key, "==", kv.mod_revision)], [Put(key, "v4")])
    assert not stale.succeeded and stale.responses == []
    newer = await etcd.txn([Compare.version(key, ">", 1), Compare.value(key, "!=", "v4")])
    assert newer.succeeded
    with pytest.raises(ValueError):
        await etcd.txn([Compare.version(key, "=>", 1)])


async def test_exactly_one_concurrent_creator_wins(etcd: EtcdClient, prefix: str) -> None:
    key = prefix + "leader"

    async def create(name: str) -> bool:
        result = await etcd.txn([Compare.create_revision(key, "==", 0)], [Put(key, name)])
        return result.succeeded

    names = [f"candidate-{i}" for i in range(24)]
    outcomes = await asyncio.gather(*(create(name) for name in names))
    assert sum(outcomes) == 1
    kv = await etcd.get(key)
    assert kv is not None and kv.value == names[outcomes.index(True)].encode()
    assert kv.version == 1


async def test_lease_revoke_deletes_its_keys(etcd: EtcdClient, prefix: str) -> None:
    lease = await etcd.lease_grant(30)
    assert lease.id > 0 and lease.ttl == 30
    await etcd.put(prefix + "owned", "x", lease=lease.id)
    assert (await etcd.lease_keepalive(lease.id)) == 30
    info = await etcd.lease_time_to_live(lease.id, keys=True)
    assert info.granted_ttl == 30 and 0 < info.ttl <= 30
    assert info.keys == [(prefix + "owned").encode()]
    kv = await etcd.get(prefix + "owned")
    assert kv is not None and kv.lease == lease.id
    await etcd.lease_revoke(lease.id)
    assert await etcd.get(prefix + "owned") is None
    with pytest.raises(EtcdLeaseNotFound):
        await etcd.lease_revoke(lease.id)
    with pytest.raises(EtcdLeaseNotFound):
        await etcd.put(prefix + "late", "x", lease=lease.id)


async def test_a_lease_not_kept_alive_expires(etcd: EtcdClient, prefix: str) -> None:
    lease = await etcd.lease_grant(2)  # a real server's lease: it takes real seconds
    await etcd.put(prefix + "ephemeral", "x", lease=lease.id)
    async with asyncio.timeout(10):
        gone = False
        while not gone:
            await asyncio.sleep(0.2)
            gone = await etcd.get(prefix + "ephemeral") is None
    with pytest.raises(EtcdLeaseNotFound):
        await etcd.lease_keepalive(lease.id)
    with pytest.raises(EtcdLeaseNotFound):
        await etcd.lease_time_to_live(lease.id)


async def test_watch_sees_a_delete_of_another_key(etcd: EtcdClient, prefix: str) -> None:
    await etcd.put(prefix + "w/mine", "1")
    await etcd.put(prefix + "w/theirs", "2")
    async with etcd.watch(prefix + "w/", prefix=True, prev_kv=True) as events:
        deleted = await etcd.delete(prefix + "w/theirs")
        event = await asyncio.wait_for(anext(events), 10)
    assert event.type == "DELETE"
    assert event.kv.key == (prefix + "w/theirs").encode()
    assert event.kv.mod_revision == event.revision == deleted.revision
    assert event.prev_kv is not None and event.prev_kv.value == b"2"


async def test_watch_replays_from_a_revision_and_cancels_cleanly(
    etcd: EtcdClient, prefix: str
) -> None:
    first = await etcd.put(prefix + "r", "a")
    await etcd.put(prefix + "r", "b")
    await etcd.delete(prefix + "r")
    seen = []
    watch = etcd.watch(prefix + "r", start_revision=first.revision)
    async for event in watch:
        seen.append((event.type, event.kv.value))
        if len(seen) == 3:
            break
    await watch.aclose()
    assert seen == [("PUT", b"a"), ("PUT", b"b"), ("DELETE", b"")]

    waiting = asyncio.create_task(anext(aiter(etcd.watch(prefix + "quiet"))))
    await asyncio.sleep(0.2)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_errors_carry_the_servers_message(etcd: EtcdClient) -> None:
    with pytest.raises(EtcdError, match="key is not provided") as caught:
        await etcd.put(b"", "x")
    assert caught.value.code == 3  # gRPC InvalidArgument


async def test_no_endpoint_answering_is_unavailable(tmp_path: Path) -> None:
    # Ports the kernel just freed: nothing listens there.
    dead = [f"http://127.0.0.1:{port}" for port in free_ports(2)]
    async with EtcdClient(dead, timeout_seconds=1.0) as client:
        with pytest.raises(EtcdUnavailable, match="no etcd endpoint answered"):
            await client.get("k")
        with pytest.raises(EtcdUnavailable):
            await anext(aiter(client.watch("k")))


async def test_cluster_survives_one_loss_and_fails_in_bounded_time_without_quorum(
    tmp_path: Path,
) -> None:
    timeout = 2.0
    with etcd_cluster(tmp_path) as cluster:
        async with EtcdClient.from_url(cluster.url, timeout_seconds=timeout) as client:
            await client.put("k", "before")
            assert client.endpoints[0] == cluster.client_urls[0]
            async with client.watch("k") as watch:  # streaming from member 0
                cluster.kill(0)  # the member this client talks to: it must move on
                cluster.wait_for_leader([1, 2])  # if it was the leader, raft elects another
                for i in range(3):
                    await client.put("k", f"v{i}")
                    kv = await client.get("k")
                    assert kv is not None and kv.value == f"v{i}".encode()
                    swap = await client.txn([Compare.value("k", "==", f"v{i}")], [Put("k", "s")])
                    assert swap.succeeded
                assert (await client.range(Range("k", prefix=True))).count == 1
                # The watch moved to a live member from where it stopped: nothing lost.
                async with asyncio.timeout(10):
                    seen = [(await anext(watch)).kv.value for _ in range(6)]
                assert seen == [b"v0", b"s", b"v1", b"s", b"v2", b"s"]

            cluster.kill(1)  # one member of three left: no quorum
            async with asyncio.timeout(4 * timeout + 5):  # never hangs
                for call in (
                    lambda: client.put("k", "no quorum"),
                    lambda: client.get("k"),
                    lambda: client.txn([Compare.version("k", ">", 0)], [Put("k", "x")]),
                ):
                    with pytest.raises(EtcdUnavailable):
                        await call()
