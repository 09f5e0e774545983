"""Consumer behaviour that does not depend on the engine, on the memory backend."""

from __future__ import annotations

import asyncio

from sysdesign.blocks.queue import Backoff, Message, open_queue
from tests.blocks.queue.test_contract import until


def test_backoff_grows_exponentially_with_equal_jitter_and_a_ceiling() -> None:
    backoff = Backoff(base=1.0, factor=2.0, maximum=10.0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (30, 10.0)]:
        delays = [backoff.delay(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 10  # jittered, not constant


async def test_stopping_during_a_retry_wait_gives_the_message_up_unacknowledged() -> None:
    queue = open_queue("memory://?partitions=1")
    await queue.connect()
    await queue.publish("t", "flaky")
    attempts: list[int] = []

    async def failing(message: Message) -> None:
        attempts.append(message.attempt)
        raise RuntimeError("down")

    slow = Backoff(base=600.0, maximum=600.0)  # a ten-minute wait that stop() must cut short
    sub = await queue.subscribe("t", "g", failing, backoff=slow, poll_wait=0.1).start()
    await until(lambda: attempts == [1])
    await asyncio.wait_for(sub.stop(), 5)
    assert (await queue.lag("t", "g"))[0].total == 1  # not acknowledged, not dead-lettered
    assert await queue.dead_letter_depth("t") == 0

    seen: list[Message] = []

    async def working(message: Message) -> None:
        seen.append(message)

    async with queue.subscribe("t", "g", working, poll_wait=0.1):
        await until(lambda: len(seen) == 1)
    assert seen[0].attempt == 2
    assert (await queue.lag("t", "g"))[0].total == 0
