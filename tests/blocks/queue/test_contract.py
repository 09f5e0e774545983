"""The queue contract, on every backend: the same tests for memory, sqlite, Redis and NATS."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable

import pytest

from sysdesign.blocks.queue import (
    Backoff,
    GroupActive,
    InvalidName,
    Message,
    OutgoingMessage,
    Queue,
    UnknownTopic,
)

FAST = Backoff(base=0.01, factor=2.0, maximum=0.05)
WAIT = 30.0


async def until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    """Wait for ``predicate`` to hold; fail the test if it does not in time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)


def recorder() -> tuple[list[Message], Callable[[Message], Awaitable[None]]]:
    seen: list[Message] = []

    async def handle(message: Message) -> None:
        seen.append(message)

    return seen, handle


async def test_published_messages_reach_a_subscriber_with_payload_key_and_headers(
    queue: Queue,
) -> None:
    ids = [
        await queue.publish("orders", {"n": i}, key=f"k{i % 3}", headers={"trace": str(i)})
        for i in range(20)
    ]
    seen, handle = recorder()
    async with queue.subscribe("orders", "billing", handle, poll_wait=0.1):
        await until(lambda: len(seen) == 20)
    by_id = {m.id: m for m in seen}
    assert sorted(by_id) == sorted(ids)
    for i, message_id in enumerate(ids):
        m = by_id[message_id]
        assert m.json() == {"n": i}
        assert m.key == f"k{i % 3}"
        assert m.headers["trace"] == str(i)
        assert m.topic == "orders"
        assert m.attempt == 1
        assert m.timestamp > 0


async def test_payloads_may_be_bytes_text_or_json(queue: Queue) -> None:
    await queue.publish("mixed", b"\x00\xffraw", key="a")
    await queue.publish("mixed", "text \u00e9", key="a")
    await queue.publish("mixed", [1, "two", None], key="a")
    seen, handle = recorder()
    async with queue.subscribe("mixed", "g", handle, poll_wait=0.1):
        await until(lambda: len(seen) == 3)
    assert seen[0].payload == b"\x00\xffraw"
    assert seen[1].text() == "text \u00e9"
    assert seen[2].json() == [1, "two", None]


async def test_messages_with_one_key_are_handled_in_publish_order(queue: Queue) -> None:
    keys = [f"user-{i}" for i in range(10)]
    sent: dict[str, list[int]] = defaultdict(list)
    batch = []
    for n in range(300):
        key = random.choice(keys)
        sent[key].append(n)
        batch.append(OutgoingMessage({"n": n}, key=key))
    await queue.publish_batch("events", batch[:150])
    for item in batch[150:]:
        await queue.publish("events", item.payload, key=item.key)

    got: dict[str, list[int]] = defaultdict(list)

    async def handle(message: Message) -> None:
        await asyncio.sleep(random.random() / 1000)
        got[message.key or ""].append(message.json()["n"])

    async with queue.subscribe("events", "g", handle, concurrency=8, poll_wait=0.1):
        await until(lambda: sum(map(len, got.values())) == 300)
    assert got == sent


async def test_every_group_sees_every_message(queue: Queue) -> None:
    await queue.publish_batch("t", [OutgoingMessage(i, key=str(i)) for i in range(40)])
    seen_a, handle_a = recorder()
    seen_b, handle_b = recorder()
    async with (
        queue.subscribe("t", "a", handle_a, poll_wait=0.1),
        queue.subscribe("t", "b", handle_b, poll_wait=0.1),
    ):
        await until(lambda: len(seen_a) == 40 and len(seen_b) == 40)
    assert sorted(m.json() for m in seen_a) == list(range(40))
    assert sorted(m.json() for m in seen_b) == list(range(40))


async def test_members_of_one_group_share_the_partitions(queue: Queue) -> None:
    seen_1, handle_1 = recorder()
    seen_2, handle_2 = recorder()
    first = await queue.subscribe("t", "g", handle_1, visibility_timeout=3, poll_wait=0.1).start()
    second = await queue.subscribe("t", "g", handle_2, visibility_timeout=3, poll_wait=0.1).start()
    try:
        # Within a few heartbeats the first member gives up half the partitions.
        await until(lambda: first.partitions and second.partitions, timeout=WAIT)
        assert not set(first.partitions) & set(second.partitions)
        await queue.publish_batch("t", [OutgoingMessage(i, key=f"k{i}") for i in range(200)])
        await until(lambda: len(seen_1) + len(seen_2) >= 200)
        await asyncio.sleep(0.3)
    finally:
        await first.stop()
        await second.stop()
    values = sorted(m.json() for m in seen_1 + seen_2)
    assert values == list(range(200))  # each once: no failures, no redelivery
    assert seen_1 and seen_2


