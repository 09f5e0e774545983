"""``/locks/v1`` over HTTP: leases, long-poll waiting, fencing tokens, modes, errors."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from sysdesign.platform.clock import ManualClock
from tests.conftest import Headers

BASE = "/locks/v1/locks"


async def acquire(
    client: httpx.AsyncClient, user: Headers, name: str, **body: object
) -> httpx.Response:
    return await client.post(f"{BASE}/{name}/acquire", json={"ttl": 30, **body}, headers=user)


async def test_acquire_inspect_release_and_tokens(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    first = await acquire(client, alice, "report", label="worker-1")
    assert first.status_code == 200, first.text
    lease = first.json()
    assert lease["name"] == "report" and lease["mode"] == "exclusive"
    assert lease["owner"].endswith("/worker-1") and len(lease["lease_id"]) == 32
    busy = await acquire(client, alice, "report")
    assert busy.status_code == 409 and busy.headers["retry-after"] == "1"
    assert busy.json()["type"].endswith("/lock-busy")
    state = (await client.get(f"{BASE}/report", headers=alice)).json()
    assert [h["token"] for h in state["holders"]] == [lease["token"]] and state["waiters"] == []
    assert "lease_id" not in state["holders"][0]  # only the holder knows it
    assert (await client.get(BASE, headers=alice)).json() == {"names": ["report"]}
    body = {"lease_id": lease["lease_id"]}
    released = await client.post(f"{BASE}/report/release", json=body, headers=alice)
    assert released.json() == {"released": True}
    again = await client.post(f"{BASE}/report/release", json=body, headers=alice)
    assert again.status_code == 200 and again.json() == {"released": False}
    second = (await acquire(client, alice, "report")).json()
    assert second["token"] > lease["token"]


async def test_acquire_long_polls_in_its_place(client: httpx.AsyncClient, alice: Headers) -> None:
    holder = (await acquire(client, alice, "job")).json()
    waiting = asyncio.create_task(acquire(client, alice, "job", wait=30))
    for _ in range(200):
        if (await client.get(f"{BASE}/job", headers=alice)).json()["waiters"]:
            break
        await asyncio.sleep(0.01)
    assert not waiting.done()
    body = {"lease_id": holder["lease_id"]}
    await client.post(f"{BASE}/job/release", json=body, headers=alice)
    granted = await asyncio.wait_for(waiting, 10)
    assert granted.status_code == 200 and granted.json()["token"] > holder["token"]


async def test_a_lapsed_lease_is_gone_and_renewal_says_so(
    client: httpx.AsyncClient, alice: Headers, clock: ManualClock
) -> None:
    lease = (await acquire(client, alice, "short", ttl=5)).json()
    renewed = await client.post(
        f"{BASE}/short/renew", json={"lease_id": lease["lease_id"], "ttl": 5}, headers=alice
    )
    assert renewed.status_code == 200 and renewed.json()["token"] == lease["token"]
    clock.advance(6)
    lost = await client.post(
        f"{BASE}/short/renew", json={"lease_id": lease["lease_id"], "ttl": 5}, headers=alice
    )
    assert lost.status_code == 410 and lost.json()["type"].endswith("/lease-lost")
    taken = (await acquire(client, alice, "short")).json()
    assert taken["token"] > lease["token"]


async def test_shared_and_permit_modes(client: httpx.AsyncClient, alice: Headers) -> None:
    r1 = await acquire(client, alice, "doc", mode="shared")
    r2 = await acquire(client, alice, "doc", mode="shared")
    assert r1.status_code == r2.status_code == 200
    assert (await acquire(client, alice, "doc")).status_code == 409
    for _ in range(2):
        assert (await acquire(client, alice, "pool", mode="permit", permits=2)).status_code == 200
    assert (await acquire(client, alice, "pool", mode="permit", permits=2)).status_code == 409
    other = await acquire(client, alice, "pool", mode="permit", permits=3)
    assert other.status_code == 409
    assert other.json()["type"].endswith("/lock-in-use-otherwise")


async def test_names_are_per_caller(
    client: httpx.AsyncClient, alice: Headers, bob: Headers
) -> None:
    assert (await acquire(client, alice, "shared-name")).status_code == 200
    assert (await acquire(client, bob, "shared-name")).status_code == 200  # his own lock
    assert (await client.get(BASE, headers=bob)).json() == {"names": ["shared-name"]}
    alices = (await client.get(f"{BASE}/shared-name", headers=alice)).json()
    assert len(alices["holders"]) == 1 and alices["holders"][0]["owner"].startswith("user:")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"ttl": 0}, "ttl"),
        ({"ttl": 0.01}, "ttl"),
        ({"ttl": 86_401}, "ttl"),
        ({"ttl": 5, "wait": 61}, "wait"),
        ({"ttl": 5, "wait": -1}, "wait"),
        ({"ttl": 5, "mode": "both"}, "mode"),
        ({"ttl": 5, "permits": 2}, "permits"),
        ({"ttl": 5, "mode": "permit", "permits": 0}, "permits"),
        ({"ttl": 5, "label": "x" * 101}, "label"),
        ({"ttl": 5, "colour": "red"}, "colour"),
        ({}, "ttl"),
    ],
)
async def test_bad_acquires_say_which_field(
    client: httpx.AsyncClient, alice: Headers, body: dict[str, object], field: str
) -> None:
    response = await client.post(f"{BASE}/x/acquire", json=body, headers=alice)
    assert response.status_code == 422, response.text
    assert field in {e["field"] for e in response.json()["errors"]}


async def test_other_bad_requests(client: httpx.AsyncClient, alice: Headers) -> None:
    bad_id = await client.post(f"{BASE}/x/release", json={"lease_id": "nope"}, headers=alice)
    assert bad_id.status_code == 422
    no_ttl = await client.post(f"{BASE}/x/renew", json={"lease_id": "a" * 32}, headers=alice)
    assert no_ttl.status_code == 422
    long_name = await acquire(client, alice, "n" * 201)
    assert long_name.status_code == 422
    assert (await client.get(BASE)).status_code == 401
    assert (await client.post(f"{BASE}/x/acquire", json={"ttl": 5})).status_code == 401


@pytest.mark.parametrize("name", ["a%01b", "a%7Fb", "%C2%81", "a%0Db"])
async def test_names_with_control_characters_are_refused(
    client: httpx.AsyncClient, alice: Headers, name: str
) -> None:
    response = await client.post(f"{BASE}/{name}/acquire", json={"ttl": 5}, headers=alice)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "name"
