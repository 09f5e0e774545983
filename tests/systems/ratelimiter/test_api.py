"""``/ratelimiter/v1``: decisions for any descriptors, and clear errors for bad input."""

from __future__ import annotations

import httpx

from sysdesign.platform.clock import ManualClock


async def check(client: httpx.AsyncClient, **body: object) -> httpx.Response:
    return await client.post("/ratelimiter/v1/check", json=body)


async def test_check_consumes_under_matching_rules_and_says_which_rule_decided(
    limited: httpx.AsyncClient, clock: ManualClock
) -> None:
    descriptors = {"ip": "198.51.100.9", "method": "POST", "path": "/accounts/v1/register"}
    first = (await check(limited, descriptors=descriptors, hits=2)).json()
    assert first["allowed"] is True
    assert first["rule"] == "register-per-ip"
    assert first["remaining"] == 1
    refused = (await check(limited, descriptors=descriptors, hits=2)).json()
    assert refused["allowed"] is False
    assert refused["rule"] == "register-per-ip"
    assert refused["retry_after"] > 0
    assert [d["rule"] for d in refused["decisions"]] == ["register-per-ip"]
    clock.advance(3600)
    assert (await check(limited, descriptors=descriptors, hits=2)).json()["allowed"] is True


async def test_descriptors_no_rule_matches_are_allowed_with_no_deciding_rule(
    limited: httpx.AsyncClient,
) -> None:
    body = (await check(limited, descriptors={"ip": "192.0.2.1", "path": "/other"})).json()
    assert body == {
        "allowed": True,
        "rule": None,
        "limit": None,
        "remaining": None,
        "reset_after": None,
        "retry_after": 0.0,
        "decisions": [],
    }


async def test_bad_check_requests_say_which_field(limited: httpx.AsyncClient) -> None:
    cases = [
        ({"descriptors": {"colour": "red"}}, "descriptors"),
        ({"descriptors": {"ip": "1.2.3.4"}, "hits": 0}, "hits"),
        ({"descriptors": {"ip": "1.2.3.4"}, "extra": 1}, "extra"),
        ({}, "descriptors"),
    ]
    for body, field in cases:
        response = await limited.post("/ratelimiter/v1/check", json=body)
        assert response.status_code == 422, body
        assert response.headers["content-type"] == "application/problem+json"
        assert any(e["field"].startswith(field) for e in response.json()["errors"]), body


async def test_a_cost_above_the_limit_is_refused_with_no_time_to_wait(
    limited: httpx.AsyncClient,
) -> None:
    descriptors = {"ip": "198.51.100.10", "method": "POST", "path": "/accounts/v1/register"}
    body = (await check(limited, descriptors=descriptors, hits=4)).json()
    assert body["allowed"] is False
    assert body["retry_after"] is None
    assert body["decisions"][0]["retry_after"] is None
    # Nothing was consumed: the full limit is still there.
    assert (await check(limited, descriptors=descriptors, hits=3)).json()["allowed"] is True
