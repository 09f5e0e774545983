"""``db_statements_total{shard}``: every statement a shard's engine sends is counted."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from sysdesign.platform.app import create_app
from sysdesign.platform.clock import ManualClock
from sysdesign.platform.context import Platform
from tests.conftest import make_settings, open_client

METRIC = "db_statements_total"


def two_shards(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/s0.db,sqlite+aiosqlite:///{tmp_path}/s1.db"


def counted(platform: Platform, shard: int) -> float:
    value = platform.metrics_registry.get_sample_value(METRIC, {"shard": str(shard)})
    assert value is not None
    return value


async def test_a_query_moves_its_shards_counter_only(tmp_path: Path, clock: ManualClock) -> None:
    settings = make_settings(tmp_path, database_url=two_shards(tmp_path), outbox_relay=False)
    platform = Platform(settings, clock=clock)
    try:
        _ = platform.db  # built lazily; its counters start at zero with it
        before = [counted(platform, 0), counted(platform, 1)]
        async with platform.db.shards[1].read() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
        after = [counted(platform, 0), counted(platform, 1)]
        assert after[0] == before[0]
        # The SELECT, and on SQLite the BEGIN the platform issues itself.
        assert after[1] - before[1] >= 1
        async with platform.db.shards[1].read() as conn:
            await conn.execute(text("SELECT 1"))
            await conn.execute(text("SELECT 2"))
        assert counted(platform, 1) - after[1] == after[1] - before[1] + 1
    finally:
        await platform.close()


async def test_the_counter_is_on_the_metrics_endpoint(tmp_path: Path, clock: ManualClock) -> None:
    settings = make_settings(tmp_path, outbox_relay=False, ratelimit_enabled=False)
    app = create_app(settings, clock=clock, only=["accounts"])

    async def scrape(client: httpx.AsyncClient) -> float:
        body = (await client.get("/metrics")).text
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                if sample.name == METRIC and sample.labels == {"shard": "0"}:
                    return sample.value
        raise AssertionError(f"{METRIC} is not on /metrics")

    async for client in open_client(app):
        first = await scrape(client)
        assert first > 0  # start-up migrated the database
        assert await scrape(client) == first  # serving /metrics queries nothing
        login = {"email": "nobody@example.com", "password": "correct horse battery"}
        response = await client.post("/accounts/v1/login", json=login)
        assert response.status_code == 401
        assert await scrape(client) > first  # the login looked the e-mail up
