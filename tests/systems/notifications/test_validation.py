"""Bad input is refused with a 422 naming the field; who may call what."""

from __future__ import annotations

import httpx

from tests.conftest import Headers
from tests.systems.notifications.conftest import API, inbox_template, put_template


async def test_a_template_that_does_not_compile_names_the_field_and_line(
    client: httpx.AsyncClient, admin: Headers
) -> None:
    body = inbox_template(channels={"email": {"en": {"subject": "ok",
                                                     "body": "line one\n{% if %}"}}})  # fmt: skip
    response = await client.put(f"{API}/templates/broken", json=body, headers=admin)
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["field"] == "channels.email.en.body"
    assert error["line"] == 2


async def test_bad_input_is_a_422_naming_the_field(
    client: httpx.AsyncClient, admin: Headers, ana: Headers
) -> None:
    cases = [
        (f"{API}/templates/t", inbox_template(throttle="often"), admin, "put", "throttle"),
        (f"{API}/events", {"template": "nope", "to": {"user_ids": [1]}}, admin, "post",
         "template"),
        (f"{API}/events", {"template": "t", "to": {}}, admin, "post", "to"),
        (f"{API}/events", {"template": "t", "to": {"topic": "none"}}, admin, "post", "to.topic"),
        (f"{API}/events", {"template": "t", "to": {"user_ids": [1]},
                           "data": {"x": "y" * 70_000}}, admin, "post", "data"),
        (f"{API}/me", {"phone": "912345678"}, ana, "put", "phone"),
        (f"{API}/me", {"webhook_url": "ftp://example.com"}, ana, "put", "webhook_url"),
        # Internal addresses (only 127.0.0.0/8 is allowed in these tests).
        (f"{API}/me", {"webhook_url": "http://10.0.0.5/h"}, ana, "put", "webhook_url"),
        (f"{API}/me", {"webhook_url": "http://169.254.169.254/latest"}, ana, "put",
         "webhook_url"),
        (f"{API}/me", {"webhook_url": "http://[::1]:8080/h"}, ana, "put", "webhook_url"),
        (f"{API}/me", {"timezone": "Mars/Olympus"}, ana, "put", "timezone"),
        (f"{API}/me/preferences", {"quiet_hours": {"start": "25:00", "end": "07:00",
                                                   "timezone": "UTC"}}, ana, "put",
         "quiet_hours.start"),
        (f"{API}/me/preferences", {"quiet_hours": {"start": "07:00", "end": "07:00",
                                                   "timezone": "UTC"}}, ana, "put",
         "quiet_hours"),
        (f"{API}/me/preferences", {"disabled": [{"category": "x", "channel": "fax"}]}, ana,
         "put", "disabled.0.channel"),
    ]  # fmt: skip
    await put_template(client, admin, "t", inbox_template())
    for url, body, headers, method, field in cases:
        response = await client.request(method, url, json=body, headers=headers)
        assert response.status_code == 422, (url, body, response.text)
        fields = {e["field"] for e in response.json()["errors"]}
        assert field in fields, (field, fields)


async def test_admin_operations_need_an_admin(client: httpx.AsyncClient, ana: Headers) -> None:
    assert (await client.get(f"{API}/templates")).status_code == 401
    for method, url in [("get", f"{API}/templates"), ("put", f"{API}/topics/x"),
                        ("post", f"{API}/events"), ("get", f"{API}/events/1")]:  # fmt: skip
        body = {"name": "x"} if method == "put" else None
        response = await client.request(method, url, json=body, headers=ana)
        assert response.status_code == 403, (url, response.text)


async def test_templates_are_listed_read_and_deleted(
    client: httpx.AsyncClient, admin: Headers
) -> None:
    for key in ("a", "b", "c"):
        await put_template(client, admin, key, inbox_template())
    page = (await client.get(f"{API}/templates", params={"limit": 2}, headers=admin)).json()
    assert [t["key"] for t in page["items"]] == ["a", "b"]
    rest = await client.get(f"{API}/templates", params={"cursor": page["next_cursor"]},
                            headers=admin)  # fmt: skip
    assert [t["key"] for t in rest.json()["items"]] == ["c"]
    assert (await client.delete(f"{API}/templates/b", headers=admin)).status_code == 204
    missing = await client.get(f"{API}/templates/b", headers=admin)
    assert missing.status_code == 404 and missing.json()["type"].endswith("/template-not-found")


async def test_the_webhook_secret_is_shown_once_and_rotates(
    client: httpx.AsyncClient, ana: Headers
) -> None:
    first = await client.put(f"{API}/me", json={"webhook_url": "https://example.com/h"},
                             headers=ana)  # fmt: skip
    secret = first.json()["webhook_secret"]
    assert secret and first.json()["has_webhook_secret"]
    again = await client.put(f"{API}/me", json={"webhook_url": "https://example.com/h2"},
                             headers=ana)  # fmt: skip
    assert again.json()["webhook_secret"] is None and again.json()["has_webhook_secret"]
    rotated = await client.post(f"{API}/me/webhook-secret", headers=ana)
    assert rotated.json()["webhook_secret"] not in (None, secret)
