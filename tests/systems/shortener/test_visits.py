"""Visit events sent in batches: nothing lost while the queue works, bounded while it does not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from sysdesign.blocks.queue import OutgoingMessage, Queue, open_queue
from sysdesign.systems.shortener.visits import VisitBatcher

TOPIC = "shortener.visits"


@pytest.fixture
async def queue() -> AsyncIterator[Queue]:
    q = open_queue("memory://")
    await q.connect()
    yield q
    await q.close()


async def _count(queue: Queue) -> int:
    return await queue.backend.message_count(TOPIC)


async def test_events_are_published_in_batches_in_order_per_key(queue: Queue) -> None:
    batcher = VisitBatcher(queue, TOPIC, max_batch=100, interval=0.01)
    batcher.start()
    for i in range(1050):
        batcher.add({"n": i}, key=f"code{i % 3}")
    for _ in range(500):
        if batcher.published == 1050:
            break
        await asyncio.sleep(0.01)
    await batcher.stop()
    assert batcher.published == 1050 and batcher.dropped == 0
    assert await _count(queue) == 1050


async def test_stop_publishes_what_is_waiting(queue: Queue) -> None:
    batcher = VisitBatcher(queue, TOPIC, max_batch=1000, interval=3600)
    batcher.start()
    for i in range(10):
        batcher.add({"n": i}, key="abc")
    await batcher.stop()
    assert batcher.published == 10 and await _count(queue) == 10


class _Down:
    """A queue whose appends fail until ``up`` is set."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self.up = False

    async def publish_batch(self, topic: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        if not self.up:
            raise ConnectionError("queue down")
        return await self.queue.publish_batch(topic, messages)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.queue, name)


async def test_a_queue_that_is_down_holds_events_up_to_a_bound(queue: Queue) -> None:
    down = _Down(queue)
    batcher = VisitBatcher(down, TOPIC, max_batch=10, interval=0.01, max_pending=25)  # type: ignore[arg-type]
    batcher.start()
    for i in range(40):
        batcher.add({"n": i}, key="abc")
    await asyncio.sleep(0.05)
    assert batcher.published == 0 and batcher.dropped == 15
    down.up = True
    for _ in range(500):
        if batcher.published == 25:
            break
        await asyncio.sleep(0.01)
    await batcher.stop()
    assert batcher.published == 25 and await _count(queue) == 25
