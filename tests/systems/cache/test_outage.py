"""The cache being down: start-up fails in one line; later, every operation is a
503 with ``Retry-After``, ``/readyz`` names the cache, and service comes back
with the cache. A real RESP server (``CacheNode``) is stopped and started
again, in this process."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sysdesign.blocks.cache.node import CacheNode
from sysdesign.platform.app import create_app
from sysdesign.platform.clock import ManualClock
from sysdesign.platform.errors import BackendUnavailable
from tests.conftest import make_settings, open_client, sign_in
from tests.systems.cache.test_keys import assert_problem

OPERATIONS = [
    ("GET", "/cache/v1/keys/k", None),
    ("PUT", "/cache/v1/keys/k", None),
    ("DELETE", "/cache/v1/keys/k", None),
    ("POST", "/cache/v1/keys/k/incr", {"amount": 1}),
    ("POST", "/cache/v1/mget", {"keys": ["k"]}),
    ("POST", "/cache/v1/mset", {"items": {"k": "YQ=="}}),
    ("GET", "/cache/v1/stats", None),
]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens there once this closes


def node_url(port: int) -> str:
    return f"redis://127.0.0.1:{port}/0?socket_timeout=0.5"


async def test_an_unreachable_cache_fails_start_up_with_one_line(
    tmp_path: Path, clock: ManualClock
) -> None:
    url = node_url(closed_port())
    app = create_app(make_settings(tmp_path, cache_url=url), clock=clock)
    try:
        with pytest.raises(BackendUnavailable) as failed:
            async with app.router.lifespan_context(app):
                pass
    finally:
        await app.state.platform.close()
    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith("cache redis is unreachable")
    assert "127.0.0.1" in message


async def test_a_process_that_serves_no_cache_does_not_need_one(
    tmp_path: Path, clock: ManualClock
) -> None:
    settings = make_settings(tmp_path, cache_url=node_url(closed_port()))
    async for client in open_client(create_app(settings, clock=clock, only=["accounts"])):
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert "cache" not in ready.json()["checks"]


@pytest.fixture
async def node() -> AsyncIterator[CacheNode]:
    node = CacheNode(port=0)
    await node.start()
    try:
        yield node
    finally:
        await node.close()


async def test_an_outage_is_503_with_retry_after_until_the_cache_is_back(
    tmp_path: Path, clock: ManualClock, node: CacheNode
) -> None:
    settings = make_settings(tmp_path, cache_url=node_url(node.port))
    async for client in open_client(create_app(settings, clock=clock)):
        user = await sign_in(client, "carol@example.com")
        assert (await client.put("/cache/v1/keys/k", content=b"v", headers=user)).status_code == 201
        assert (await client.get("/readyz")).json()["checks"]["cache"] == "ok"

        await node.close()
        for method, path, body in OPERATIONS:
            response = await client.request(method, path, json=body, headers=user)
            problem = assert_problem(response, 503, "cache-unavailable")
            assert response.headers["retry-after"] == "1"
            assert "Traceback" not in response.text
            assert "127.0.0.1" not in problem.get("detail", "")  # no internals to callers
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["cache"].startswith("CacheUnavailable")

        # The same address again, an empty cache: service resumes with no restart.
        back = CacheNode(port=node.port)
        await back.start()
        try:
            assert (await client.get("/cache/v1/keys/k", headers=user)).status_code == 404
            stored = await client.put("/cache/v1/keys/k", content=b"again", headers=user)
            assert stored.status_code == 201
            assert (await client.get("/cache/v1/keys/k", headers=user)).content == b"again"
            assert (await client.get("/readyz")).status_code == 200
        finally:
            await back.close()
