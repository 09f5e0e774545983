"""``incr``, ``mget``/``mset`` (values in base64) and ``stats``."""

from __future__ import annotations

import base64

import httpx

from tests.systems.cache.conftest import SHORT, Elapse, Headers
from tests.systems.cache.test_keys import assert_field, assert_problem, put, url


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


async def incr(
    client: httpx.AsyncClient, user: Headers, key: str, **body: object
) -> httpx.Response:
    return await client.post(url(key) + "/incr", json=body or None, headers=user)


async def test_incr_counts_from_zero_and_adds_any_amount(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    first = await client.post(url("hits") + "/incr", headers=alice)  # no body: amount 1
    assert first.status_code == 200
    assert first.json() == {"key": "hits", "value": 1}
    assert (await incr(client, alice, "hits", amount=41)).json()["value"] == 42
    assert (await incr(client, alice, "hits", amount=-50)).json()["value"] == -8
    assert (await client.get(url("hits"), headers=alice)).content == b"-8"
    # A value written as text counts too.
    await put(client, alice, "n", b"100")
    assert (await incr(client, alice, "n")).json()["value"] == 101


async def test_incr_ttl_applies_when_the_key_is_created_only(
    client: httpx.AsyncClient, alice: Headers, elapse: Elapse
) -> None:
    await incr(client, alice, "window", ttl=SHORT)
    await incr(client, alice, "window", ttl=3600)  # an existing key keeps its expiry
    assert float((await client.get(url("window"), headers=alice)).headers["cache-ttl"]) <= SHORT
    await elapse(SHORT + 0.1)
    assert (await incr(client, alice, "window")).json()["value"] == 1


async def test_incr_on_a_key_under_a_path_ending_in_incr(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    await put(client, alice, "x/incr", b"5")
    assert (await incr(client, alice, "x/incr")).json() == {"key": "x/incr", "value": 6}
    assert (await client.get(url("x/incr"), headers=alice)).content == b"6"
    assert (await client.get(url("x"), headers=alice)).status_code == 404


async def test_incr_on_a_value_that_is_not_an_integer_is_409(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    for value in (b"abc", b"1.5", b" 7", b"007", b"99999999999999999999"):
        await put(client, alice, "text", value)
        response = await incr(client, alice, "text")
        assert_problem(response, 409, "not-an-integer")
        assert (await client.get(url("text"), headers=alice)).content == value
    await put(client, alice, "max", b"%d" % (2**63 - 1))
    assert_problem(await incr(client, alice, "max"), 409, "not-an-integer")


async def test_bad_incr_requests_say_which_field(client: httpx.AsyncClient, alice: Headers) -> None:
    cases = [
        ({"amount": "one"}, "amount"),
        ({"amount": 1.5}, "amount"),
        ({"amount": True}, "amount"),
        ({"amount": "5"}, "amount"),
        ({"ttl": "60"}, "ttl"),
        ({"amount": 2**63}, "amount"),
        ({"ttl": 0}, "ttl"),
        ({"ttl": -3}, "ttl"),
        ({"by": 1}, "by"),
    ]
    for body, field in cases:
        assert_field(await incr(client, alice, "k", **body), field)
    assert (await client.get(url("k"), headers=alice)).status_code == 404


async def test_mset_then_mget_round_trip_any_bytes_with_nulls_for_misses(
    client: httpx.AsyncClient, alice: Headers, elapse: Elapse
) -> None:
    items = {"a": bytes(range(256)), "b/ü": b"", "c": b"plain"}
    stored = await client.post(
        "/cache/v1/mset",
        json={"items": {k: b64(v) for k, v in items.items()}, "ttl": SHORT},
        headers=alice,
    )
    assert stored.status_code == 200
    assert stored.json() == {"stored": 3}
    got = await client.post("/cache/v1/mget", json={"keys": ["c", "a", "zz", "b/ü"]}, headers=alice)
    assert got.status_code == 200
    values = got.json()["values"]
    assert list(values) == ["c", "a", "zz", "b/ü"]
    assert values["zz"] is None
    assert {k: base64.b64decode(v) for k, v in values.items() if v is not None} == items
    # Each is an ordinary key, with the batch's TTL.
    assert (await client.get(url("b/ü"), headers=alice)).headers["cache-ttl"]
    await elapse(SHORT + 0.1)
    after = await client.post("/cache/v1/mget", json={"keys": ["a", "c"]}, headers=alice)
    assert after.json() == {"values": {"a": None, "c": None}}


async def test_mset_without_ttl_keeps_keys(client: httpx.AsyncClient, alice: Headers) -> None:
    await client.post("/cache/v1/mset", json={"items": {"k": b64(b"v")}}, headers=alice)
    read = await client.get(url("k"), headers=alice)
    assert read.content == b"v"
    assert "cache-ttl" not in read.headers


async def test_bad_batches_say_which_field(client: httpx.AsyncClient, alice: Headers) -> None:
    too_many = [f"k{i}" for i in range(1001)]
    mget_cases = [
        ({"keys": []}, "keys"),
        ({"keys": too_many}, "keys"),
        ({"keys": ["ok", ""]}, "keys.1"),
        ({"keys": ["k" * 513]}, "keys.0"),
        ({"keys": "a"}, "keys"),
        ({}, "keys"),
    ]
    for body, field in mget_cases:
        assert_field(await client.post("/cache/v1/mget", json=body, headers=alice), field)
    mset_cases = [
        ({"items": {}}, "items"),
        ({"items": {k: "" for k in too_many}}, "items"),
        ({"items": {"a": "not base64!"}}, "items.a"),
        ({"items": {"a": "YWJj"[:3]}}, "items.a"),  # padding missing
        ({"items": {"a": "YQ==YQ=="}}, "items.a"),
        ({"items": {"a": 5}}, "items.a"),
        ({"items": {"": "YQ=="}}, "items"),
        ({"items": {"a": "YQ=="}, "ttl": 0}, "ttl"),
        ({"items": {"a": "YQ=="}, "extra": 1}, "extra"),
    ]
    for body, field in mset_cases:
        response = await client.post("/cache/v1/mset", json=body, headers=alice)
        body_ = assert_problem(response, 422)
        assert any(e["field"].startswith(field) for e in body_["errors"]), (body, body_)
    assert (await client.get(url("a"), headers=alice)).status_code == 404


async def test_a_key_that_is_not_utf8_is_refused(client: httpx.AsyncClient, alice: Headers) -> None:
    # JSON can carry a lone surrogate, which no UTF-8 text holds.
    raw = b'{"keys": ["ok", "\\ud800"]}'
    response = await client.post(
        "/cache/v1/mget", content=raw, headers={**alice, "Content-Type": "application/json"}
    )
    assert_field(response, "keys.1")


async def test_stats_count_hits_misses_and_keys(
    client: httpx.AsyncClient, alice: Headers, cache_backend: str
) -> None:
    await put(client, alice, "k", b"value")
    await client.get(url("k"), headers=alice)
    await client.get(url("missing"), headers=alice)
    response = await client.get("/cache/v1/stats", headers=alice)
    assert response.status_code == 200
    stats = response.json()
    assert set(stats) == {
        "backend",
        "hits",
        "misses",
        "hit_ratio",
        "evictions",
        "expirations",
        "keys",
        "used_bytes",
    }
    assert stats["backend"] == cache_backend
    if cache_backend == "memory":
        # One process, one fresh cache: the figures are exactly this test's.
        assert (stats["hits"], stats["misses"], stats["keys"]) == (1, 1, 1)
        assert stats["hit_ratio"] == 0.5
        assert stats["used_bytes"] > len("k") + len("value")
    else:
        # The whole server's figures, which other clients move too.
        assert stats["hits"] >= 1
        assert stats["misses"] >= 1
        assert stats["keys"] >= 1
        assert 0 < stats["hit_ratio"] < 1


async def test_expired_keys_are_counted(
    client: httpx.AsyncClient, alice: Headers, cache_backend: str, elapse: Elapse
) -> None:
    await put(client, alice, "k", b"v", ttl=SHORT)
    await elapse(SHORT + 0.1)
    assert (await client.get(url("k"), headers=alice)).status_code == 404
    stats = (await client.get("/cache/v1/stats", headers=alice)).json()
    assert stats["expirations"] >= 1
    if cache_backend == "memory":
        assert stats["keys"] == 0
