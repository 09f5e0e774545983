"""Real services for tests: found through ``SYSDESIGN_TEST_<NAME>_URL``.

Unset, a test that needs one is skipped with the reason; with
``SYSDESIGN_REQUIRE_SERVICES=1`` (CI) it fails instead, so CI can never pass
by skipping. Relational databases get a fresh database per test.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

SERVICES = ("postgres", "mysql", "redis", "nats", "etcd", "s3")
DATABASE_BACKENDS = ("sqlite", "postgres", "mysql")


def services_required() -> bool:
    return os.environ.get("SYSDESIGN_REQUIRE_SERVICES") == "1"


def service_url(name: str) -> str:
    """The URL of real service ``name``, or skip (fail in CI) with the reason."""
    variable = f"SYSDESIGN_TEST_{name.upper()}_URL"
    url = os.environ.get(variable)
    if not url:
        reason = f"{variable} is not set: no real {name} to test against"
        if services_required():
            pytest.fail(f"{reason}, and SYSDESIGN_REQUIRE_SERVICES=1")
        pytest.skip(reason)
    return url


@asynccontextmanager
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    """Create an empty database on the server of ``server_url``; drop it afterwards."""
    url = make_url(server_url)
    name = f"sd_{uuid.uuid4().hex[:16]}"
    admin = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f"CREATE DATABASE {name}"))
    except Exception as exc:
        await admin.dispose()
        message = f"cannot create a database on {url.render_as_string()}: {exc}"
        if services_required():
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as conn:
            force = " WITH (FORCE)" if url.get_backend_name() == "postgresql" else ""
            await conn.execute(text(f"DROP DATABASE IF EXISTS {name}{force}"))
        await admin.dispose()


@asynccontextmanager
async def database_url_for(backend: str, tmp_path: object) -> AsyncIterator[str]:
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/app.db"
        return
    async with fresh_database(service_url(backend)) as url:
        yield url


def redis_url(prefix: str) -> str:
    """The shared Redis test server with the blocks' options: keys under
    ``prefix``, and a timeout generous enough for a loaded CI machine (tests
    about outages set their own)."""
    base = service_url("redis")
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}prefix={prefix}&socket_timeout=5"


async def delete_prefix(prefix: str) -> None:
    """Delete every key of the shared Redis test server under ``prefix``."""
    client = Redis.from_url(service_url("redis"))
    try:
        pattern = re.sub(r"([\\*?\[\]])", r"\\\1", prefix) + ":*"
        keys = [key async for key in client.scan_iter(match=pattern, count=1000)]
        if keys:
            await client.unlink(*keys)
    finally:
        await client.aclose()