async def test_a_failing_message_is_retried_with_growing_attempts(queue: Queue) -> None:
    attempts: list[int] = []
    others: list[int] = []

    async def handle(message: Message) -> None:
        if message.key == "flaky":
            attempts.append(message.attempt)
            if message.attempt < 3:
                raise RuntimeError("not yet")
        else:
            others.append(message.json())

    await queue.publish("t", "x", key="flaky")
    await queue.publish_batch("t", [OutgoingMessage(i, key=f"k{i}") for i in range(20)])
    sub = queue.subscribe("t", "g", handle, backoff=FAST, max_attempts=5, poll_wait=0.1)
    async with sub:
        await until(lambda: attempts[-1:] == [3] and len(others) == 20)
    assert attempts == [1, 2, 3]
    assert sub.stats.failures == 2
    assert sub.stats.dead_lettered == 0
    assert await queue.dead_letter_depth("t") == 0


async def test_a_poison_message_goes_to_the_dead_letter_topic_and_others_flow(
    queue: Queue,
) -> None:
    good: list[int] = []
    poison_attempts: list[int] = []

    async def handle(message: Message) -> None:
        if message.key == "poison":
            poison_attempts.append(message.attempt)
            raise ValueError("cannot parse order 7")
        good.append(message.json())

    await queue.publish_batch("t", [OutgoingMessage(i, key=f"k{i}") for i in range(10)])
    await queue.publish("t", {"bad": True}, key="poison", headers={"origin": "test"})
    await queue.publish_batch("t", [OutgoingMessage(i, key=f"k{i}") for i in range(10, 30)])
    sub = queue.subscribe("t", "g", handle, backoff=FAST, max_attempts=3, poll_wait=0.1)
    async with sub:
        await until(lambda: len(good) == 30 and sub.stats.dead_lettered == 1)
    assert poison_attempts == [1, 2, 3]
    assert sorted(good) == list(range(30))

    dead = await queue.dead_letters("t")
    assert len(dead) == 1
    assert dead[0].json() == {"bad": True}
    assert dead[0].key == "poison"
    assert dead[0].headers["origin"] == "test"
    assert dead[0].headers["dlq-error"] == "ValueError: cannot parse order 7"
    assert dead[0].headers["dlq-attempts"] == "3"
    assert await queue.dead_letter_depth("t") == 1

    # Replay puts it back on the topic; a fixed consumer then handles it.
    assert await queue.replay_dead_letters("t") == 1
    assert await queue.dead_letter_depth("t") == 0
    assert await queue.dead_letters("t") == []
    replayed, handle_fixed = recorder()
    async with queue.subscribe("t", "g", handle_fixed, poll_wait=0.1):
        await until(lambda: len(replayed) == 1)
    assert replayed[0].json() == {"bad": True}
    assert replayed[0].attempt == 1
    assert "dlq-error" not in replayed[0].headers


async def test_a_handler_past_its_visibility_timeout_is_cancelled_and_retried(
    queue: Queue,
) -> None:
    attempts: list[int] = []
    cancelled = asyncio.Event()

    async def handle(message: Message) -> None:
        attempts.append(message.attempt)
        if message.attempt == 1:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise

    await queue.publish("t", "slow", key="a")
    sub = queue.subscribe("t", "g", handle, visibility_timeout=0.5, backoff=FAST, poll_wait=0.1)
    async with sub:
        await until(lambda: attempts == [1, 2])
    assert cancelled.is_set()


