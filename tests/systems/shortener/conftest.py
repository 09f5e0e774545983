"""The root app with the shortener on two SQLite shards, a manual clock, and
two signed-in callers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event
from starlette.applications import Starlette

from sysdesign.platform.app import create_app
from sysdesign.platform.clock import ManualClock
from sysdesign.platform.context import Platform
from tests.conftest import Headers, make_settings, sign_in


def two_shards(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/shard0.db,sqlite+aiosqlite:///{tmp_path}/shard1.db"


@pytest.fixture
def analytics() -> bool:
    """Whether the app runs the analytics consumer: parametrize ``analytics`` to turn it on."""
    return False


@pytest.fixture
def app(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch, analytics: bool
) -> Starlette:
    # The analytics consumer writes to the shards; off unless asked for, for the
    # same reason as the relay.
    monkeypatch.setenv("SYSDESIGN_SHORTENER_ANALYTICS", "1" if analytics else "0")
    settings = make_settings(
        tmp_path,
        database_url=two_shards(tmp_path),
        ratelimit_enabled=False,
        # The relay polls the outbox; off, so that counted queries are the redirect's own.
        outbox_relay=False,
    )
    return create_app(settings, clock=clock)


@pytest.fixture
def platform(app: Starlette) -> Platform:
    """The platform of this folder's app (not the started one of tests/conftest.py)."""
    return app.state.platform


@pytest.fixture
async def alice(client: httpx.AsyncClient) -> Headers:
    return await sign_in(client, "alice@example.com")


@pytest.fixture
async def bob(client: httpx.AsyncClient) -> Headers:
    return await sign_in(client, "bob@example.com")


@contextmanager
def counting_queries(platform: Platform) -> Iterator[list[str]]:
    """Every SQL statement any shard runs inside the block, as text."""
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    engines = [db.engine.sync_engine for db in platform.db.shards]
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


async def shorten(client: httpx.AsyncClient, headers: Headers, **body: Any) -> dict[str, Any]:
    body.setdefault("target", "https://example.com/page")
    response = await client.post("/shortener/v1/links", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
async def engine_platform(
    database_url: str, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[Platform]:
    settings = make_settings(
        tmp_path, database_url=database_url, auto_migrate=True, outbox_relay=False
    )
    platform = Platform(settings, clock=clock)
    await platform.start()
    await platform.connect_queue()
    yield platform
    await platform.close()
