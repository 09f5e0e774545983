"""``/shortener/v1/links``: create, read, list, change, delete; validation; ownership."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from sysdesign.platform.clock import ManualClock
from tests.conftest import Headers
from tests.systems.shortener.conftest import shorten

LINKS = "/shortener/v1/links"


async def test_create_gives_a_seven_character_code_and_a_short_url(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    link = await shorten(client, alice, title="Docs", tags=["work", "docs"])
    assert len(link["code"]) == 7
    assert link["short_url"] == f"http://testserver/s/{link['code']}"
    assert link["redirect_status"] == 302 and link["forward_query"] is False
    assert link["tags"] == ["docs", "work"] and link["title"] == "Docs"
    assert link["enabled"] is True and link["visits"] == 0 and link["custom"] is False


async def test_a_custom_alias_is_the_code_and_a_second_one_conflicts(
    client: httpx.AsyncClient, alice: Headers, bob: Headers
) -> None:
    link = await shorten(client, alice, alias="launch-2026")
    assert link["code"] == "launch-2026" and link["custom"] is True
    again = await client.post(
        LINKS, json={"target": "https://b.example/", "alias": "launch-2026"}, headers=bob
    )
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert again.json()["type"].endswith("/alias-taken")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "target"),
        ({"target": "ftp://example.com/"}, "target"),
        ({"target": "not a url"}, "target"),
        ({"target": "http://testserver/s/abc"}, "target"),  # a loop through ourselves
        ({"target": "https://example.com", "alias": "api"}, "alias"),
        ({"target": "https://example.com", "alias": "ADMIN"}, "alias"),
        ({"target": "https://example.com", "alias": "a b"}, "alias"),
        ({"target": "https://example.com", "alias": "ab"}, "alias"),
        ({"target": "https://example.com", "alias": "abcdefg"}, "alias"),
        ({"target": "https://example.com", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"target": "https://example.com", "expires_at": "tomorrow"}, "expires_at"),
        ({"target": "https://example.com", "max_visits": 0}, "max_visits"),
        ({"target": "https://example.com", "redirect_status": 307}, "redirect_status"),
        ({"target": "https://example.com", "tags": ["-bad"]}, "tags.0"),
        ({"target": "https://example.com", "tags": "work"}, "tags"),
        ({"target": "https://example.com", "title": "x" * 201}, "title"),
        ({"target": "https://example.com", "forward_query": "maybe"}, "forward_query"),
        ({"target": "https://example.com", "colour": "red"}, "colour"),
    ],
)
async def test_validation_errors_name_the_field(
    client: httpx.AsyncClient, alice: Headers, body: dict[str, Any], field: str
) -> None:
    response = await client.post(LINKS, json=body, headers=alice)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in response.json()["errors"]]


async def test_blocked_domains_are_refused(
    client: httpx.AsyncClient, alice: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYSDESIGN_SHORTENER_BLOCKED_DOMAINS", "evil.example, bad.test")
    from sysdesign.systems.shortener import policy_for

    app = client._transport.app  # type: ignore[attr-defined]
    app.state.mounted["shortener"].state.links._policy = policy_for(app.state.platform)
    response = await client.post(LINKS, json={"target": "https://x.evil.example/"}, headers=alice)
    assert response.status_code == 422
    assert response.json()["errors"][0]["type"] == "blocked_domain"


async def test_every_operation_needs_a_token(client: httpx.AsyncClient) -> None:
    assert (await client.post(LINKS, json={"target": "https://e.com"})).status_code == 401
    assert (await client.get(LINKS)).status_code == 401
    assert (await client.get(f"{LINKS}/abc")).status_code == 401


async def test_another_owners_link_is_not_found(
    client: httpx.AsyncClient, alice: Headers, bob: Headers
) -> None:
    code = (await shorten(client, alice))["code"]
    assert (await client.get(f"{LINKS}/{code}", headers=bob)).status_code == 404
    patched = await client.patch(f"{LINKS}/{code}", json={"title": "mine"}, headers=bob)
    assert patched.status_code == 404
    assert (await client.delete(f"{LINKS}/{code}", headers=bob)).status_code == 404
    assert (await client.get(LINKS, headers=bob)).json()["items"] == []
    assert (await client.get(f"{LINKS}/{code}", headers=alice)).status_code == 200


async def test_patch_changes_only_what_is_sent_and_null_clears(
    client: httpx.AsyncClient, alice: Headers, clock: ManualClock
) -> None:
    link = await shorten(client, alice, title="Old", max_visits=5, tags=["a"])
    url = f"{LINKS}/{link['code']}"
    response = await client.patch(
        url,
        json={"target": "https://new.example/", "title": None, "tags": ["b", "c"],
              "redirect_status": 301, "forward_query": True},
        headers=alice,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    changed = response.json()
    assert changed["target"] == "https://new.example/" and changed["title"] is None
    assert changed["tags"] == ["b", "c"] and changed["max_visits"] == 5
    assert changed["redirect_status"] == 301 and changed["forward_query"] is True
    cleared = await client.patch(url, json={"max_visits": None}, headers=alice)
    assert cleared.json()["max_visits"] is None
    refused = await client.patch(url, json={"target": None}, headers=alice)
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "target"
    loop = await client.patch(url, json={"target": "http://testserver/"}, headers=alice)
    assert loop.status_code == 422


async def test_delete_removes_the_link(client: httpx.AsyncClient, alice: Headers) -> None:
    code = (await shorten(client, alice))["code"]
    assert (await client.delete(f"{LINKS}/{code}", headers=alice)).status_code == 204
    assert (await client.get(f"{LINKS}/{code}", headers=alice)).status_code == 404
    assert (await client.delete(f"{LINKS}/{code}", headers=alice)).status_code == 404


async def test_list_pages_through_both_shards_newest_first_and_filters_by_tag(
    client: httpx.AsyncClient, alice: Headers, bob: Headers
) -> None:
    made = [await shorten(client, alice, tags=["even" if i % 2 == 0 else "odd"]) for i in range(9)]
    await shorten(client, bob, tags=["even"])
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 4} | ({"cursor": cursor} if cursor else {})
        page = (await client.get(LINKS, params=params, headers=alice)).json()
        seen += [item["code"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [link["code"] for link in reversed(made)]
    even = (await client.get(LINKS, params={"tag": "even"}, headers=alice)).json()["items"]
    assert [i["code"] for i in even] == [m["code"] for m in reversed(made[::2])]
    bad = await client.get(LINKS, params={"cursor": "forged"}, headers=alice)
    assert bad.status_code == 400
