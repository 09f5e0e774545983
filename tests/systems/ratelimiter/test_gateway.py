"""The gateway applies the rules to every request of every system."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from sysdesign.platform.clock import ManualClock
from tests.systems.ratelimiter.conftest import RULES


async def register(client: httpx.AsyncClient, n: int) -> httpx.Response:
    return await client.post(
        "/accounts/v1/register",
        json={"email": f"user{n}@example.com", "password": "correct horse battery"},
    )


async def test_registrations_past_the_per_ip_limit_get_429_until_the_window_moves(
    limited: httpx.AsyncClient, clock: ManualClock
) -> None:
    for n in range(3):
        ok = await register(limited, n)
        assert ok.status_code == 201
        assert ok.headers["ratelimit-limit"] == "3"
        assert ok.headers["ratelimit-remaining"] == str(2 - n)
    refused = await register(limited, 3)
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"].endswith("/rate-limited")
    assert problem["rule"] == "register-per-ip"
    assert int(refused.headers["retry-after"]) == problem["retry_after"] > 3500
    assert refused.headers["ratelimit-remaining"] == "0"
    # The refused request never reached accounts: the address is still free.
    clock.advance(3601)
    assert (await register(limited, 3)).status_code == 201


async def test_health_and_other_routes_are_not_limited_by_a_route_rule(
    limited: httpx.AsyncClient,
) -> None:
    for n in range(3):
        await register(limited, n)
    assert (await register(limited, 99)).status_code == 429
    for _ in range(5):
        assert (await limited.get("/healthz")).status_code == 200
        assert (await limited.get("/readyz")).status_code == 200
    login = await limited.post(
        "/accounts/v1/login",
        json={"email": "user0@example.com", "password": "correct horse battery"},
    )
    assert login.status_code == 200
    assert "ratelimit-limit" not in login.headers  # no rule applies to login


async def test_signed_in_users_are_counted_by_user_and_shadow_rules_never_refuse(
    limited: httpx.AsyncClient,
) -> None:
    await register(limited, 1)
    tokens = (
        await limited.post(
            "/accounts/v1/login",
            json={"email": "user1@example.com", "password": "correct horse battery"},
        )
    ).json()
    auth = {"authorization": f"Bearer {tokens['access_token']}"}
    assert (await limited.get("/accounts/v1/me", headers=auth)).status_code == 200
    # The shadow rule (1/minute per address) is exceeded here, and refuses nothing.
    assert (await limited.get("/accounts/v1/me", headers=auth)).status_code == 200
    third = await limited.get("/accounts/v1/me", headers=auth)
    assert third.status_code == 429
    assert third.json()["rule"] == "me-per-user"
    # Anonymous requests carry no user: the per-user rule does not apply (401 from accounts).
    assert (await limited.get("/accounts/v1/me")).status_code == 401

    rules = {r["name"]: r for r in (await limited.get("/ratelimiter/v1/rules")).json()["rules"]}
    assert rules["me-per-user"]["counts"]["allowed"] == 2
    assert rules["me-per-user"]["counts"]["limited"] == 1
    assert rules["watch-only"]["counts"]["shadow_limited"] >= 2
    metrics = (await limited.get("/metrics")).text
    assert 'ratelimit_decisions_total{outcome="limited",rule="me-per-user"} 1.0' in metrics


async def test_a_changed_rules_file_applies_without_restart_and_a_broken_one_is_refused(
    limited: httpx.AsyncClient, rules_file: Path
) -> None:
    await asyncio.to_thread(
        rules_file.write_text, RULES.replace("limits: [3/hour]", "limits: [1/hour]")
    )
    for _ in range(100):
        rules = (await limited.get("/ratelimiter/v1/rules")).json()["rules"]
        if rules[0]["limits"][0]["requests"] == 1:
            break
        await asyncio.sleep(0.02)
    assert rules[0]["limits"] == [{"requests": 1, "period_seconds": 3600, "burst": None}]
    assert (await register(limited, 1)).status_code == 201
    assert (await register(limited, 2)).status_code == 429

    broken = "rules: [{name: broken, descriptors: [nope], limits: [1/s]}]"
    await asyncio.to_thread(rules_file.write_text, broken)
    reload = await limited.post("/ratelimiter/v1/rules/reload")
    assert reload.status_code == 422
    assert "unknown descriptor 'nope'" in reload.json()["detail"]
    listed = (await limited.get("/ratelimiter/v1/rules")).json()
    assert [r["name"] for r in listed["rules"]] == ["register-per-ip", "me-per-user", "watch-only"]
    assert "unknown descriptor 'nope'" in listed["last_reload_error"]

    await asyncio.to_thread(rules_file.write_text, "rules: []")
    assert (await limited.post("/ratelimiter/v1/rules/reload")).json()["rules"] == []
    assert (await register(limited, 3)).status_code == 201
