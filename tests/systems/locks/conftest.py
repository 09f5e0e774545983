"""The root app with the locks system on the embedded sqlite store (expiry by
the manual clock), and two signed-in callers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from sysdesign.platform.app import create_app
from sysdesign.platform.clock import ManualClock
from tests.conftest import Headers, make_settings, open_client, sign_in


@pytest.fixture
async def client(tmp_path: Path, clock: ManualClock) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path}/app.db")
    async for c in open_client(create_app(settings, clock=clock)):
        yield c


@pytest.fixture
async def alice(client: httpx.AsyncClient) -> Headers:
    return await sign_in(client, "alice@example.com")


@pytest.fixture
async def bob(client: httpx.AsyncClient) -> Headers:
    return await sign_in(client, "bob@example.com")
