"""Who may do what: API keys, anonymous creation, admins, creation limits, link passwords."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from sysdesign.platform.app import create_app
from sysdesign.platform.clock import ManualClock
from sysdesign.platform.errors import ConfigurationError
from sysdesign.systems.shortener.config import ShortenerConfig
from tests.conftest import Headers, make_settings, open_client, sign_in
from tests.systems.shortener.conftest import shorten, two_shards

LINKS = "/shortener/v1/links"
KEYS = "/shortener/v1/api-keys"


@asynccontextmanager
async def shortener(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch, **env: str
) -> AsyncIterator[httpx.AsyncClient]:
    """A client on a fresh root app built with ``SYSDESIGN_SHORTENER_<NAME>`` set."""
    for name, value in env.items():
        monkeypatch.setenv(f"SYSDESIGN_SHORTENER_{name.upper()}", value)
    settings = make_settings(
        tmp_path,
        database_url=two_shards(tmp_path),
        ratelimit_enabled=False,
        outbox_relay=False,
        admin_emails="root@example.com",
    )
    clients = open_client(create_app(settings, clock=clock))
    try:
        yield await anext(clients)
    finally:
        await clients.aclose()


# --- API keys -------------------------------------------------------------------------


async def test_an_api_key_acts_for_its_owner_until_revoked(
    client: httpx.AsyncClient, alice: Headers, bob: Headers
) -> None:
    made = await client.post(KEYS, json={"name": "deploy script"}, headers=alice)
    assert made.status_code == 201, made.text
    secret = made.json()["key"]
    assert secret.startswith("sdk_") and made.json()["prefix"] == secret[:12]
    key = {"X-API-Key": secret}

    created = await client.post(LINKS, json={"target": "https://example.com/k"}, headers=key)
    assert created.status_code == 201
    code = created.json()["code"]
    # The key's link is alice's: she sees it, bob does not.
    assert (await client.get(f"{LINKS}/{code}", headers=alice)).status_code == 200
    assert (await client.get(f"{LINKS}/{code}", headers=bob)).status_code == 404

    listed = await client.get(KEYS, headers=alice)
    assert [k["name"] for k in listed.json()] == ["deploy script"]
    assert "key" not in listed.json()[0]  # the secret is shown once only
    assert (await client.get(KEYS, headers=bob)).json() == []

    # A key cannot make keys, and bob cannot revoke alice's.
    assert (await client.post(KEYS, json={"name": "x"}, headers=key)).status_code == 401
    key_id = made.json()["id"]
    assert (await client.delete(f"{KEYS}/{key_id}", headers=bob)).status_code == 404
    assert (await client.delete(f"{KEYS}/{key_id}", headers=alice)).status_code == 204

    refused = await client.get(LINKS, headers=key)
    assert refused.status_code == 401
    assert refused.json()["type"].endswith("/invalid-api-key")
    assert (await client.get(KEYS, headers=alice)).json() == []


@pytest.mark.parametrize("value", ["", "sdk_", "sdk_" + "x" * 43, "not-a-key", "sdk_" + "é" * 5])
async def test_an_unknown_api_key_is_401(client: httpx.AsyncClient, value: str) -> None:
    headers = {"X-API-Key": value} if value.isascii() else {}
    response = await client.get(LINKS, headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_key_needs_a_name(client: httpx.AsyncClient, alice: Headers) -> None:
    for body in ({}, {"name": ""}, {"name": "x" * 101}, {"name": "a\nb"}):
        response = await client.post(KEYS, json=body, headers=alice)
        assert response.status_code == 422, body
        assert response.json()["errors"][0]["field"] == "name"


# --- anonymous creation ---------------------------------------------------------------


async def test_anonymous_creation_is_off_by_default(client: httpx.AsyncClient) -> None:
    response = await client.post(LINKS, json={"target": "https://example.com/"})
    assert response.status_code == 401


async def test_anonymous_creation_when_allowed_is_limited_and_owned_by_nobody(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with shortener(
        tmp_path, clock, monkeypatch, anonymous="true", create_limit_anonymous="2/minute"
    ) as client:
        made = [await client.post(LINKS, json={"target": f"https://e.com/{i}"}) for i in range(2)]
        assert [r.status_code for r in made] == [201, 201]
        assert (await client.get(f"/s/{made[0].json()['code']}")).status_code == 302
        third = await client.post(LINKS, json={"target": "https://e.com/3"})
        assert third.status_code == 429
        assert third.json()["type"].endswith("/creation-rate-limited")
        assert int(third.headers["Retry-After"]) >= 1
        # No alias or password without an account.
        alias = await client.post(LINKS, json={"target": "https://e.com/", "alias": "mine-1"})
        assert alias.status_code == 422 and alias.json()["errors"][0]["field"] == "alias"
        clock.advance(60)
        assert (await client.post(LINKS, json={"target": "https://e.com/4"})).status_code == 201
        # Nobody owns them: a signed-in user does not see them.
        alice = await sign_in(client, "alice@example.com")
        mine = await client.get(LINKS, headers=alice)
        assert mine.status_code == 200, mine.text
        assert mine.json()["items"] == []


async def test_creation_is_limited_per_account_and_bulk_costs_one_per_link(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with shortener(tmp_path, clock, monkeypatch, create_limit_user="5/minute") as client:
        alice = await sign_in(client, "alice@example.com")
        bob = await sign_in(client, "bob@example.com")
        batch = {"links": [{"target": f"https://e.com/{i}"} for i in range(4)]}
        assert (await client.post(f"{LINKS}/bulk", json=batch, headers=alice)).status_code == 200
        assert (await client.post(f"{LINKS}/bulk", json=batch, headers=alice)).status_code == 429
        await shorten(client, alice)  # the fifth fits
        refused = await client.post(LINKS, json={"target": "https://e.com/"}, headers=alice)
        assert refused.status_code == 429
        await shorten(client, bob)  # another account has its own allowance
        # A request bigger than the whole allowance is refused for good, saying so.
        big = {"links": [{"target": f"https://e.com/{i}"} for i in range(6)]}
        too_big = await client.post(f"{LINKS}/bulk", json=big, headers=bob)
        assert too_big.status_code == 429 and "send fewer" in too_big.json()["detail"]
        clock.advance(60)
        await shorten(client, alice)


async def test_invalid_input_is_not_counted_against_the_limit(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with shortener(tmp_path, clock, monkeypatch, create_limit_user="1/minute") as client:
        alice = await sign_in(client, "alice@example.com")
        for _ in range(3):
            bad = await client.post(LINKS, json={"target": "ftp://x/"}, headers=alice)
            assert bad.status_code == 422
        await shorten(client, alice)


@pytest.mark.parametrize(
    ("name", "value"),
    [("CREATE_LIMIT_USER", "lots"), ("CREATE_LIMIT_IP", "5/fortnight"), ("ANONYMOUS", "maybe")],
)
def test_a_bad_setting_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=f"SYSDESIGN_SHORTENER_{name}"):
        ShortenerConfig.from_env({f"SYSDESIGN_SHORTENER_{name}": value})


def test_limits_can_be_turned_off() -> None:
    config = ShortenerConfig.from_env({"SYSDESIGN_SHORTENER_CREATE_LIMIT_USER": "off"})
    assert config.per_user == () and config.per_ip != ()


# --- admins ----------------------------------------------------------------------------


async def test_an_admin_blocks_any_link_and_its_owner_cannot_undo_it(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with shortener(tmp_path, clock, monkeypatch) as client:
        alice = await sign_in(client, "alice@example.com")
        root = await sign_in(client, "root@example.com")
        code = (await shorten(client, alice))["code"]
        assert (await client.get(f"/s/{code}")).status_code == 302  # cached now

        admin = f"/shortener/v1/admin/links/{code}"
        assert (await client.get(admin, headers=alice)).status_code == 403
        assert (await client.put(f"{admin}/block", json={}, headers=alice)).status_code == 403
        seen = await client.get(admin, headers=root)
        assert seen.status_code == 200 and seen.json()["code"] == code

        blocked = await client.put(f"{admin}/block", json={"reason": "phishing"}, headers=root)
        assert blocked.json()["blocked"] is True and blocked.json()["blocked_reason"] == "phishing"
        assert (await client.get(f"/s/{code}")).status_code == 404
        owner_view = await client.patch(f"{LINKS}/{code}", json={"enabled": True}, headers=alice)
        assert owner_view.json()["blocked"] is True
        assert (await client.get(f"/s/{code}")).status_code == 404

        assert (await client.delete(f"{admin}/block", headers=root)).json()["blocked"] is False
        assert (await client.get(f"/s/{code}")).status_code == 302
        assert (await client.get(f"{admin}x", headers=root)).status_code == 404


async def test_without_configured_admins_nobody_is_one(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    code = (await shorten(client, alice))["code"]
    response = await client.get(f"/shortener/v1/admin/links/{code}", headers=alice)
    assert response.status_code == 403
    assert response.json()["type"].endswith("/admin-only")


# --- passwords -------------------------------------------------------------------------


async def test_a_password_protected_link_asks_first(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    link = await shorten(client, alice, password="open sesame", forward_query=True)
    assert link["password_protected"] is True and "password" not in link
    url = f"/s/{link['code']}?utm=1"

    form = await client.get(url)
    assert form.status_code == 200 and "<form" in form.text
    assert f'action="/s/{link["code"]}?utm=1"' in form.text
    wrong = await client.post(url, data={"password": "guess"})
    assert wrong.status_code == 401 and "not right" in wrong.text
    assert (
        await client.post(url, content=b"\xff\xfe", headers={"content-type": "x/y"})
    ).status_code == 401

    right = await client.post(url, data={"password": "open sesame"})
    assert right.status_code == 303
    assert right.headers["location"] == "https://example.com/page?utm=1"

    # Removing the password makes it a plain redirect again.
    cleared = await client.patch(f"{LINKS}/{link['code']}", json={"password": None}, headers=alice)
    assert cleared.json()["password_protected"] is False
    assert (await client.get(url)).status_code == 302


async def test_password_guesses_are_limited_per_link_and_address(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    code = (await shorten(client, alice, password="letmein"))["code"]
    for _ in range(10):
        assert (await client.post(f"/s/{code}", data={"password": "x"})).status_code == 401
    blocked = await client.post(f"/s/{code}", data={"password": "letmein"})
    assert blocked.status_code == 429


async def test_a_password_protected_link_with_a_visit_limit_counts_only_opened_visits(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    code = (await shorten(client, alice, password="secret1", max_visits=1))["code"]
    assert (await client.get(f"/s/{code}")).status_code == 200  # the form: not a visit
    assert (await client.post(f"/s/{code}", data={"password": "secret1"})).status_code == 303
    assert (await client.post(f"/s/{code}", data={"password": "secret1"})).status_code == 410


@pytest.mark.parametrize("password", ["abc", "x" * 129])
async def test_a_link_password_has_four_to_128_characters(
    client: httpx.AsyncClient, alice: Headers, password: str
) -> None:
    response = await client.post(
        LINKS, json={"target": "https://example.com/", "password": password}, headers=alice
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "password"


async def test_a_post_to_a_link_without_password_is_405(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    code = (await shorten(client, alice))["code"]
    assert (await client.post(f"/s/{code}", data={"password": "x"})).status_code == 405
