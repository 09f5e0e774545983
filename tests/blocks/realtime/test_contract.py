"""The ``Realtime`` contract, on every backend: fan-out to the subscriptions of
the moment, no replay, bounded buffers that drop the oldest, clean unsubscribe.

On Redis a message arrives a little after ``publish`` returns, so tests wait
for it (``get`` with a bound); nothing here asserts how long anything takes.
"""

from __future__ import annotations

import asyncio

import pytest

from sysdesign.blocks.realtime import Realtime, Subscription
from tests.blocks.realtime.conftest import Connect, eventually

WAIT = 10.0  # seconds: the bound on waiting for a message that must come
NOTHING = 0.2  # seconds: how long to look for a message that must not come


async def take(sub: Subscription, n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        message = await sub.get(WAIT)
        assert message is not None, f"message {len(out) + 1} of {n} did not come"
        out.append(message)
    return out


async def test_a_message_reaches_every_subscriber_of_its_channel_only(
    realtime: Realtime,
) -> None:
    async with (
        realtime.subscribe("inbox:1") as a,
        realtime.subscribe("inbox:1") as b,
        realtime.subscribe("inbox:2") as other,
    ):
        await realtime.publish("inbox:1", b"hello")
        await realtime.publish("inbox:2", b"for two")
        assert await take(a, 1) == [b"hello"]
        assert await take(b, 1) == [b"hello"]
        assert await take(other, 1) == [b"for two"]
        assert await a.get(NOTHING) is None
        assert await other.get(NOTHING) is None


async def test_messages_keep_their_bytes_and_their_order(realtime: Realtime) -> None:
    payloads = [b"", b"\x00\xff\r\n", "ünïcode".encode(), b"x" * 100_000] + [
        str(i).encode() for i in range(200)
    ]
    async with realtime.subscribe("c") as sub:
        for payload in payloads:
            await realtime.publish("c", payload)
        assert await take(sub, len(payloads)) == payloads


async def test_a_later_subscriber_gets_nothing_from_before(realtime: Realtime) -> None:
    async with realtime.subscribe("feed") as early:
        await realtime.publish("feed", b"one")
        assert await take(early, 1) == [b"one"]
        async with realtime.subscribe("feed") as late:
            await realtime.publish("feed", b"two")
            assert await take(late, 1) == [b"two"]
            assert await take(early, 1) == [b"two"]
    await realtime.publish("feed", b"to nobody")
    async with realtime.subscribe("feed") as after:
        await realtime.publish("feed", b"three")
        assert await take(after, 1) == [b"three"]


async def test_a_slow_subscriber_drops_its_oldest_messages_and_counts_them(
    connect: Connect,
) -> None:
    realtime = await connect(buffer=3)
    async with realtime.subscribe("busy") as slow, realtime.subscribe("busy") as fast:
        for i in range(1, 6):
            await realtime.publish("busy", f"m{i}".encode())
            assert await take(fast, 1) == [f"m{i}".encode()]
        await eventually(lambda: slow.dropped == 2)
        assert slow.pending == 3
        assert await take(slow, 3) == [b"m3", b"m4", b"m5"]
        assert await slow.get(NOTHING) is None
        assert fast.dropped == 0
        assert realtime.dropped == 2
        await realtime.publish("busy", b"m6")
        assert await take(slow, 1) == [b"m6"]
        assert slow.dropped == 2


async def test_leaving_unsubscribes(realtime: Realtime) -> None:
    async with realtime.subscribe("c") as staying:
        async with realtime.subscribe("c") as leaving:
            assert realtime.subscriptions == 2
        assert leaving.closed and realtime.subscriptions == 1
        await realtime.publish("c", b"after")
        assert await take(staying, 1) == [b"after"]
        assert await leaving.get(NOTHING) is None
    assert realtime.subscriptions == 0


async def test_buffered_messages_outlive_close_and_iteration_ends(realtime: Realtime) -> None:
    sub = realtime.subscribe("c")
    async with sub:
        await realtime.publish("c", b"1")
        await realtime.publish("c", b"2")
        await eventually(lambda: sub.pending == 2)
    assert [message async for message in sub] == [b"1", b"2"]
    assert await sub.get() is None


async def test_iterating_waits_for_messages_until_closed(realtime: Realtime) -> None:
    seen: list[bytes] = []

    async def read(sub: Subscription) -> None:
        async for message in sub:
            seen.append(message)

    async with realtime.subscribe("c") as sub:
        reader = asyncio.create_task(read(sub))
        for message in (b"a", b"b", b"c"):
            await realtime.publish("c", message)
        await eventually(lambda: len(seen) == 3)
        await sub.close()
        await asyncio.wait_for(reader, WAIT)
    assert seen == [b"a", b"b", b"c"]


async def test_closing_the_backend_ends_every_subscription(connect: Connect) -> None:
    realtime = await connect()
    sub = await realtime.subscribe("c").__aenter__()
    waiting = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    await realtime.close()
    assert await asyncio.wait_for(waiting, WAIT) is None
    assert sub.closed and realtime.subscriptions == 0
    await sub.close()  # leaving after the backend closed is harmless


async def test_get_times_out_with_none(realtime: Realtime) -> None:
    async with realtime.subscribe("quiet") as sub:
        assert await sub.get(0) is None
        assert await sub.get(0.01) is None
        assert await sub.get(-1) is None


async def test_many_subscribers_each_get_everything(realtime: Realtime) -> None:
    async with asyncio.TaskGroup() as group:
        subs = [realtime.subscribe(f"room:{i % 3}") for i in range(30)]
        for sub in subs:
            group.create_task(sub.__aenter__())
    try:
        for room in range(3):
            await realtime.publish(f"room:{room}", f"to {room}".encode())
        for i, sub in enumerate(subs):
            assert await take(sub, 1) == [f"to {i % 3}".encode()]
    finally:
        for sub in subs:
            await sub.close()
    assert realtime.subscriptions == 0


@pytest.mark.parametrize("name", ["", "a b", "tab\there", "new\nline", "x" * 201, " lead"])
async def test_bad_channel_names_are_refused(realtime: Realtime, name: str) -> None:
    with pytest.raises(ValueError, match="channel name"):
        realtime.subscribe(name)
    with pytest.raises(ValueError, match="channel name"):
        await realtime.publish(name, b"x")


async def test_long_and_odd_channel_names_work(realtime: Realtime) -> None:
    for name in ("x" * 200, "ünï:cødé/*?[]", "*"):
        async with realtime.subscribe(name) as sub:
            await realtime.publish(name, b"ok")
            assert await take(sub, 1) == [b"ok"]


async def test_messages_must_be_bytes(realtime: Realtime) -> None:
    with pytest.raises(ValueError, match="bytes"):
        await realtime.publish("c", "text")  # type: ignore[arg-type]


async def test_a_subscription_is_entered_once(realtime: Realtime) -> None:
    sub = realtime.subscribe("c")
    async with sub:
        with pytest.raises(RuntimeError, match="entered once"):
            await sub.__aenter__()
