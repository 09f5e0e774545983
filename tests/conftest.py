"""Fixtures shared by every test: settings on a temporary data dir, a manual clock,
a platform, the root app, and database URLs for each backend of the matrix."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from sysdesign.platform.app import create_app
from sysdesign.platform.clock import ManualClock
from sysdesign.platform.context import Platform
from sysdesign.settings import Settings
from tests.backends import DATABASE_BACKENDS, database_url_for
from tests.redis_server import private_redis  # noqa: F401  (a fixture for every test)

# Cheap argon2 parameters: tests hash hundreds of passwords.
FAST_HASHING = {"argon2_time_cost": 1, "argon2_memory_kib": 8, "argon2_parallelism": 1}


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {"data_dir": data_dir, "access_log": False, **FAST_HASHING}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _no_notification_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every root app mounts the notification system; its consumers and scheduler
    run only in the tests about it (tests/systems/notifications turns them on)."""
    monkeypatch.setenv("SYSDESIGN_NOTIFY_WORKERS", "0")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=float(int(time.time())))


@pytest.fixture(params=DATABASE_BACKENDS)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """One database per backend of the matrix: SQLite always, the real ones when configured."""
    async with database_url_for(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/app.db"


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str) -> Settings:
    return make_settings(tmp_path, database_url=sqlite_url)


@pytest.fixture
async def platform(settings: Settings, clock: ManualClock) -> AsyncIterator[Platform]:
    platform = Platform(settings, clock=clock)
    await platform.start()
    yield platform
    await platform.close()


Headers = dict[str, str]


async def sign_in(client: httpx.AsyncClient, email: str) -> Headers:
    """Register ``email`` and log in: the headers of that caller."""
    body = {"email": email, "password": "correct horse battery"}
    registered = await client.post("/accounts/v1/register", json=body)
    assert registered.status_code == 201, registered.text
    login = await client.post("/accounts/v1/login", json=body)
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


async def open_client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4242))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@pytest.fixture
async def app(settings: Settings, clock: ManualClock) -> Starlette:
    return create_app(settings, clock=clock)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async for c in open_client(app):
        yield c
