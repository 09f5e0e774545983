"""``GET /v1/cluster``: the ring, its nodes and their health, when the cache is a cluster.

Read-only on purpose: placement is computed by every client from the node
list in its own ``SYSDESIGN_CACHE_URL``, so a membership change made through
one process would leave the others placing keys on the old ring. Nodes join
and leave by changing that URL (or, in a program, ``ClusterCache.add_node``
and ``remove_node`` on every client).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from sysdesign.blocks.cache import Cache
from sysdesign.blocks.cache.cluster import ClusterCache
from sysdesign.platform.http import Problem


class NodeStatsOut(BaseModel):
    hits: int
    misses: int
    evictions: int
    expirations: int
    keys: int
    used_bytes: int


class NodeOut(BaseModel):
    address: str = Field(description="host:port")
    up: bool = Field(description="false while this process routes around the node")
    share: float = Field(description="The fraction of the hash space the node owns")
    failures: int = Field(description="Calls to it that failed since this process started")
    pending_hints: int = Field(description="Keys to delete on it before it serves again")
    flush_on_return: bool = Field(description="It missed too much: flushed before it serves")
    stats: NodeStatsOut | None = Field(description="Its own figures; null while it is down")


class ClusterOut(BaseModel):
    replicas: int = Field(description="Nodes that hold each key")
    vnodes: int = Field(description="Points on the ring per node")
    failovers: int = Field(description="Times this process saw a node go down")
    nodes: list[NodeOut]


class OwnersOut(BaseModel):
    key: str
    owners: Annotated[list[str], Field(description="The nodes holding the key, primary first")]


def _cluster_of(cache: Cache) -> ClusterCache:
    if not isinstance(cache, ClusterCache):
        raise Problem(
            404,
            f"The cache is {cache.name}, not a cluster of cache nodes (sysdesign://...)",
            slug="not-a-cluster",
            title="Not a cluster",
        )
    return cache


async def cluster_status(cache: Cache) -> ClusterOut:
    cluster = _cluster_of(cache)
    shares = cluster.ring.shares()
    stats = await cluster.node_stats()
    nodes = []
    for address, member in cluster.members.items():
        figures = stats.get(address)
        nodes.append(
            NodeOut(
                address=address,
                up=member.up,
                share=round(shares[address], 6),
                failures=member.failures,
                pending_hints=len(member.hints),
                flush_on_return=member.flush_on_return,
                stats=None if figures is None else NodeStatsOut(**vars(figures)),
            )
        )
    return ClusterOut(
        replicas=cluster.replicas,
        vnodes=cluster.ring.vnodes,
        failovers=cluster.failovers,
        nodes=nodes,
    )


def key_owners(cache: Cache, key: str, stored_as: str) -> OwnersOut:
    return OwnersOut(key=key, owners=_cluster_of(cache).owners(stored_as))
