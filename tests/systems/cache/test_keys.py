"""``/cache/v1/keys/{key}``: values as raw bytes, TTLs, conditional writes, ETags."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from tests.systems.cache.conftest import SHORT, Elapse, Headers


def url(key: str) -> str:
    return "/cache/v1/keys/" + quote(key, safe="")


async def put(
    client: httpx.AsyncClient, user: Headers, key: str, value: bytes, **params: object
) -> httpx.Response:
    headers = {**user, **{k: str(v) for k, v in params.pop("headers", {}).items()}}  # type: ignore[attr-defined]
    query = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}
    return await client.put(url(key), content=value, params=query, headers=headers)


def assert_problem(response: httpx.Response, status: int, slug: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    if slug is not None:
        assert body["type"].endswith("/" + slug), body
    return body


def assert_field(response: httpx.Response, field: str) -> None:
    body = assert_problem(response, 422)
    assert field in [e["field"] for e in body["errors"]], body


async def test_a_value_is_stored_created_then_replaced_and_read_back_as_raw_bytes(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    value = bytes(range(256))
    created = await put(client, alice, "blob", value)
    assert created.status_code == 201
    assert created.json() == {
        "key": "blob",
        "created": True,
        "etag": created.headers["etag"],
        "ttl": None,
    }
    read = await client.get(url("blob"), headers=alice)
    assert read.status_code == 200
    assert read.content == value
    assert read.headers["content-type"] == "application/octet-stream"
    assert read.headers["etag"] == created.headers["etag"]
    assert "cache-ttl" not in read.headers

    replaced = await put(client, alice, "blob", b"second")
    assert replaced.status_code == 200
    assert replaced.json()["created"] is False
    assert replaced.headers["etag"] != created.headers["etag"]
    assert (await client.get(url("blob"), headers=alice)).content == b"second"


async def test_any_content_type_and_an_empty_value_are_stored_as_bytes(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    sent = await client.put(
        url("doc"), content=b'{"a": 1}', headers={**alice, "Content-Type": "application/json"}
    )
    assert sent.status_code == 201
    read = await client.get(url("doc"), headers=alice)
    assert read.content == b'{"a": 1}'
    assert read.headers["content-type"] == "application/octet-stream"
    assert (await put(client, alice, "empty", b"")).status_code == 201
    empty = await client.get(url("empty"), headers=alice)
    assert empty.status_code == 200
    assert empty.content == b""


async def test_keys_may_hold_slashes_spaces_and_any_unicode(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    keys = ["a/b/c", "with space?&#", "ключ:日本", "x/incr", "%2F", "k" * 512]
    for i, key in enumerate(keys):
        assert (await put(client, alice, key, b"%d" % i)).status_code == 201, key
    for i, key in enumerate(keys):
        read = await client.get(url(key), headers=alice)
        assert read.content == b"%d" % i, key
    # A slash needs no encoding: the key runs to the end of the path.
    assert (await client.get("/cache/v1/keys/a/b/c", headers=alice)).content == b"0"


async def test_a_key_expires_after_its_ttl_and_reports_what_it_has_left(
    client: httpx.AsyncClient, alice: Headers, elapse: Elapse
) -> None:
    stored = await put(client, alice, "session", b"s", ttl=SHORT)
    assert stored.json()["ttl"] == SHORT
    read = await client.get(url("session"), headers=alice)
    assert 0 < float(read.headers["cache-ttl"]) <= SHORT
    await elapse(SHORT + 0.1)
    gone = await client.get(url("session"), headers=alice)
    assert_problem(gone, 404, "key-not-found")


async def test_a_write_without_ttl_removes_the_expiry(
    client: httpx.AsyncClient, alice: Headers, elapse: Elapse
) -> None:
    await put(client, alice, "k", b"1", ttl=SHORT)
    await put(client, alice, "k", b"2")
    await elapse(SHORT + 0.1)
    read = await client.get(url("k"), headers=alice)
    assert read.content == b"2"
    assert "cache-ttl" not in read.headers


async def test_nx_writes_only_an_absent_key_and_xx_only_a_present_one(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    assert (await put(client, alice, "lock", b"me", nx=True)).status_code == 201
    refused = await put(client, alice, "lock", b"you", nx=True)
    assert "nx" in assert_problem(refused, 412, "precondition-failed")["detail"]
    assert (await client.get(url("lock"), headers=alice)).content == b"me"

    assert_problem(await put(client, alice, "absent", b"x", xx=True), 412)
    assert (await client.get(url("absent"), headers=alice)).status_code == 404
    assert (await put(client, alice, "lock", b"you", xx=True)).status_code == 200
    assert (await client.get(url("lock"), headers=alice)).content == b"you"


async def test_nx_and_xx_together_are_refused_naming_the_field(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    response = await put(client, alice, "k", b"v", nx=True, xx=True)
    assert_field(response, "xx")
    assert (await client.get(url("k"), headers=alice)).status_code == 404


async def test_if_match_is_compare_and_set_on_the_value_read(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    first = (await put(client, alice, "counter", b"1")).headers["etag"]
    # Two writers read the same version; only the first write lands.
    ok = await put(client, alice, "counter", b"2", headers={"If-Match": first})
    assert ok.status_code == 200
    late = await put(client, alice, "counter", b"2b", headers={"If-Match": first})
    assert "changed" in assert_problem(late, 412, "precondition-failed")["detail"]
    assert (await client.get(url("counter"), headers=alice)).content == b"2"
    # Any of a list matches; a weak tag never does for If-Match.
    current = ok.headers["etag"]
    listed = await put(client, alice, "counter", b"3", headers={"If-Match": f'"x", {current}'})
    assert listed.status_code == 200
    weak = await put(
        client, alice, "counter", b"4", headers={"If-Match": "W/" + listed.headers["etag"]}
    )
    assert_problem(weak, 412)
    assert (await put(client, alice, "counter", b"5", headers={"If-Match": "*"})).status_code == 200
    assert_problem(await put(client, alice, "none", b"1", headers={"If-Match": "*"}), 412)
    assert_problem(await put(client, alice, "none", b"1", headers={"If-Match": first}), 412)


async def test_if_none_match_star_creates_only(client: httpx.AsyncClient, alice: Headers) -> None:
    created = await put(client, alice, "once", b"a", headers={"If-None-Match": "*"})
    assert created.status_code == 201
    refused = await put(client, alice, "once", b"b", headers={"If-None-Match": "*"})
    assert_problem(refused, 412)
    tag = created.headers["etag"]
    assert_problem(await put(client, alice, "once", b"c", headers={"If-None-Match": tag}), 412)
    other = await put(client, alice, "once", b"d", headers={"If-None-Match": '"other"'})
    assert other.status_code == 200


async def test_a_conditional_write_keeps_its_ttl(
    client: httpx.AsyncClient, alice: Headers, elapse: Elapse
) -> None:
    tag = (await put(client, alice, "k", b"1")).headers["etag"]
    assert (await put(client, alice, "k", b"2", ttl=SHORT, headers={"If-Match": tag})).is_success
    assert "cache-ttl" in (await client.get(url("k"), headers=alice)).headers
    await elapse(SHORT + 0.1)
    assert (await client.get(url("k"), headers=alice)).status_code == 404


async def test_malformed_etag_headers_are_refused_naming_the_header(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    for header in ("If-Match", "If-None-Match"):
        response = await put(client, alice, "k", b"v", headers={header: "no-quotes"})
        assert_field(response, header.lower())
    response = await client.get(url("k"), headers={**alice, "If-None-Match": "W/x"})
    assert_field(response, "if-none-match")


async def test_get_with_if_none_match_answers_304_while_the_value_is_the_same(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    tag = (await put(client, alice, "page", b"<html>", ttl=60)).headers["etag"]
    for held in (tag, "W/" + tag, f'"old", {tag}', "*"):
        response = await client.get(url("page"), headers={**alice, "If-None-Match": held})
        assert response.status_code == 304, held
        assert response.content == b""
        assert response.headers["etag"] == tag
        assert "cache-ttl" in response.headers
    await put(client, alice, "page", b"<html>2")
    changed = await client.get(url("page"), headers={**alice, "If-None-Match": tag})
    assert changed.status_code == 200
    assert changed.content == b"<html>2"


async def test_delete_removes_a_key_once(client: httpx.AsyncClient, alice: Headers) -> None:
    await put(client, alice, "k", b"v")
    deleted = await client.delete(url("k"), headers=alice)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert_problem(await client.delete(url("k"), headers=alice), 404, "key-not-found")
    assert_problem(await client.get(url("k"), headers=alice), 404, "key-not-found")


@pytest.mark.parametrize("ttl", ["0", "-1", "abc", "nan", "inf", "315360001"])
async def test_a_bad_ttl_is_refused_naming_the_field(
    client: httpx.AsyncClient, alice: Headers, ttl: str
) -> None:
    response = await client.put(url("k"), content=b"v", params={"ttl": ttl}, headers=alice)
    assert_field(response, "ttl")


async def test_an_empty_or_too_long_key_is_refused_naming_the_field(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    for method in ("GET", "PUT", "DELETE"):
        for path in ("/cache/v1/keys/", url("k" * 513)):
            response = await client.request(method, path, content=b"v", headers=alice)
            assert_field(response, "key")
    assert_field(await client.post("/cache/v1/keys//incr", headers=alice), "key")


async def test_a_value_over_the_body_limit_is_413(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    response = await put(client, alice, "big", b"x" * (1_048_576 + 1))
    assert_problem(response, 413)
    assert (await client.get(url("big"), headers=alice)).status_code == 404


async def test_head_says_whether_a_key_exists_without_its_value(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    tag = (await put(client, alice, "k", b"value", ttl=60)).headers["etag"]
    found = await client.head(url("k"), headers=alice)
    assert found.status_code == 200
    assert found.content == b""
    assert found.headers["etag"] == tag
    assert float(found.headers["cache-ttl"]) <= 60
    missing = await client.head(url("nope"), headers=alice)
    assert missing.status_code == 404
    assert (await client.head(url("k"))).status_code == 401
