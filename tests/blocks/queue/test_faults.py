"""Faults with real processes: SIGKILL mid-message, a relay dying between publish and
mark, a publisher killed mid-stream. The sqlite backend always; Redis and NATS too
where the property is theirs as much as ours."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from sysdesign.blocks.queue import EVENT_ID_HEADER, Message, open_queue
from sysdesign.blocks.queue.idempotent import idempotent
from sysdesign.blocks.queue.relay import OutboxRelay
from sysdesign.platform.clock import SystemClock
from sysdesign.platform.db import Database, ShardRouter
from sysdesign.platform.ids import SnowflakeGenerator
from sysdesign.platform.migrations import migrate
from sysdesign.platform.uow import UnitOfWork
from tests.blocks.queue.conftest import queue_url_for
from tests.blocks.queue.test_contract import until

CHILDREN = Path(__file__).parent / "children"


@pytest.fixture
async def app_db(tmp_path: Path) -> AsyncIterator[Database]:
    """An application database with the inbox table and an ``effects`` table."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/app.db")
    await migrate(db)
    async with db.begin() as conn:
        await conn.execute(text("CREATE TABLE effects (message TEXT NOT NULL)"))
    yield db
    await db.dispose()


async def effects(db: Database) -> list[str]:
    async with db.read() as conn:
        rows = await conn.execute(text("SELECT message FROM effects ORDER BY message"))
        return [r[0] for r in rows]


def spawn(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILDREN / script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("backend", ["sqlite", "redis", "nats"])
async def test_a_consumer_killed_mid_message_is_replaced_and_the_effect_happens_once(
    backend: str, tmp_path: Path, app_db: Database
) -> None:
    url = queue_url_for(backend, tmp_path, partitions=1)
    queue = open_queue(url)
    await queue.connect()
    try:
        await queue.create_topic("work", 1)
        payloads = [f"m{i:02}" for i in range(5)] + ["hang"] + [f"m{i:02}" for i in range(5, 10)]
        await queue.publish_batch("work", payloads)

        marker = tmp_path / "hanging"
        child = spawn("consumer.py", url, str(app_db.url), str(marker))
        try:
            await until(lambda: marker.exists() or child.poll() is not None, timeout=60)
        finally:
            child.send_signal(signal.SIGKILL)
            _, stderr = child.communicate()
        assert marker.exists(), stderr
        # Killed after committing the effect of "hang", before acknowledging it.
        assert await effects(app_db) == sorted(payloads[:6])

        seen: list[Message] = []
        inner = idempotent(
            "effects",
            lambda m: UnitOfWork(app_db, SnowflakeGenerator(3), SystemClock()),
            lambda m, uow: uow.conn.execute(
                text("INSERT INTO effects (message) VALUES (:m)"), {"m": m.text()}
            ),
        )

        async def handle(message: Message) -> None:
            seen.append(message)
            await inner(message)

        # The dead member's lease lapses after its 3 s visibility timeout.
        survivor = queue.subscribe("work", "effects", handle, visibility_timeout=2, poll_wait=0.1)
        async with survivor:
            await until(lambda: {m.text() for m in seen} >= set(payloads[5:]), timeout=120)
        redelivered = next(m for m in seen if m.text() == "hang")
        assert redelivered.attempt >= 2
        assert await effects(app_db) == sorted(payloads)  # each effect exactly once
    finally:
        if backend != "sqlite":
            await queue.backend.destroy()
        await queue.close()


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_a_relay_killed_between_publish_and_mark_duplicates_but_nothing_doubles(
    backend: str, tmp_path: Path, app_db: Database
) -> None:
    url = queue_url_for(backend, tmp_path, partitions=2)
    ids = SnowflakeGenerator(5)
    clock = SystemClock()
    for i in range(20):
        async with UnitOfWork(app_db, ids, clock) as uow:
            await uow.emit("orders", {"order": i}, key=f"customer-{i % 3}")

    child = spawn("relay.py", url, str(app_db.url))
    _, stderr = await asyncio.to_thread(child.communicate, timeout=60)
    assert child.returncode == -signal.SIGKILL, stderr

    queue = open_queue(url)
    await queue.connect()
    try:
        assert await queue.backend.message_count("orders") == 20  # published, not marked
        relay = OutboxRelay(ShardRouter([app_db]), queue)
        assert await relay.run_once() == 20  # published again
        assert await relay.run_once() == 0
        assert await queue.backend.message_count("orders") == 40

        inner = idempotent(
            "orders-projection",
            lambda m: UnitOfWork(app_db, ids, clock),
            lambda m, uow: uow.conn.execute(
                text("INSERT INTO effects (message) VALUES (:m)"), {"m": str(m.json()["order"])}
            ),
        )
        outcomes: list[bool] = []
        event_ids: set[str] = set()

        async def handle(message: Message) -> None:
            event_ids.add(message.headers[EVENT_ID_HEADER])
            outcomes.append(await inner(message))

        async with queue.subscribe("orders", "projection", handle, poll_wait=0.1):
            await until(lambda: len(outcomes) == 40)
        assert outcomes.count(True) == 20 and outcomes.count(False) == 20
        assert len(event_ids) == 20
        assert sorted(map(int, await effects(app_db))) == list(range(20))
    finally:
        if backend != "sqlite":
            await queue.backend.destroy()
        await queue.close()


async def test_no_acknowledged_publish_is_lost_when_the_publisher_is_killed(
    tmp_path: Path,
) -> None:
    url = queue_url_for("sqlite", tmp_path)
    child = spawn("publisher.py", url)
    acknowledged: list[int] = []
    assert child.stdout is not None
    while len(acknowledged) < 3000:
        line = await asyncio.to_thread(child.stdout.readline)
        if not line:
            pytest.fail(child.communicate()[1])
        acknowledged.append(int(line))
    child.send_signal(signal.SIGKILL)
    rest, _ = child.communicate()
    acknowledged += [int(n) for n in rest.split()]

    queue = open_queue(url)  # a fresh process's view of the file after the crash
    await queue.connect()
    try:
        stored: set[int] = set()
        for p in range(await queue.partitions("durable", create=False)):
            offset = 0
            while batch := await queue.backend.read("durable", p, offset, 1000):
                stored.update(int(m.text()) for m in batch)
                offset = batch[-1].offset + 1
        assert set(acknowledged) <= stored
    finally:
        await queue.close()
