"""Every operation needs a signed-in caller, and each caller's keys are its own."""

from __future__ import annotations

import base64

import httpx

from sysdesign.platform.clock import ManualClock
from tests.systems.cache.conftest import Headers
from tests.systems.cache.test_keys import assert_problem, put, url

ENDPOINTS = [
    ("GET", "/cache/v1/keys/k", None),
    ("PUT", "/cache/v1/keys/k", None),
    ("DELETE", "/cache/v1/keys/k", None),
    ("POST", "/cache/v1/keys/k/incr", {"amount": 1}),
    ("POST", "/cache/v1/mget", {"keys": ["k"]}),
    ("POST", "/cache/v1/mset", {"items": {"k": "YQ=="}}),
    ("GET", "/cache/v1/stats", None),
]


async def test_every_endpoint_needs_a_valid_bearer_token(client: httpx.AsyncClient) -> None:
    for method, path, body in ENDPOINTS:
        for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic x"}):
            response = await client.request(method, path, json=body, headers=headers)
            assert_problem(response, 401)
            assert response.headers["www-authenticate"].startswith("Bearer")


async def test_an_expired_token_is_refused(
    client: httpx.AsyncClient, alice: Headers, clock: ManualClock
) -> None:
    clock.advance(3600)
    assert_problem(await client.get(url("k"), headers=alice), 401, "token-expired")


async def test_callers_never_see_each_others_keys(
    client: httpx.AsyncClient, alice: Headers, bob: Headers
) -> None:
    assert (await put(client, alice, "session", b"alice's")).status_code == 201
    # Same name, another caller: absent for bob, and his write creates his own key.
    assert (await client.get(url("session"), headers=bob)).status_code == 404
    assert (await put(client, bob, "session", b"bob's", nx=True)).status_code == 201
    assert (await client.get(url("session"), headers=alice)).content == b"alice's"
    assert (await client.get(url("session"), headers=bob)).content == b"bob's"

    await put(client, alice, "only-alice", b"secret")
    assert_problem(await client.delete(url("only-alice"), headers=bob), 404)
    assert_problem(await put(client, bob, "only-alice", b"x", xx=True), 412)
    bobs = await client.post("/cache/v1/mget", json={"keys": ["only-alice"]}, headers=bob)
    assert bobs.json() == {"values": {"only-alice": None}}
    assert (await client.get(url("only-alice"), headers=alice)).content == b"secret"

    await client.post(url("count") + "/incr", json={"amount": 5}, headers=alice)
    bob_count = await client.post(url("count") + "/incr", headers=bob)
    assert bob_count.json()["value"] == 1

    items = {"items": {"shared": base64.b64encode(b"bob").decode()}}
    await client.post("/cache/v1/mset", json=items, headers=bob)
    assert (await client.get(url("shared"), headers=alice)).status_code == 404
    assert (await client.delete(url("session"), headers=bob)).status_code == 204
    assert (await client.get(url("session"), headers=alice)).content == b"alice's"
