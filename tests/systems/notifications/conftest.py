"""The root app with accounts and notifications on SQLite, a manual clock, an
admin and two users; a real webhook receiver; bounded polling helpers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sysdesign.benchmarks.server import free_port
from sysdesign.blocks.notify.webhook import verify_signature
from sysdesign.platform.app import create_app
from sysdesign.platform.clock import ManualClock
from sysdesign.platform.context import Platform
from tests.conftest import Headers, make_settings, sign_in

API = "/notifications/v1"
ADMIN_EMAIL = "admin@example.com"


# A template that sends only a webhook.
HOOK = {"category": "orders", "channels": {"webhook": {"en": {"body": "order {{ id }}"}}}}


@pytest.fixture
def notify_env() -> dict[str, str]:
    """Settings of the notification system for a test; change them before ``app``
    (which sets them in the environment)."""
    return {
        "SYSDESIGN_NOTIFY_WORKERS": "1",  # tests/conftest.py turns them off elsewhere
        "SYSDESIGN_NOTIFY_SCHEDULER_SECONDS": "0.02",
        "SYSDESIGN_NOTIFY_SWEEP_SECONDS": "3600",
        "SYSDESIGN_NOTIFY_BACKOFF_SECONDS": "10",
        "SYSDESIGN_NOTIFY_MAX_ATTEMPTS": "3",
        "SYSDESIGN_NOTIFY_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",  # the receivers here
    }


@pytest.fixture
def app(
    tmp_path: Path, clock: ManualClock, notify_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Starlette:
    for key, value in notify_env.items():
        monkeypatch.setenv(key, value)
    settings = make_settings(
        tmp_path,
        ratelimit_enabled=False,
        admin_emails=ADMIN_EMAIL,
        queue_url="memory://",
        access_token_ttl_seconds=60 * 86400,  # tests move the clock by days
    )
    return create_app(settings, clock=clock, only=["accounts", "notifications"])


@pytest.fixture
def platform(app: Starlette) -> Platform:
    """The platform of this folder's app (not the started one of tests/conftest.py)."""
    return app.state.platform


@pytest.fixture
async def admin(client: httpx.AsyncClient) -> Headers:
    return await sign_in(client, ADMIN_EMAIL)


@pytest.fixture
async def ana(client: httpx.AsyncClient) -> Headers:
    return await sign_in(client, "ana@example.com")


@pytest.fixture
async def ben(client: httpx.AsyncClient) -> Headers:
    return await sign_in(client, "ben@example.com")


async def user_id(client: httpx.AsyncClient, headers: Headers) -> int:
    response = await client.get(f"{API}/me", headers=headers)
    assert response.status_code == 200, response.text
    return int(response.json()["user_id"])


async def eventually(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 15.0, interval: float = 0.02
) -> Any:
    """Poll ``check`` until it returns something truthy (bounded: fails after ``timeout``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert loop.time() < deadline, "the condition did not hold in time"
        await asyncio.sleep(interval)


def inbox_template(**extra: Any) -> dict[str, Any]:
    body = {
        "category": "social",
        "channels": {"in_app": {"en": {"subject": "Hi {{ name }}", "body": "{{ name }} waved"}}},
    }
    body.update(extra)
    return body


async def put_template(
    client: httpx.AsyncClient, admin: Headers, key: str, body: dict[str, Any]
) -> dict[str, Any]:
    response = await client.put(f"{API}/templates/{key}", json=body, headers=admin)
    assert response.status_code == 200, response.text
    return response.json()


async def trigger(
    client: httpx.AsyncClient, admin: Headers, template: str, to: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    body = {"template": template, "to": to, "data": extra.pop("data", {}), **extra}
    response = await client.post(f"{API}/events", json=body, headers=admin)
    assert response.status_code in (200, 202), response.text
    return response.json()


async def messages_of(
    client: httpx.AsyncClient, admin: Headers, event_id: str
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        response = await client.get(f"{API}/events/{event_id}/messages", params=params,
                                    headers=admin)  # fmt: skip
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def settled(
    client: httpx.AsyncClient, admin: Headers, event_id: str, expected: int, *statuses: str
) -> list[dict[str, Any]]:
    """Wait until the event has ``expected`` messages, each in one of ``statuses``."""

    last: list[dict[str, Any]] = []

    async def check() -> list[dict[str, Any]] | None:
        last[:] = await messages_of(client, admin, event_id)
        if len(last) == expected and all(m["status"] in statuses for m in last):
            return last
        return None

    try:
        return await eventually(check)
    except AssertionError:
        raise AssertionError(f"wanted {expected} messages {statuses}, found {last}") from None


@dataclass
class Receiver:
    """A webhook endpoint on a real socket that checks every signature."""

    secret: str = ""
    statuses: list[int] = field(default_factory=list)  # answers, in turn; then 200
    received: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    clock: ManualClock | None = None

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        valid = verify_signature(
            self.secret,
            timestamp=request.headers.get("sysdesign-timestamp", ""),
            signature=request.headers.get("sysdesign-signature", ""),
            body=body,
            now=self.clock.time() if self.clock else 0.0,
        )
        self.received.append({"valid": valid, "body": body, "headers": dict(request.headers)})
        status = self.statuses.pop(0) if self.statuses else 200
        return Response(status_code=status if valid else 401)


@pytest.fixture
async def receiver(clock: ManualClock) -> AsyncIterator[Receiver]:
    hook = Receiver(clock=clock)
    port = free_port()
    app = Starlette(routes=[Route("/hook", hook.handle, methods=["POST"])])
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(1000):  # bounded: ten seconds
        if server.started:
            break
        await asyncio.sleep(0.01)  # uvicorn offers no event to wait on
    hook.url = f"http://127.0.0.1:{port}/hook"
    yield hook
    server.should_exit = True
    await task


__all__ = ["API", "Headers"]
