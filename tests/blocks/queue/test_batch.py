"""``Queue.subscribe_batch`` on every backend: whole batches in partition order,
and one message at a time when a batch fails."""

from __future__ import annotations

from sysdesign.blocks.queue import Message, OutgoingMessage, Queue
from tests.blocks.queue.test_contract import FAST, until


async def test_batches_come_in_partition_order_and_each_message_once(queue: Queue) -> None:
    await queue.create_topic("t", 1)
    await queue.publish_batch("t", [OutgoingMessage(i, key="k") for i in range(300)])
    calls: list[list[int]] = []

    async def handle(batch: list[Message]) -> None:
        calls.append([m.json() for m in batch])

    sub = queue.subscribe_batch("t", "g", handle, batch_size=50, poll_wait=0.1)
    async with sub:
        await until(lambda: sum(map(len, calls)) >= 300)
    assert [n for call in calls for n in call] == list(range(300))
    assert max(map(len, calls)) > 1
    assert all(len(call) <= 50 for call in calls)
    assert sub.stats.handled == 300
    assert sub.stats.failures == 0


async def test_a_failing_batch_is_handled_one_message_at_a_time(queue: Queue) -> None:
    await queue.create_topic("t", 1)
    await queue.publish_batch("t", [OutgoingMessage(i, key="k") for i in range(10)])
    await queue.publish("t", {"poison": True}, key="k")
    await queue.publish_batch("t", [OutgoingMessage(i, key="k") for i in range(10, 20)])
    sizes: list[int] = []
    good: list[int] = []

    async def handle(batch: list[Message]) -> None:
        sizes.append(len(batch))
        if any(m.json() == {"poison": True} for m in batch):
            raise ValueError("cannot parse a delivery")
        good.extend(m.json() for m in batch)

    sub = queue.subscribe_batch(
        "t", "g", handle, backoff=FAST, max_attempts=3, batch_size=100, poll_wait=0.1
    )
    async with sub:
        await until(lambda: len(good) == 20 and sub.stats.dead_lettered == 1)
    # Each good message once, in order; only the bad one dead-lettered.
    assert good == list(range(20))
    assert sizes.count(1) >= 3  # the poison message alone, three times
    dead = await queue.dead_letters("t")
    assert [d.json() for d in dead] == [{"poison": True}]
    assert dead[0].headers["dlq-error"] == "ValueError: cannot parse a delivery"
