"""The test-service pattern itself, and that every real service CI provides answers."""

from __future__ import annotations

import pytest

from tests.backends import service_url


def test_unset_service_skips_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYSDESIGN_TEST_ETCD_URL", raising=False)
    monkeypatch.delenv("SYSDESIGN_REQUIRE_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="SYSDESIGN_TEST_ETCD_URL is not set"):
        service_url("etcd")


def test_unset_service_fails_when_services_are_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYSDESIGN_TEST_ETCD_URL", raising=False)
    monkeypatch.setenv("SYSDESIGN_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match="SYSDESIGN_REQUIRE_SERVICES=1"):
        service_url("etcd")


@pytest.mark.redis
async def test_redis_answers() -> None:
    import redis.asyncio as redis

    client = redis.from_url(service_url("redis"))
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()


@pytest.mark.nats
async def test_nats_answers_with_jetstream() -> None:
    import nats

    connection = await nats.connect(
        service_url("nats"), connect_timeout=5, max_reconnect_attempts=0
    )
    try:
        info = await connection.jetstream().account_info()
        assert info.limits is not None
    finally:
        await connection.close()
