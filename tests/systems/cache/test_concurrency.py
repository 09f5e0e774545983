"""What makes a shared cache hard to use safely: many callers at once. Increments
are never lost, and of writers racing on one version exactly one wins."""

from __future__ import annotations

import asyncio

import httpx

from tests.systems.cache.conftest import Headers
from tests.systems.cache.test_keys import put, url

CALLERS = 40


async def test_concurrent_increments_are_never_lost(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    responses = await asyncio.gather(
        *(client.post(url("hits") + "/incr", headers=alice) for _ in range(CALLERS))
    )
    assert all(r.status_code == 200 for r in responses)
    # Each caller saw a different count: no two read the same before adding.
    assert sorted(r.json()["value"] for r in responses) == list(range(1, CALLERS + 1))
    assert (await client.get(url("hits"), headers=alice)).content == b"%d" % CALLERS


async def test_of_writers_racing_on_one_etag_exactly_one_wins(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    tag = (await put(client, alice, "doc", b"v0")).headers["etag"]
    responses = await asyncio.gather(
        *(
            put(client, alice, "doc", b"v%d" % (i + 1), headers={"If-Match": tag})
            for i in range(CALLERS)
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [412] * (CALLERS - 1)
    (winner,) = [r for r in responses if r.status_code == 200]
    read = await client.get(url("doc"), headers=alice)
    assert read.headers["etag"] == winner.headers["etag"]


async def test_of_creators_racing_with_nx_exactly_one_creates(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    responses = await asyncio.gather(
        *(put(client, alice, "leader", b"%d" % i, nx=True) for i in range(CALLERS))
    )
    assert sorted(r.status_code for r in responses) == [201] + [412] * (CALLERS - 1)
    (winner,) = [r for r in responses if r.status_code == 201]
    read = await client.get(url("leader"), headers=alice)
    assert read.headers["etag"] == winner.headers["etag"]


async def test_plain_writers_racing_on_a_new_key_create_it_once(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    responses = await asyncio.gather(
        *(put(client, alice, "fresh", b"%d" % i) for i in range(CALLERS))
    )
    assert sorted(r.status_code for r in responses) == [200] * (CALLERS - 1) + [201]
