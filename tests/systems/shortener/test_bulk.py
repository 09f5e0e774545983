"""Many links at once: bulk creation, CSV import and export, QR codes, retired aliases,
and codes unique across 100k concurrent creations on two shards."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import segno
from sqlalchemy import func, select

from sysdesign.platform.app import create_app
from sysdesign.platform.clock import ManualClock
from sysdesign.platform.context import Platform
from sysdesign.systems.shortener.store import links_table
from tests.conftest import Headers, make_settings, open_client, sign_in
from tests.systems.shortener.conftest import shorten, two_shards

LINKS = "/shortener/v1/links"
ROUNDS = 50  # two clients x 50 bulk requests x 1,000 links = 100k


async def test_bulk_answers_each_item_and_creates_the_good_ones(
    client: httpx.AsyncClient, alice: Headers, bob: Headers
) -> None:
    await shorten(client, bob, alias="bobs-alias")
    items = [
        {"target": "https://example.com/1", "tags": ["a"]},
        {"target": "ftp://example.com/"},
        {"target": "https://example.com/2", "alias": "my-alias"},
        {"target": "https://example.com/3", "alias": "my-alias"},  # twice in one request
        {"target": "https://example.com/4", "alias": "bobs-alias"},  # someone else's
        {"target": "https://example.com/5", "password": "secret1"},  # not in bulk
        {"target": "https://example.com/6", "max_visits": 3},
    ]
    response = await client.post(f"{LINKS}/bulk", json={"links": items}, headers=alice)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["created"] == 3 and body["failed"] == 4
    results = body["items"]
    assert [r["index"] for r in results] == list(range(7))
    errors = {
        r["index"]: (r["error"]["status"], r["error"]["field"]) for r in results if r["error"]
    }
    assert errors == {1: (422, "target"), 3: (409, "alias"), 4: (409, "alias"),
                      5: (422, "password")}  # fmt: skip
    codes = [r["link"]["code"] for r in results if r["link"]]
    assert codes[1] == "my-alias"
    for code in codes:
        assert (await client.get(f"/s/{code}")).status_code == 302
    mine = await client.get(LINKS, headers=alice)
    assert sorted(link["code"] for link in mine.json()["items"]) == sorted(codes)


@pytest.mark.parametrize("links", [[], [{"target": "https://e.com/"}] * 1001, "x"])
async def test_bulk_takes_one_to_a_thousand(
    client: httpx.AsyncClient, alice: Headers, links: object
) -> None:
    response = await client.post(f"{LINKS}/bulk", json={"links": links}, headers=alice)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"].startswith("links")


async def test_bulk_needs_credentials(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{LINKS}/bulk", json={"links": [{"target": "https://e.com"}]})
    assert response.status_code == 401


async def test_csv_import_reports_rows_and_export_gives_them_back(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    text = (
        "target,alias,title,tags,expires_at,max_visits,redirect_status,forward_query\r\n"
        "https://example.com/a,,Page A,docs web,,,301,true\r\n"
        "https://example.com/b,b-alias,=HYPERLINK(1),,2999-01-01T00:00:00Z,5,,\r\n"
        "not a url,,,,,,,\r\n"
        "https://example.com/c,,,,,lots,,\r\n"
        "https://example.com/d,,,,,,307,\r\n"
    )
    headers = {**alice, "content-type": "text/csv"}
    response = await client.post(f"{LINKS}/import", content=text.encode(), headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["created"] == 2
    errors = {r["index"]: r["error"]["field"] for r in body["items"] if r["error"]}
    assert errors == {2: "target", 3: "max_visits", 4: "redirect_status"}
    first = body["items"][0]["link"]
    assert first["tags"] == ["docs", "web"] and first["redirect_status"] == 301
    assert first["forward_query"] is True
    assert body["items"][1]["link"]["max_visits"] == 5

    exported = await client.get(f"{LINKS}.csv", headers=alice)
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert {r["code"] for r in rows} == {first["code"], "b-alias"}
    by_code = {r["code"]: r for r in rows}
    assert by_code["b-alias"]["title"] == "'=HYPERLINK(1)"  # not run as a formula
    assert by_code["b-alias"]["expires_at"] == "2999-01-01T00:00:00Z"
    assert by_code[first["code"]]["short_url"] == first["short_url"]

    # The export imports back (its read-only columns are skipped): new codes.
    again = await client.post(f"{LINKS}/import", content=exported.content, headers=headers)
    assert again.json()["created"] == 2


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"alias,title\nabc,x\n", "text/csv", 422),  # no target column
        (b"target,colour\nhttps://e.com,red\n", "text/csv", 422),  # unknown column
        (b"", "text/csv", 422),
        (b"target\n\xff\xfe\n", "text/csv", 422),  # not UTF-8
        (b"target\nhttps://e.com\n", "application/json", 415),
    ],
)
async def test_a_bad_csv_is_refused_whole(
    client: httpx.AsyncClient, alice: Headers, body: bytes, content_type: str, status: int
) -> None:
    headers = {**alice, "content-type": content_type}
    response = await client.post(f"{LINKS}/import", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"


async def test_an_import_of_more_than_a_thousand_rows_is_refused(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    text = "target\n" + "https://example.com/x\n" * 1001
    headers = {**alice, "content-type": "text/csv"}
    response = await client.post(f"{LINKS}/import", content=text.encode(), headers=headers)
    assert response.status_code == 422 and "1000" in response.json()["errors"][0]["message"]


async def test_the_export_pages_through_every_link(
    client: httpx.AsyncClient, alice: Headers, bob: Headers, clock: ManualClock
) -> None:
    batch = {"links": [{"target": f"https://example.com/{i}"} for i in range(600)]}
    for _ in range(2):
        assert (await client.post(f"{LINKS}/bulk", json=batch, headers=alice)).status_code == 200
        clock.advance(60)  # the next batch is within the default 1000/minute
    await shorten(client, bob)
    rows = list(csv.DictReader(io.StringIO((await client.get(f"{LINKS}.csv", headers=alice)).text)))
    assert len(rows) == 1200 and len({r["code"] for r in rows}) == 1200


@pytest.mark.parametrize("kind", ["svg", "png"])
async def test_the_qr_code_encodes_the_short_url(
    client: httpx.AsyncClient, alice: Headers, bob: Headers, kind: str
) -> None:
    link = await shorten(client, alice)
    response = await client.get(f"{LINKS}/{link['code']}/qr.{kind}?scale=3", headers=alice)
    assert response.status_code == 200
    expected = io.BytesIO()
    segno.make(link["short_url"], error="m").save(expected, kind=kind, scale=3, border=4)
    assert response.content == expected.getvalue()
    if kind == "png":
        assert response.headers["content-type"] == "image/png"
        assert response.content.startswith(b"\x89PNG\r\n\x1a\n")
    else:
        assert response.headers["content-type"].startswith("image/svg+xml")
        assert b"<svg" in response.content
    assert (await client.get(f"{LINKS}/{link['code']}/qr.{kind}", headers=bob)).status_code == 404
    bad = await client.get(f"{LINKS}/{link['code']}/qr.gif", headers=alice)
    assert bad.status_code == 422
    assert (
        await client.get(f"{LINKS}/{link['code']}/qr.svg?scale=0", headers=alice)
    ).status_code == 422


async def test_a_deleted_alias_stays_its_owners(
    client: httpx.AsyncClient, alice: Headers, bob: Headers
) -> None:
    await shorten(client, alice, alias="spring-sale")
    assert (await client.delete(f"{LINKS}/spring-sale", headers=alice)).status_code == 204
    assert (await client.get("/s/spring-sale")).status_code == 404
    taken = await client.post(
        LINKS, json={"target": "https://evil.example/", "alias": "spring-sale"}, headers=bob
    )
    assert taken.status_code == 409
    in_bulk = await client.post(
        f"{LINKS}/bulk",
        json={"links": [{"target": "https://evil.example/", "alias": "spring-sale"}]},
        headers=bob,
    )
    assert in_bulk.json()["items"][0]["error"]["status"] == 409
    back = await shorten(client, alice, alias="spring-sale", target="https://example.com/new")
    assert back["code"] == "spring-sale"
    assert (await client.get("/s/spring-sale")).headers["location"] == "https://example.com/new"


# --- 100k concurrent creations --------------------------------------------------------


async def _client(
    tmp_path: Path, clock: ManualClock, worker_id: int
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        tmp_path,
        database_url=two_shards(tmp_path),
        ratelimit_enabled=False,
        outbox_relay=False,
        worker_id=worker_id,  # as each process has its own
    )
    async for client in open_client(create_app(settings, clock=clock)):
        yield client


async def test_codes_are_unique_across_100k_concurrent_creations_on_two_shards(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two app instances (two code allocators, as two processes would have) on the
    same two shards, each sending 50 bulk requests of 1,000 links at once."""
    monkeypatch.setenv("SYSDESIGN_SHORTENER_CREATE_LIMIT_USER", "off")
    monkeypatch.setenv("SYSDESIGN_SHORTENER_CREATE_LIMIT_IP", "off")
    first, second = _client(tmp_path, clock, 1), _client(tmp_path, clock, 2)
    try:
        a, b = await anext(first), await anext(second)
        alice = await sign_in(a, "alice@example.com")  # one data dir: one signing secret
        batch = {"links": [{"target": f"https://example.com/{i}"} for i in range(1000)]}
        responses = await asyncio.gather(
            *(c.post(f"{LINKS}/bulk", json=batch, headers=alice) for c in [a, b] * ROUNDS)
        )
        codes: list[str] = []
        for response in responses:
            assert response.status_code == 200, response.text[:300]
            assert response.json()["failed"] == 0
            codes.extend(item["link"]["code"] for item in response.json()["items"])
        assert len(codes) == len(set(codes)) == ROUNDS * 2000
        assert all(len(code) == 7 for code in codes)

        platform: Platform = a._transport.app.state.platform  # type: ignore[attr-defined]
        per_shard = []
        for db in platform.db.shards:
            async with db.read() as conn:
                query = select(func.count(), func.count(links_table.c.code.distinct()))
                per_shard.append(tuple((await conn.execute(query)).one()))
        assert sum(total for total, _ in per_shard) == ROUNDS * 2000
        assert all(total == distinct for total, distinct in per_shard)
        assert all(total > ROUNDS * 600 for total, _ in per_shard)  # both shards took a share
        sample = codes[::997]
        for code in sample:
            async with platform.db.for_key(code).read() as conn:
                found = await conn.execute(
                    select(links_table.c.id).where(links_table.c.code == code)
                )
                assert found.first() is not None
    finally:
        await first.aclose()
        await second.aclose()
