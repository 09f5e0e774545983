"""The outbox relay inside a running platform: events committed with a change reach
subscribers; events rolled back with theirs never do."""

from __future__ import annotations

from pathlib import Path

import pytest

from sysdesign.blocks.queue import EVENT_ID_HEADER, Message
from sysdesign.platform.clock import ManualClock
from sysdesign.platform.context import Platform
from tests.blocks.queue.test_contract import until
from tests.conftest import make_settings


async def test_committed_events_reach_subscribers_and_rolled_back_ones_never(
    tmp_path: Path, clock: ManualClock
) -> None:
    shards = ",".join(f"sqlite+aiosqlite:///{tmp_path}/shard{i}.db" for i in range(2))
    platform = Platform(make_settings(tmp_path, database_url=shards), clock=clock)
    await platform.start()
    try:
        seen: list[Message] = []

        async def handle(message: Message) -> None:
            seen.append(message)

        emitted: list[int] = []
        for customer in range(10):
            async with platform.unit_of_work(customer) as uow:
                emitted.append(await uow.emit("orders", {"customer": customer}, key=str(customer)))
        with pytest.raises(RuntimeError):
            async with platform.unit_of_work(99) as uow:
                await uow.emit("orders", {"customer": 99})
                raise RuntimeError("the change failed")

        async with platform.queue.subscribe("orders", "audit", handle, poll_wait=0.1):
            await until(lambda: len(seen) == 10)
        assert sorted(m.json()["customer"] for m in seen) == list(range(10))
        assert sorted(int(m.headers[EVENT_ID_HEADER]) for m in seen) == sorted(emitted)
        assert {m.key for m in seen} == {str(c) for c in range(10)}
        assert platform.relay.published == 10
        assert await platform.relay.run_once() == 0  # every row was marked
        assert {str(platform.db.index_for(c)) for c in range(10)} == {"0", "1"}
    finally:
        await platform.close()


async def test_the_relay_can_be_switched_off(tmp_path: Path, clock: ManualClock) -> None:
    platform = Platform(make_settings(tmp_path, outbox_relay=False), clock=clock)
    await platform.start()
    try:
        async with platform.unit_of_work() as uow:
            await uow.emit("orders", {"n": 1})
        assert "relay" not in platform.__dict__
        assert "queue" not in await platform.readiness()
    finally:
        await platform.close()


async def test_an_expedited_topic_goes_ahead_of_a_backlog(
    tmp_path: Path, clock: ManualClock
) -> None:
    platform = Platform(make_settings(tmp_path), clock=clock)
    await platform.start()
    try:
        relay = platform.relay
        await relay.stop()  # passes run one at a time here
        relay.expedite("codes")
        async with platform.unit_of_work() as uow:
            await uow.emit_many("bulk", [({"n": n}, str(n)) for n in range(relay.batch_size * 3)])
        async with platform.unit_of_work() as uow:
            await uow.emit("codes", {"code": "424242"}, key="ana")
        db = platform.db.shards[0]
        # The first pass publishes the code, although it is the newest event of all.
        assert await relay.relay_shard(db) == 1 + relay.batch_size
        assert await platform.queue.backend.message_count("codes") == 1
        assert await platform.queue.backend.message_count("bulk") == relay.batch_size
        # The rest of the backlog follows.
        await relay.run_once()
        assert await platform.queue.backend.message_count("bulk") == relay.batch_size * 3
        seen: list[int] = []

        async def handle(message: Message) -> None:
            seen.append(message.json()["n"])

        async with platform.queue.subscribe("bulk", "audit", handle, poll_wait=0.1):
            await until(lambda: len(seen) == relay.batch_size * 3)
        assert sorted(seen) == list(range(relay.batch_size * 3))  # each once
    finally:
        await platform.close()
