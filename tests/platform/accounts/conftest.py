from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from sysdesign.platform.app import create_app
from sysdesign.platform.clock import ManualClock
from tests.conftest import make_settings, open_client


@pytest.fixture
async def accounts_client(
    tmp_path: Path, database_url: str, clock: ManualClock
) -> AsyncIterator[httpx.AsyncClient]:
    """The root app on each database backend, migrated as ``sysdesign migrate`` would."""
    settings = make_settings(
        tmp_path,
        database_url=database_url,
        auto_migrate=True,
        login_failures_per_email=3,
        login_failures_per_ip=5,
    )
    async for client in open_client(create_app(settings, clock=clock)):
        yield client


async def register(
    client: httpx.AsyncClient, email: str = "ana@example.com", password: str = "correct horse"
) -> dict:
    response = await client.post(
        "/accounts/v1/register", json={"email": email, "password": password}
    )
    assert response.status_code == 201, response.text
    return response.json()


async def login(
    client: httpx.AsyncClient, email: str = "ana@example.com", password: str = "correct horse"
) -> dict:
    response = await client.post("/accounts/v1/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return response.json()


def bearer(tokens: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}
