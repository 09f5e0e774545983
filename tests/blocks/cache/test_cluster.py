"""``ClusterCache`` on real cache nodes: placement, replicas, failover, recovery, membership.

Most tests run nodes in this process (``CacheNode`` on free ports) and cut
one off by closing its listener and its clients, which keeps its data, as a
partition would. The kill test runs ``sysdesign cache-node`` processes and
sends one SIGKILL while readers are reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import pytest

from sysdesign.blocks.cache import CacheUnavailable, open_cache
from sysdesign.blocks.cache.cluster import ClusterCache
from sysdesign.blocks.cache.node import CacheNode
from sysdesign.platform.clock import ManualClock

KEYS = [f"k{i}" for i in range(600)]


@contextlib.asynccontextmanager
async def cluster_of(
    nodes: list[CacheNode], replicas: int, **options: int
) -> AsyncIterator[ClusterCache]:
    cluster = ClusterCache(
        [address(n) for n in nodes], replicas=replicas, timeout=5, retry_interval=3600, **options
    )
    await cluster.connect()
    try:
        yield cluster
    finally:
        await cluster.close()


@pytest.fixture
async def nodes(clock: ManualClock) -> AsyncIterator[list[CacheNode]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(CacheNode("127.0.0.1", 0, 0, clock=clock))
            for _ in range(4)
        ]


def address(node: CacheNode) -> str:
    return f"127.0.0.1:{node.port}"


def holders(nodes: list[CacheNode], key: str, now: float) -> set[str]:
    return {address(n) for n in nodes if n.store.get(key, now) is not None}


async def test_each_key_lives_on_exactly_its_r_owners(
    nodes: list[CacheNode], clock: ManualClock
) -> None:
    async with cluster_of(nodes, replicas=2) as cluster:
        await cluster.set_many({k: b"v" for k in KEYS[:300]})
        for k in KEYS[300:]:
            await cluster.set(k, b"v")
        for k in KEYS:
            assert holders(nodes, k, clock.time()) == set(cluster.owners(k))
        per_node = [len(n.store) for n in nodes]
        assert sum(per_node) == 2 * len(KEYS)
        for count in per_node:  # each node holds about R/N of the keys
            assert count / len(KEYS) == pytest.approx(2 / 4, abs=0.15)


async def test_atomic_updates_are_decided_by_the_primary_and_copied(
    nodes: list[CacheNode], clock: ManualClock
) -> None:
    async with cluster_of(nodes, replicas=3) as cluster:
        assert await cluster.incr("n", 5, ttl=30) == 5
        assert await cluster.incr("n", 2, ttl=99) == 7  # ttl only when created
        assert await cluster.compare_and_set("c", None, b"1", ttl=10) is True
        assert await cluster.compare_and_set("c", b"1", b"2") is True
        assert await cluster.compare_and_set("c", b"1", b"3") is False
        assert await cluster.set("x", b"a", only_if_absent=True) is True
        assert await cluster.set("x", b"b", only_if_absent=True) is False
        now = clock.time()
        for node in [n for n in nodes if address(n) in cluster.owners("n")]:
            assert node.store.get("n", now) == b"7"
            assert node.store.ttl("n", now) == pytest.approx(30, abs=0.01)
        for node in [n for n in nodes if address(n) in cluster.owners("c")]:
            assert node.store.get("c", now) == b"2" and node.store.ttl("c", now) is None
        assert {n.store.get("x", now) for n in nodes} - {None} == {b"a"}


async def test_reads_fail_over_to_a_replica_when_a_node_is_cut_off(
    nodes: list[CacheNode],
) -> None:
    async with cluster_of(nodes, replicas=2) as cluster:
        await cluster.set_many({k: k.encode() for k in KEYS})
        await nodes[0].close()
        for k in KEYS[:300]:
            assert await cluster.get(k) == k.encode()
        assert await cluster.get_many(KEYS) == {k: k.encode() for k in KEYS}
        assert cluster.failovers == 1
        assert not cluster.members[address(nodes[0])].up
        await cluster.ping()  # one node down of R = 2: every key still has an owner
        await nodes[1].close()
        with pytest.raises(CacheUnavailable, match="cache nodes down"):
            await cluster.ping()
        both = next(k for k in KEYS if set(cluster.owners(k)) == {address(n) for n in nodes[:2]})
        with pytest.raises(CacheUnavailable, match=f"every owner of key '{both}' is down"):
            await cluster.get(both)
        with pytest.raises(CacheUnavailable):
            await cluster.set(both, b"x")
        with pytest.raises(CacheUnavailable):
            await cluster.get_many(KEYS)


async def test_a_returning_node_never_serves_a_value_replaced_while_it_was_away(
    nodes: list[CacheNode], clock: ManualClock
) -> None:
    async with cluster_of(nodes, replicas=2) as cluster:
        away = nodes[0]
        mine = [k for k in KEYS if cluster.owners(k)[0] == address(away)][:20]
        await cluster.set_many({k: b"old" for k in mine})
        await away.close()  # cut off, keeping its data
        await cluster.set_many({k: b"new" for k in mine[:10]})
        assert await cluster.delete(*mine[10:]) == 10
        assert cluster.members[address(away)].hints.keys() == set(mine)
        await away.start()
        await cluster.check_nodes()
        assert cluster.members[address(away)].up
        assert not cluster.members[address(away)].hints
        for k in mine:  # the primary is back: a miss, never the old value
            assert await cluster.get(k) is None
            assert away.store.get(k, clock.time()) is None


async def test_a_node_that_missed_too_much_is_flushed_before_it_serves(
    nodes: list[CacheNode],
) -> None:
    async with cluster_of(nodes, replicas=2, hint_limit=5) as cluster:
        away = nodes[0]
        await cluster.set_many({k: b"old" for k in KEYS})
        await away.close()
        await cluster.set_many({k: b"new" for k in KEYS})
        member = cluster.members[address(away)]
        assert member.flush_on_return and not member.hints
        await cluster.check_nodes()
        assert not member.up  # still unreachable: stays down
        await away.start()
        await cluster.check_nodes()
        assert member.up and len(away.store) == 0
        assert set((await cluster.get_many(KEYS)).values()) <= {b"new"}


async def test_adding_and_removing_nodes_moves_about_1_over_n_of_the_keys(
    nodes: list[CacheNode],
) -> None:
    async with cluster_of(nodes[:3], replicas=1) as cluster:
        await cluster.set_many({k: b"v" for k in KEYS})
        await cluster.add_node(address(nodes[3]))
        found = await cluster.get_many(KEYS)
        moved = [k for k in KEYS if k not in found]
        assert all(cluster.owners(k) == [address(nodes[3])] for k in moved)
        assert len(moved) / len(KEYS) == pytest.approx(1 / 4, abs=0.08)
        await cluster.set_many({k: b"v" for k in moved})
        await cluster.remove_node(address(nodes[1]))
        assert address(nodes[1]) not in cluster.ring
        lost = len(KEYS) - len(await cluster.get_many(KEYS))
        assert lost / len(KEYS) == pytest.approx(1 / 4, abs=0.08)
        with pytest.raises(ValueError, match="already in the cluster"):
            await cluster.add_node(address(nodes[0]))
        with pytest.raises(ValueError, match="not in the cluster"):
            await cluster.remove_node("127.0.0.1:1")


async def test_a_cluster_with_no_node_answering_fails_to_connect() -> None:
    cluster = open_cache("sysdesign://127.0.0.1:1,127.0.0.1:2?socket_timeout=1")
    with pytest.raises(CacheUnavailable, match="no node of the cache cluster answers"):
        await cluster.connect()
    await cluster.close()


# --- a node process killed mid-run ------------------------------------------------


@contextlib.contextmanager
def node_process() -> Iterator[tuple[subprocess.Popen[str], str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "sysdesign.blocks.cache.node", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # "cache node on 127.0.0.1:PORT (...)"
        assert line.startswith("cache node on "), line
        yield process, line.split()[3]
    finally:
        process.kill()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


async def test_a_node_killed_mid_run_with_two_replicas_loses_no_reads() -> None:
    with contextlib.ExitStack() as stack:
        started = [stack.enter_context(node_process()) for _ in range(3)]
        url = "sysdesign://" + ",".join(a for _, a in started) + "?replicas=2&socket_timeout=5"
        cluster = open_cache(url)
        await cluster.connect()
        try:
            await cluster.set_many({k: k.encode() for k in KEYS})
            reads: list[bytes | None] = []
            killed = asyncio.Event()

            async def reader(offset: int) -> None:
                for i in range(1_500):
                    key = KEYS[(offset + i * 7) % len(KEYS)]
                    value = await cluster.get(key)
                    assert value == key.encode(), (key, value)
                    reads.append(value)
                    if i == 300 and offset == 0:
                        started[1][0].send_signal(signal.SIGKILL)
                        killed.set()

            await asyncio.gather(*(reader(offset) for offset in range(8)))
            assert killed.is_set() and len(reads) == 8 * 1_500
            assert started[1][0].wait(10) == -signal.SIGKILL
            assert isinstance(cluster, ClusterCache) and cluster.failovers == 1
        finally:
            await cluster.close()
