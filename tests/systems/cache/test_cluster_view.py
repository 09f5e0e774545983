"""``GET /cache/v1/cluster`` and ``/cluster/owners/{key}`` on three cache nodes in this process."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from sysdesign.blocks.cache.node import CacheNode
from sysdesign.platform.app import create_app
from sysdesign.platform.clock import ManualClock
from tests.conftest import Headers, make_settings, open_client, sign_in


@pytest.fixture
async def nodes() -> AsyncIterator[list[CacheNode]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(CacheNode(port=0)) for _ in range(3)]


@pytest.fixture
async def cluster_client(
    tmp_path: Path, nodes: list[CacheNode], clock: ManualClock
) -> AsyncIterator[httpx.AsyncClient]:
    addresses = ",".join(f"127.0.0.1:{n.port}" for n in nodes)
    settings = make_settings(
        tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path}/app.db",
        cache_url=f"sysdesign://{addresses}?replicas=2&socket_timeout=5",
    )
    async for c in open_client(create_app(settings, clock=clock)):
        yield c


async def test_the_cluster_view_shows_nodes_shares_health_and_owners(
    cluster_client: httpx.AsyncClient, nodes: list[CacheNode]
) -> None:
    alice = await sign_in(cluster_client, "alice@example.com")
    put = await cluster_client.put("/cache/v1/keys/a/b", content=b"v", headers=alice)
    assert put.status_code == 201
    owners = await cluster_client.get("/cache/v1/cluster/owners/a/b", headers=alice)
    assert owners.status_code == 200
    assert owners.json()["key"] == "a/b"
    held = owners.json()["owners"]
    assert len(held) == 2
    assert {f"127.0.0.1:{n.port}" for n in nodes if len(n.store)} == set(held)

    view = await cluster_client.get("/cache/v1/cluster", headers=alice)
    assert view.status_code == 200
    body = view.json()
    assert (body["replicas"], body["vnodes"], body["failovers"]) == (2, 160, 0)
    assert [n["address"] for n in body["nodes"]] == [f"127.0.0.1:{n.port}" for n in nodes]
    assert sum(n["share"] for n in body["nodes"]) == pytest.approx(1.0, abs=1e-5)
    assert all(n["up"] and n["stats"] is not None for n in body["nodes"])
    assert sum(n["stats"]["keys"] for n in body["nodes"]) == 2

    gone = next(n for n in nodes if f"127.0.0.1:{n.port}" == held[0])
    await gone.close()
    read = await cluster_client.get("/cache/v1/keys/a/b", headers=alice)
    assert read.status_code == 200 and read.content == b"v"  # from the replica
    body = (await cluster_client.get("/cache/v1/cluster", headers=alice)).json()
    down = next(n for n in body["nodes"] if n["address"] == held[0])
    assert (down["up"], down["stats"], body["failovers"]) == (False, None, 1)
    assert down["failures"] >= 1
    write = await cluster_client.put("/cache/v1/keys/a/b", content=b"w", headers=alice)
    assert write.status_code == 200
    down = next(
        n
        for n in (await cluster_client.get("/cache/v1/cluster", headers=alice)).json()["nodes"]
        if n["address"] == held[0]
    )
    assert down["pending_hints"] == 1


async def test_the_cluster_view_needs_a_caller_and_a_cluster(
    client: httpx.AsyncClient, alice: Headers, cache_backend: str
) -> None:
    assert (await client.get("/cache/v1/cluster")).status_code == 401
    assert (await client.get("/cache/v1/cluster/owners/k")).status_code == 401
    for path in ("/cache/v1/cluster", "/cache/v1/cluster/owners/k"):
        response = await client.get(path, headers=alice)
        if cache_backend == "cluster":
            assert response.status_code == 200
        else:
            assert response.status_code == 404
            problem = response.json()
            assert problem["type"].endswith("/not-a-cluster")
            assert "not a cluster" in problem["detail"]
