"""The User Service end to end through HTTP, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import httpx
import jwt
import pytest

from sysdesign.platform.clock import ManualClock
from tests.platform.accounts.conftest import bearer, login, register

PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["type"].endswith("/" + slug)
    assert body["status"] == status
    assert "Traceback" not in response.text
    return body


async def test_register_login_me(accounts_client: httpx.AsyncClient) -> None:
    user = await register(accounts_client, email="Ana@Example.com")
    assert user["email"] == "ana@example.com"
    assert user["id"].isdigit()
    assert "password" not in str(user).lower()
    tokens = await login(accounts_client, email="ANA@example.com")
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 900
    me = await accounts_client.get("/accounts/v1/me", headers=bearer(tokens))
    assert me.status_code == 200
    assert me.json() == user


async def test_duplicate_registration_is_409_whatever_the_case(
    accounts_client: httpx.AsyncClient,
) -> None:
    await register(accounts_client)
    response = await accounts_client.post(
        "/accounts/v1/register", json={"email": "ANA@example.com", "password": "another one"}
    )
    body = assert_problem(response, 409, "email-taken")
    assert body["field"] == "email"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"email": "not-an-email", "password": "long enough"}, "email"),
        ({"email": "a@example.com", "password": "short"}, "password"),
        ({"email": "a@example.com"}, "password"),
        ({"email": "a@example.com", "password": 12345678}, "password"),
        ({"email": "a@example.com", "password": "long enough", "admin": True}, "admin"),
        ({"email": "a@example.com", "password": "x" * 1025}, "password"),
    ],
)
async def test_register_validation_names_the_field(
    accounts_client: httpx.AsyncClient, payload: dict, field: str
) -> None:
    response = await accounts_client.post("/accounts/v1/register", json=payload)
    body = assert_problem(response, 422, "validation-error")
    assert field in [e["field"] for e in body["errors"]]


async def test_malformed_json_and_wrong_types(accounts_client: httpx.AsyncClient) -> None:
    response = await accounts_client.post(
        "/accounts/v1/register", content=b'{"email": ', headers={"content-type": "application/json"}
    )
    assert_problem(response, 400, "malformed-json")
    response = await accounts_client.post("/accounts/v1/register", json=["a", "b"])
    assert_problem(response, 422, "validation-error")


async def test_unknown_email_and_wrong_password_answer_the_same(
    accounts_client: httpx.AsyncClient,
) -> None:
    await register(accounts_client)
    wrong = await accounts_client.post(
        "/accounts/v1/login", json={"email": "ana@example.com", "password": "wrong password"}
    )
    unknown = await accounts_client.post(
        "/accounts/v1/login", json={"email": "nobody@example.com", "password": "wrong password"}
    )
    a = assert_problem(wrong, 401, "invalid-credentials")
    b = assert_problem(unknown, 401, "invalid-credentials")
    a.pop("instance"), b.pop("instance")
    assert a == b


async def test_unknown_email_still_costs_one_password_verification(
    accounts_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = accounts_client._transport.app.state.platform  # type: ignore[attr-defined]
    calls: list[bool] = []
    real_verify = platform.passwords._verify

    def spy(password_hash: str | None, password: str) -> bool:
        calls.append(password_hash is None)
        return real_verify(password_hash, password)

    monkeypatch.setattr(platform.passwords, "_verify", spy)
    await accounts_client.post(
        "/accounts/v1/login", json={"email": "ghost@example.com", "password": "whatever1"}
    )
    assert calls == [True]  # the dummy hash was verified: same work as a real account


async def test_failed_logins_are_throttled_per_email(
    accounts_client: httpx.AsyncClient, clock: ManualClock
) -> None:
    await register(accounts_client)
    bad = {"email": "ana@example.com", "password": "wrong password"}
    for _ in range(3):
        assert (await accounts_client.post("/accounts/v1/login", json=bad)).status_code == 401
    throttled = await accounts_client.post(
        "/accounts/v1/login", json={"email": "ana@example.com", "password": "correct horse"}
    )
    assert_problem(throttled, 429, "login-throttled")
    assert 1 <= int(throttled.headers["retry-after"]) <= 901
    clock.advance(901)
    await login(accounts_client)


async def test_failed_logins_are_throttled_per_ip(accounts_client: httpx.AsyncClient) -> None:
    for i in range(5):
        response = await accounts_client.post(
            "/accounts/v1/login", json={"email": f"u{i}@example.com", "password": "nope-nope"}
        )
        assert response.status_code == 401
    response = await accounts_client.post(
        "/accounts/v1/login", json={"email": "fresh@example.com", "password": "nope-nope"}
    )
    assert_problem(response, 429, "login-throttled")


@pytest.mark.parametrize(
    ("header", "slug"),
    [
        (None, "missing-token"),
        ("Bearer not.a.jwt", "invalid-token"),
        ("Bearer ", "invalid-token"),
        ("Basic YWxhZGRpbjpvcGVuc2VzYW1l", "invalid-token"),
        ("Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.", "invalid-token"),
    ],
)
async def test_missing_or_garbled_tokens(
    accounts_client: httpx.AsyncClient, header: str | None, slug: str
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = await accounts_client.get("/accounts/v1/me", headers=headers)
    assert_problem(response, 401, slug)
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_token_signed_with_another_secret_is_refused(
    accounts_client: httpx.AsyncClient,
) -> None:
    user = await register(accounts_client)
    forged = jwt.encode(
        {
            "iss": "sysdesign",
            "sub": user["id"],
            "sid": "1",
            "iat": 1,
            "exp": 2**40,
            "typ": "access",
        },
        "a-guessed-secret-of-enough-length-to-sign",
        algorithm="HS256",
    )
    response = await accounts_client.get(
        "/accounts/v1/me", headers={"Authorization": f"Bearer {forged}"}
    )
    assert_problem(response, 401, "invalid-token")


async def test_expired_access_token(accounts_client: httpx.AsyncClient, clock: ManualClock) -> None:
    await register(accounts_client)
    tokens = await login(accounts_client)
    clock.advance(901)
    response = await accounts_client.get("/accounts/v1/me", headers=bearer(tokens))
    assert_problem(response, 401, "token-expired")
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_refresh_rotates_and_reuse_revokes_the_login(
    accounts_client: httpx.AsyncClient,
) -> None:
    await register(accounts_client)
    first = await login(accounts_client)
    rotated = await accounts_client.post(
        "/accounts/v1/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert rotated.status_code == 200
    second = rotated.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (await accounts_client.get("/accounts/v1/me", headers=bearer(second))).status_code == 200

    # The old token again: a replay. The whole login is revoked, the new token too.
    replay = await accounts_client.post(
        "/accounts/v1/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert_problem(replay, 401, "refresh-token-reused")
    after = await accounts_client.post(
        "/accounts/v1/refresh", json={"refresh_token": second["refresh_token"]}
    )
    assert_problem(after, 401, "invalid-refresh-token")


async def test_refresh_token_expires(
    accounts_client: httpx.AsyncClient, clock: ManualClock
) -> None:
    await register(accounts_client)
    tokens = await login(accounts_client)
    clock.advance(30 * 86400 + 1)
    response = await accounts_client.post(
        "/accounts/v1/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert_problem(response, 401, "refresh-token-expired")


async def test_unknown_refresh_token(accounts_client: httpx.AsyncClient) -> None:
    response = await accounts_client.post("/accounts/v1/refresh", json={"refresh_token": "nope"})
    body = assert_problem(response, 401, "invalid-refresh-token")
    assert body["field"] == "refresh_token"


async def test_logout_revokes_the_refresh_token_only_of_that_login(
    accounts_client: httpx.AsyncClient,
) -> None:
    await register(accounts_client)
    laptop, phone = await login(accounts_client), await login(accounts_client)
    response = await accounts_client.post(
        "/accounts/v1/logout", json={"refresh_token": laptop["refresh_token"]}
    )
    assert response.status_code == 204
    revoked = await accounts_client.post(
        "/accounts/v1/refresh", json={"refresh_token": laptop["refresh_token"]}
    )
    assert_problem(revoked, 401, "invalid-refresh-token")
    still = await accounts_client.post(
        "/accounts/v1/refresh", json={"refresh_token": phone["refresh_token"]}
    )
    assert still.status_code == 200
    # Logging out twice, or with a token we never issued, is a quiet no-op.
    for token in (laptop["refresh_token"], "never-issued"):
        again = await accounts_client.post("/accounts/v1/logout", json={"refresh_token": token})
        assert again.status_code == 204


async def test_update_profile(accounts_client: httpx.AsyncClient) -> None:
    await register(accounts_client)
    tokens = await login(accounts_client)
    response = await accounts_client.patch(
        "/accounts/v1/me",
        headers=bearer(tokens),
        json={"display_name": "Ana", "avatar_url": "https://img.example.com/ana.png"},
    )
    assert response.status_code == 200
    assert response.json()["display_name"] == "Ana"
    assert response.json()["avatar_url"] == "https://img.example.com/ana.png"
    # Only the fields sent change.
    response = await accounts_client.patch(
        "/accounts/v1/me", headers=bearer(tokens), json={"display_name": "Ana B."}
    )
    assert response.json()["avatar_url"] == "https://img.example.com/ana.png"
    assert (await accounts_client.get("/accounts/v1/me", headers=bearer(tokens))).json()[
        "display_name"
    ] == "Ana B."


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"avatar_url": "javascript:alert(1)"}, "avatar_url"),
        ({"display_name": ""}, "display_name"),
        ({"display_name": "x" * 101}, "display_name"),
        ({"email": "new@example.com"}, "email"),
    ],
)
async def test_update_profile_validation(
    accounts_client: httpx.AsyncClient, payload: dict, field: str
) -> None:
    await register(accounts_client)
    tokens = await login(accounts_client)
    response = await accounts_client.patch("/accounts/v1/me", headers=bearer(tokens), json=payload)
    body = assert_problem(response, 422, "validation-error")
    assert field in [e["field"] for e in body["errors"]]


async def test_change_password_ends_other_logins(accounts_client: httpx.AsyncClient) -> None:
    await register(accounts_client)
    tokens = await login(accounts_client)
    wrong = await accounts_client.post(
        "/accounts/v1/me/password",
        headers=bearer(tokens),
        json={"current_password": "not it at all", "new_password": "battery staple"},
    )
    body = assert_problem(wrong, 403, "wrong-password")
    assert body["field"] == "current_password"

    ok = await accounts_client.post(
        "/accounts/v1/me/password",
        headers=bearer(tokens),
        json={"current_password": "correct horse", "new_password": "battery staple"},
    )
    assert ok.status_code == 204
    old = await accounts_client.post(
        "/accounts/v1/login", json={"email": "ana@example.com", "password": "correct horse"}
    )
    assert_problem(old, 401, "invalid-credentials")
    await login(accounts_client, password="battery staple")
    revoked = await accounts_client.post(
        "/accounts/v1/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert_problem(revoked, 401, "invalid-refresh-token")


async def test_token_of_a_deleted_account_is_404_not_500(
    accounts_client: httpx.AsyncClient,
) -> None:
    platform = accounts_client._transport.app.state.platform  # type: ignore[attr-defined]
    token = platform.tokens.issue(user_id=123, session_id=1)
    response = await accounts_client.get(
        "/accounts/v1/me", headers={"Authorization": f"Bearer {token}"}
    )
    assert_problem(response, 404, "account-not-found")


async def test_guesses_sent_at_once_are_throttled_as_they_arrive(
    accounts_client: httpx.AsyncClient,
) -> None:
    import asyncio

    await register(accounts_client)
    guesses = [
        accounts_client.post(
            "/accounts/v1/login", json={"email": "ana@example.com", "password": f"guess {i}"}
        )
        for i in range(20)
    ]
    statuses = [r.status_code for r in await asyncio.gather(*guesses)]
    # The per-e-mail limit is 3: no more than 3 passwords were ever checked.
    assert statuses.count(401) == 3
    assert statuses.count(429) == 17


async def test_login_accepts_the_address_in_any_unicode_form(
    accounts_client: httpx.AsyncClient,
) -> None:
    import unicodedata

    composed = "jos\u00e9@example.com"
    await register(accounts_client, email=composed)
    decomposed = unicodedata.normalize("NFD", composed)
    assert decomposed != composed
    await login(accounts_client, email=decomposed)


async def test_refresh_racing_a_password_change_leaves_no_live_token(
    accounts_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from sqlalchemy import func, select

    from sysdesign.platform.accounts import store
    from sysdesign.platform.accounts.store import refresh_tokens_table as tokens

    platform = accounts_client._transport.app.state.platform  # type: ignore[attr-defined]
    user = await register(accounts_client)
    pair = await login(accounts_client)

    # Hold the refresh inside its transaction, right after it inserted the new token,
    # while the password change runs: the interleaving that could leave a live token.
    inserted, proceed = asyncio.Event(), asyncio.Event()
    real_insert = store.insert_refresh_token

    async def paused_insert(conn: object, **values: object) -> None:
        await real_insert(conn, **values)  # type: ignore[arg-type]
        inserted.set()
        await asyncio.wait_for(proceed.wait(), 10)

    monkeypatch.setattr(store, "insert_refresh_token", paused_insert)
    refreshing = asyncio.create_task(platform.accounts.refresh(pair["refresh_token"]))
    await asyncio.wait_for(inserted.wait(), 10)
    changing = asyncio.create_task(
        platform.accounts.change_password(int(user["id"]), "correct horse", "battery staple")
    )
    await asyncio.sleep(0.3)  # let the password change reach the account's lock
    proceed.set()
    await asyncio.gather(refreshing, changing)

    async with platform.db.primary.read() as conn:
        live = await conn.execute(
            select(func.count())
            .select_from(tokens)
            .where(tokens.c.user_id == int(user["id"]), tokens.c.revoked_at.is_(None))
        )
        assert live.scalar_one() == 0  # the rotated-in token was revoked too