async def test_a_lapsed_lease_redelivers_what_its_holder_did_not_acknowledge(
    queue: Queue,
) -> None:
    backend = queue.backend
    await queue.create_topic("t", 1)
    await queue.publish_batch("t", [OutgoingMessage(i, key="k") for i in range(5)])
    await backend.create_group("t", "g", "earliest")
    assert await backend.acquire("t", "g", 0, "dead", ttl=0.5)
    taken = await backend.fetch("t", "g", 0, "dead", 3, 0.0)
    assert [m.json() for m in taken] == [0, 1, 2]
    await backend.ack("t", "g", 0, "dead", taken[:1])
    # The holder dies: no ack, no release. Nobody else gets the partition meanwhile.
    assert not await backend.acquire("t", "g", 0, "alive", ttl=5)
    assert await backend.owners("t", "g") == {0: "dead"}
    await asyncio.sleep(0.8)
    assert await backend.acquire("t", "g", 0, "alive", ttl=5)
    again = await backend.fetch("t", "g", 0, "alive", 10, 0.0)
    assert [m.json() for m in again] == [1, 2, 3, 4]
    assert [m.attempt for m in again] == [2, 2, 1, 1]
    assert not await backend.renew("t", "g", 0, "dead", ttl=5)
    await backend.release("t", "g", 0, "dead")  # not the holder: nothing happens
    assert await backend.owners("t", "g") == {0: "alive"}
    await backend.ack("t", "g", 0, "alive", again)
    assert await backend.lag("t", "g") == {0: 0}


async def test_a_released_partition_restarts_at_the_first_unacknowledged_message(
    queue: Queue,
) -> None:
    backend = queue.backend
    await queue.create_topic("t", 1)
    await queue.publish_batch("t", [OutgoingMessage(i) for i in range(4)])
    await backend.create_group("t", "g", "earliest")
    assert await backend.acquire("t", "g", 0, "m1", ttl=10)
    first = await backend.fetch("t", "g", 0, "m1", 2, 0.0)
    assert [m.json() for m in first] == [0, 1]
    second = await backend.fetch("t", "g", 0, "m1", 1, 0.0)
    assert [m.json() for m in second] == [2]
    await backend.ack("t", "g", 0, "m1", first)
    await backend.release("t", "g", 0, "m1")
    assert await backend.owners("t", "g") == {}
    assert await backend.acquire("t", "g", 0, "m2", ttl=10)
    rest = await backend.fetch("t", "g", 0, "m2", 10, 0.0)
    assert [m.json() for m in rest] == [2, 3]
    assert [m.attempt for m in rest] == [2, 1]
    assert await backend.position("t", "g", 0) == rest[0].offset


async def test_fetch_waits_for_a_message_to_arrive(queue: Queue) -> None:
    backend = queue.backend
    await queue.create_topic("t", 1)
    await backend.create_group("t", "g", "earliest")
    assert await backend.acquire("t", "g", 0, "m", ttl=10)
    assert await backend.fetch("t", "g", 0, "m", 10, 0.05) == []
    waiting = asyncio.create_task(backend.fetch("t", "g", 0, "m", 10, 10.0))
    await asyncio.sleep(0.1)
    await queue.publish("t", "late")
    got = await asyncio.wait_for(waiting, WAIT)
    assert [m.text() for m in got] == ["late"]


async def test_reset_replays_a_stopped_group_from_an_offset_or_a_time(queue: Queue) -> None:
    await queue.create_topic("t", 2)
    await queue.publish_batch("t", [OutgoingMessage(i, key=f"k{i}") for i in range(10)])
    seen, handle = recorder()
    sub = queue.subscribe("t", "g", handle, poll_wait=0.1)
    async with sub:
        await until(lambda: len(seen) == 10)
        with pytest.raises(GroupActive):
            await queue.reset("t", "g", to_offset="earliest")
    assert sum((await queue.lag("t", "g"))[0].partitions.values()) == 0

    await queue.reset("t", "g", to_offset="earliest")
    assert (await queue.lag("t", "g"))[0].total == 10
    seen.clear()
    async with queue.subscribe("t", "g", handle, poll_wait=0.1):
        await until(lambda: len(seen) == 10)
    assert sorted(m.json() for m in seen) == list(range(10))

    await queue.reset("t", "g", to_time=max(m.timestamp for m in seen) + 3600)
    assert (await queue.lag("t", "g"))[0].total == 0
    await queue.reset("t", "g", to_time=0)
    assert (await queue.lag("t", "g"))[0].total == 10

    offsets = {m.partition: m.offset for m in sorted(seen, key=lambda m: -m.offset)}
    positions = await queue.reset("t", "g", to_offset=offsets)
    assert positions == offsets
    assert (await queue.lag("t", "g"))[0].total == sum(
        1 for m in seen if m.offset >= offsets[m.partition]
    )
    await queue.reset("t", "g", to_offset="latest")
    assert (await queue.lag("t", "g"))[0].total == 0
    with pytest.raises(ValueError):
        await queue.reset("t", "g")
    with pytest.raises(UnknownTopic):
        await queue.reset("nope", "g", to_offset="earliest")


