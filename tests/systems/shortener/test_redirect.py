"""``GET /s/{code}``: 301/302, query forwarding, 404 and 410 pages, expiry and
visit limits on the manual clock, zero database queries when cached, visit events."""

from __future__ import annotations

import asyncio

import httpx

from sysdesign.platform.clock import ManualClock
from sysdesign.platform.context import Platform
from tests.conftest import Headers
from tests.systems.shortener.conftest import counting_queries, shorten

LINKS = "/shortener/v1/links"


async def test_302_by_default_and_301_when_asked(client: httpx.AsyncClient, alice: Headers) -> None:
    temporary = await shorten(client, alice, target="https://example.com/a")
    permanent = await shorten(client, alice, target="https://example.com/b", redirect_status=301)
    first = await client.get(f"/s/{temporary['code']}")
    assert first.status_code == 302 and first.headers["location"] == "https://example.com/a"
    second = await client.get(f"/s/{permanent['code']}")
    assert second.status_code == 301 and second.headers["location"] == "https://example.com/b"
    assert (await client.head(f"/s/{permanent['code']}")).status_code == 301


async def test_the_query_string_is_forwarded_only_when_the_link_says_so(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    forwarding = await shorten(client, alice, target="https://e.com/p?x=1", forward_query=True)
    plain = await shorten(client, alice, target="https://e.com/p?x=1")
    on = await client.get(f"/s/{forwarding['code']}?utm_source=mail&y=2")
    assert on.headers["location"] == "https://e.com/p?x=1&utm_source=mail&y=2"
    off = await client.get(f"/s/{plain['code']}?utm_source=mail")
    assert off.headers["location"] == "https://e.com/p?x=1"


async def test_an_international_target_redirects_in_ascii(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    link = await shorten(client, alice, target="https://bücher.example/straße?q=ü")
    assert link["target"] == "https://xn--bcher-kva.example/stra%C3%9Fe?q=%C3%BC"
    response = await client.get(f"/s/{link['code']}")
    assert response.status_code == 302 and response.headers["location"] == link["target"]


async def test_unknown_and_disabled_codes_are_a_404_page(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    for path in ("/s/nosuchcode", "/s/%F0%9F%98%80", "/s/" + "x" * 300):
        response = await client.get(path)
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/html")
    code = (await shorten(client, alice))["code"]
    assert (await client.get(f"/s/{code}")).status_code == 302
    await client.patch(f"{LINKS}/{code}", json={"enabled": False}, headers=alice)
    assert (await client.get(f"/s/{code}")).status_code == 404  # the cached entry was dropped
    await client.patch(f"{LINKS}/{code}", json={"enabled": True}, headers=alice)
    assert (await client.get(f"/s/{code}")).status_code == 302


async def test_an_expired_link_is_a_410_page(
    client: httpx.AsyncClient, alice: Headers, clock: ManualClock
) -> None:
    from datetime import UTC, datetime

    expiry = datetime.fromtimestamp(clock.time() + 3600, UTC).isoformat()
    code = (await shorten(client, alice, expires_at=expiry))["code"]
    assert (await client.get(f"/s/{code}")).status_code == 302
    clock.advance(3599)
    assert (await client.get(f"/s/{code}")).status_code == 302
    clock.advance(1)
    gone = await client.get(f"/s/{code}")
    assert gone.status_code == 410 and "expired" in gone.text
    assert gone.headers["content-type"].startswith("text/html")


async def test_max_visits_is_exact_under_concurrent_visits(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    code = (await shorten(client, alice, max_visits=10))["code"]
    answers = await asyncio.gather(*(client.get(f"/s/{code}") for _ in range(40)))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [302] * 10 + [410] * 30
    link = (await client.get(f"{LINKS}/{code}", headers=alice)).json()
    assert link["visits"] == 10
    # Raising the limit lets it redirect again, up to the new limit.
    await client.patch(f"{LINKS}/{code}", json={"max_visits": 11}, headers=alice)
    assert (await client.get(f"/s/{code}")).status_code == 302
    assert (await client.get(f"/s/{code}")).status_code == 410


async def test_a_cached_redirect_makes_no_database_query(
    client: httpx.AsyncClient, alice: Headers, platform: Platform
) -> None:
    code = (await shorten(client, alice))["code"]
    with counting_queries(platform) as first:
        assert (await client.get(f"/s/{code}")).status_code == 302
    assert first, "the first visit loads the link from its shard"
    with counting_queries(platform) as cached:
        for _ in range(20):
            assert (await client.get(f"/s/{code}")).status_code == 302
    assert cached == []


async def test_an_unknown_code_is_remembered(client: httpx.AsyncClient, platform: Platform) -> None:
    assert (await client.get("/s/nothing-here")).status_code == 404
    with counting_queries(platform) as statements:
        assert (await client.get("/s/nothing-here")).status_code == 404
    assert statements == []


async def test_creating_an_alias_forgets_that_it_was_unknown(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    assert (await client.get("/s/soon-here")).status_code == 404
    await shorten(client, alice, alias="soon-here")
    assert (await client.get("/s/soon-here")).status_code == 302


async def test_a_changed_target_is_used_at_once(client: httpx.AsyncClient, alice: Headers) -> None:
    code = (await shorten(client, alice, target="https://old.example/"))["code"]
    assert (await client.get(f"/s/{code}")).headers["location"] == "https://old.example/"
    await client.patch(f"{LINKS}/{code}", json={"target": "https://new.example/"}, headers=alice)
    assert (await client.get(f"/s/{code}")).headers["location"] == "https://new.example/"
    await client.delete(f"{LINKS}/{code}", headers=alice)
    assert (await client.get(f"/s/{code}")).status_code == 404


async def test_each_visit_is_an_event(
    client: httpx.AsyncClient, alice: Headers, platform: Platform
) -> None:
    link = await shorten(client, alice)
    for _ in range(3):
        await client.get(f"/s/{link['code']}", headers={"Referer": "https://news.example/"})
    received: list[dict[str, object]] = []
    done = asyncio.Event()

    async def handle(message: object) -> None:
        received.append(message.json())  # type: ignore[attr-defined]
        if len(received) == 3:
            done.set()

    from sysdesign.systems.shortener.service import VISITS_TOPIC

    async with platform.queue.subscribe(VISITS_TOPIC, "test", handle):
        await asyncio.wait_for(done.wait(), 10)
    assert {(v["link_id"], v["code"], v["referrer"]) for v in received} == {
        (link["id"], link["code"], "https://news.example/")
    }
