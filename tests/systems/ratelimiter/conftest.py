"""The root app with a rules file of small limits, so tests reach them quickly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from sysdesign.platform.app import create_app
from sysdesign.platform.clock import ManualClock
from tests.conftest import make_settings, open_client

RULES = """
rules:
  - name: register-per-ip
    match: {method: POST, path: /accounts/v1/register}
    descriptors: [ip]
    algorithm: sliding_log
    limits: [3/hour]
  - name: me-per-user
    match: {path: /accounts/v1/me}
    descriptors: [user]
    algorithm: fixed_window
    limits: [2/minute]
  - name: watch-only
    match: {path: /accounts/v1/me}
    descriptors: [ip]
    algorithm: token_bucket
    limits: [1/minute]
    shadow: true
"""


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return path


@pytest.fixture
async def limited(
    tmp_path: Path, rules_file: Path, clock: ManualClock
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path}/app.db",
        ratelimit_rules=rules_file,
        ratelimit_reload_seconds=0.05,
    )
    async for client in open_client(create_app(settings, clock=clock)):
        yield client