async def test_a_group_starting_at_latest_skips_earlier_messages(queue: Queue) -> None:
    await queue.publish_batch("t", [OutgoingMessage(i, key=f"k{i}") for i in range(5)])
    seen, handle = recorder()
    async with queue.subscribe("t", "late", handle, start="latest", poll_wait=0.1):
        await queue.publish("t", "new", key="k1")
        await until(lambda: len(seen) == 1)
        await asyncio.sleep(0.2)
    assert [m.payload for m in seen] == [b"new"]


async def test_introspection_lists_topics_groups_and_lag(queue: Queue) -> None:
    await queue.create_topic("orders", 3)
    await queue.publish_batch("orders", [OutgoingMessage(i, key=f"k{i}") for i in range(12)])
    await queue.backend.create_group("orders", "billing", "earliest")
    [info] = [t for t in await queue.topics() if t.name == "orders"]
    assert info.partitions == 3
    assert info.messages == 12
    assert info.groups == ["billing"]
    [lag] = await queue.lag("orders")
    assert lag.group == "billing"
    assert set(lag.partitions) == {0, 1, 2}
    assert lag.total == 12

    seen, handle = recorder()
    async with queue.subscribe("orders", "billing", handle, poll_wait=0.1) as sub:
        await until(lambda: len(seen) == 12)
        await until(lambda: len(sub.partitions) == 3)
        [lag] = await queue.lag("orders", "billing")
        assert set(lag.owners.values()) == {sub.member}
    [lag] = await queue.lag("orders", "billing")
    assert lag.total == 0
    assert lag.owners == {}
    with pytest.raises(UnknownTopic):
        await queue.lag("missing")


async def test_partition_counts_are_fixed_once_a_topic_exists(queue: Queue) -> None:
    assert await queue.create_topic("t", 3) == 3
    assert await queue.create_topic("t", 5) == 3
    assert await queue.backend.partition_count("t") == 3
    assert await queue.backend.partition_count("never") is None
    message_id = await queue.publish("t", "x", key="same")
    assert int(message_id.split("-")[0]) in range(3)
    assert (await queue.publish("t", "y", key="same")).split("-")[0] == message_id.split("-")[0]


async def test_bad_names_and_arguments_are_refused(queue: Queue) -> None:
    for bad in ("", "has space", "-lead", "a/b", "x" * 201, "star*"):
        with pytest.raises(InvalidName):
            await queue.publish(bad, "x")
    with pytest.raises(InvalidName):
        queue.subscribe("ok", "bad group", recorder()[1])
    with pytest.raises(ValueError):
        await queue.create_topic("t", 0)
    with pytest.raises(ValueError):
        await queue.publish("t", "x", headers={"n": 1})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        await queue.publish("t", "x", key=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        queue.subscribe("t", "g", recorder()[1], concurrency=0)


async def test_concurrency_bounds_the_handlers_running_at_once(queue: Queue) -> None:
    running = 0
    peak = 0
    done = 0

    async def handle(message: Message) -> None:
        nonlocal running, peak, done
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        done += 1

    await queue.publish_batch("t", [OutgoingMessage(i, key=f"k{i}") for i in range(40)])
    async with queue.subscribe("t", "g", handle, concurrency=2, poll_wait=0.1):
        await until(lambda: done == 40)
    assert peak == 2


async def test_a_batch_publish_keeps_order_and_returns_every_id(queue: Queue) -> None:
    ids = await queue.publish_batch("t", [OutgoingMessage(i, key="one") for i in range(500)])
    assert len(ids) == len(set(ids)) == 500
    offsets = [int(i.split("-")[1]) for i in ids]
    assert offsets == sorted(offsets)
    seen, handle = recorder()
    async with queue.subscribe("t", "g", handle, batch_size=64, poll_wait=0.1):
        await until(lambda: len(seen) == 500)
    assert [m.json() for m in seen] == list(range(500))
    assert await queue.publish_batch("t", []) == []
