"""A ``Queue`` on each backend: memory and sqlite always, Redis and NATS when configured.

Each test gets its own namespace (``?prefix=``) on the real servers and
deletes it afterwards, so tests never see each other's topics.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sysdesign.blocks.queue import Queue, open_queue
from tests.backends import service_url

QUEUE_BACKENDS = ("memory", "sqlite", "redis", "nats")


def queue_url_for(backend: str, tmp_path: Path, partitions: int = 4) -> str:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    if backend == "memory":
        return f"memory://?partitions={partitions}"
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/queue-{prefix}.db?partitions={partitions}"
    base = service_url(backend)
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}prefix={prefix}&partitions={partitions}"


@pytest.fixture(params=QUEUE_BACKENDS)
def queue_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def queue_url(queue_backend: str, tmp_path: Path) -> AsyncIterator[str]:
    url = queue_url_for(queue_backend, tmp_path)
    yield url
    if queue_backend in ("redis", "nats"):
        cleanup = open_queue(url)
        await cleanup.connect()
        try:
            await cleanup.backend.destroy()
        finally:
            await cleanup.close()


@pytest.fixture
async def queue(queue_url: str) -> AsyncIterator[Queue]:
    q = open_queue(queue_url)
    await q.connect()
    try:
        yield q
    finally:
        await q.close()
