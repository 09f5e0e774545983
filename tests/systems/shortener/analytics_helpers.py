"""Helpers of the analytics tests: user agents, the app with the consumer on,
clients from chosen addresses, visits, and waiting for the consumer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import func, select
from starlette.applications import Starlette

from sysdesign.blocks.queue import Message
from sysdesign.platform.clock import ManualClock
from sysdesign.platform.context import Platform
from sysdesign.settings import Settings
from sysdesign.systems.shortener.service import VISITS_TOPIC
from sysdesign.systems.shortener.stats import visit_days_table, visit_dims_table
from tests.conftest import Headers, make_settings
from tests.systems.shortener.conftest import two_shards

CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
CURL = "curl/8.4.0"
# A phone whose brand contains "bot": a marker list must not take it for a crawler.
CUBOT_PHONE = (
    "Mozilla/5.0 (Linux; Android 9; CUBOT P40) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/91.0.4472.120 Mobile Safari/537.36"
)

LINKS = "/shortener/v1/links"
WAIT_SECONDS = 30.0


def analytics_settings(tmp_path: Path, database_url: str | None = None) -> Settings:
    return make_settings(
        tmp_path,
        database_url=database_url or two_shards(tmp_path),
        ratelimit_enabled=False,
        outbox_relay=True,  # limited links send their visits through the outbox
    )


@asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[None]:
    async with app.router.lifespan_context(app):
        yield


@asynccontextmanager
async def client_from(app: Starlette, ip: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a running app whose requests come from ``ip``."""
    transport = httpx.ASGITransport(app=app, client=(ip, 4242))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def visit(
    client: httpx.AsyncClient, code: str, user_agent: str | None, referrer: str | None = None
) -> httpx.Response:
    headers = {"user-agent": user_agent or ""}
    if referrer is not None:
        headers["referer"] = referrer
    return await client.get(f"/s/{code}", headers=headers)


async def eventually(
    read: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], what: str
) -> Any:
    """Read until ``done`` holds (the consumer runs behind the redirects); fail after
    ``WAIT_SECONDS`` with the last value read."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_SECONDS
    while True:
        value = await read()
        if done(value):
            return value
        if loop.time() > deadline:
            pytest.fail(f"{what} not reached within {WAIT_SECONDS}s; last read: {value!r}")
        await asyncio.sleep(0.05)


async def stats_when(
    client: httpx.AsyncClient,
    headers: Headers,
    code: str,
    done: Callable[[dict[str, Any]], bool],
    *,
    days: int = 30,
) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        response = await client.get(f"{LINKS}/{code}/stats?days={days}", headers=headers)
        assert response.status_code == 200, response.text
        return response.json()

    return await eventually(read, done, f"stats of {code}")


async def log_in(client: httpx.AsyncClient, email: str) -> Headers:
    body = {"email": email, "password": "correct horse battery"}  # as tests.conftest.sign_in
    response = await client.post("/accounts/v1/login", json=body)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def total_is(n: int) -> Callable[[dict[str, Any]], bool]:
    return lambda body: body["total"] == n


def pairs(items: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(item["value"], item["visits"]) for item in items]


def today(clock: ManualClock, days_ago: int = 0) -> str:
    return (datetime.fromtimestamp(clock.time(), UTC).date() - timedelta(days=days_ago)).isoformat()


def visit_message(link_id: int, code: str, at_ms: int, *, offset: int, ua: str) -> Message:
    payload = {"link_id": str(link_id), "code": code, "at_ms": at_ms, "referrer": None,
               "user_agent": ua, "ip": None}  # fmt: skip
    return Message(VISITS_TOPIC, 0, offset, code, orjson.dumps(payload))


async def stats_rows(platform: Platform, code: str, link_id: int) -> int:
    async with platform.db.for_key(code).read() as conn:
        count = 0
        for table in (visit_days_table, visit_dims_table):
            query = select(func.count()).select_from(table).where(table.c.link_id == link_id)
            count += (await conn.execute(query)).scalar_one()
        return count
