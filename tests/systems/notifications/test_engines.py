"""What the notification system's guarantees rest on, on every database engine:
insert-ignore upserts, conditional UPDATE claims, ``FOR UPDATE SKIP LOCKED``
releases, unique keys and MEDIUMTEXT columns. The workers run for real on a
memory queue with the outbox relay, and a second consumer group with its own
handlers makes the queue deliver every fan-out and delivery message twice."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from sysdesign.blocks.notify.base import Channel, Priority, Status
from sysdesign.blocks.queue import Subscription
from sysdesign.blocks.queue.base import EVENT_ID_HEADER
from sysdesign.platform.clock import ManualClock
from sysdesign.platform.context import Platform
from sysdesign.platform.outbox import outbox_table
from sysdesign.systems.notifications import fanout, messages, workers
from sysdesign.systems.notifications.config import NotifyConfig
from sysdesign.systems.notifications.delivery import Delivery
from sysdesign.systems.notifications.domain import (
    Recipients,
    Subscriber,
    Template,
    deliver_topic,
    fanout_topic,
)
from sysdesign.systems.notifications.inbox import Inbox
from sysdesign.systems.notifications.scheduler import BATCH, Scheduler
from sysdesign.systems.notifications.service import IdempotencyKeyReused, NotificationService
from sysdesign.systems.notifications.tables import events_table, inbox_items_table, messages_table
from tests.conftest import make_settings
from tests.systems.notifications.conftest import eventually

TOPICS = [fanout_topic(p) for p in Priority] + [deliver_topic(p) for p in Priority]


@pytest.fixture
async def engine(database_url: str, tmp_path: Path, clock: ManualClock) -> AsyncIterator[Platform]:
    settings = make_settings(
        tmp_path, database_url=database_url, auto_migrate=True, outbox_relay=True,
        queue_url="memory://",
    )  # fmt: skip
    platform = Platform(settings, clock=clock)
    await platform.start()
    yield platform
    await platform.close()


def config_for(tmp_path: Path) -> NotifyConfig:
    return NotifyConfig(
        email_url=f"file://{tmp_path}/outbox/email", sms_url=f"file://{tmp_path}/outbox/sms.jsonl",
        scheduler_seconds=0.02, sweep_seconds=3600, backoff_seconds=10, max_attempts=3,
    )  # fmt: skip


async def start_doubled(
    platform: Platform, config: NotifyConfig
) -> tuple[workers.Workers, Delivery, list[Subscription]]:
    """The real workers, and a shadow group per topic with handlers of its own:
    every message reaches two consumers, as a redelivery race would."""
    senders = workers.build_senders(config, platform.clock)
    running = await workers.start(platform, config, senders)
    shadow_fanout = fanout.FanOut(platform, running.scheduler)
    shadow_delivery = Delivery(platform, config, senders, running.scheduler)
    shadows: list[Subscription] = []
    for priority in Priority:
        for topic, handler in ((fanout_topic(priority), shadow_fanout),
                               (deliver_topic(priority), shadow_delivery)):  # fmt: skip
            subscribe = (platform.queue.subscribe_batch if handler is shadow_delivery
                         else platform.queue.subscribe)  # fmt: skip
            sub = subscribe(topic, "shadow", handler, concurrency=4, poll_wait=0.05)
            await sub.start()
            shadows.append(sub)
    return running, shadow_delivery, shadows


async def idle(platform: Platform) -> bool:
    """Every outbox event published and every group of every topic caught up."""
    async with platform.db.primary.read() as conn:
        query = select(func.count()).select_from(outbox_table)
        pending = (await conn.execute(query.where(outbox_table.c.published_at.is_(None)))).scalar()
    if pending:
        return False
    for topic in TOPICS:
        if any(lag.total for lag in await platform.queue.lag(topic)):
            return False
    return True


def inbox_template(key: str, body: str = "{{ name }} waved", **extra: Any) -> Template:
    return Template(
        key=key, category="social", critical=False, priority=Priority.NORMAL,
        channels={Channel.IN_APP: {"en": {"subject": "Hi", "body": body}}}, **extra,
    )  # fmt: skip


async def count(platform: Platform, query: Any) -> int:
    async with platform.db.primary.read() as conn:
        return int((await conn.execute(query)).scalar_one())


async def test_a_topic_fans_out_once_per_recipient_and_channel_when_messages_come_twice(
    engine: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fanout, "FANOUT_PAGE", 100)  # three fan-out steps, each delivered twice
    users = list(range(1001, 1251))
    emailed = users[::25]
    service = NotificationService(engine)
    await service.put_template(Template(
        key="news", category="news", critical=False, priority=Priority.NORMAL,
        channels={Channel.IN_APP: {"en": {"body": "news for {{ name }}"}},
                  Channel.EMAIL: {"en": {"subject": "News", "body": "news for {{ name }}"}}},
    ))  # fmt: skip
    await service.put_topic("everyone", "Everyone")
    assert await service.subscribe("everyone", users) == len(users)
    assert await service.subscribe("everyone", users[:10]) == 0  # insert-ignore: no new rows
    for user in emailed:
        await service.put_subscriber(Subscriber(user, email=f"u{user}@example.com"))
    config = config_for(tmp_path)
    running, shadow_delivery, shadows = await start_doubled(engine, config)
    try:
        event, created = await service.trigger("test", "news", Recipients(topic="everyone"),
                                               {"name": "you"})  # fmt: skip
        assert created
        # The first step again under another event id: not deduplicated by the consumers'
        # inbox, so the fan-out itself (and the unique key) must keep it from doubling.
        await engine.queue.publish(fanout_topic(Priority.NORMAL),
                                   {"event_id": event.id, "after": None},
                                   headers={EVENT_ID_HEADER: "republished"})  # fmt: skip
        m = messages_table
        finished = select(func.count()).select_from(m).where(
            m.c.event_id == event.id, m.c.status.not_in([Status.QUEUED.value, "sending"])
        )  # fmt: skip

        async def settled() -> bool:
            return await count(engine, finished) == 2 * len(users) and await idle(engine)

        await eventually(settled, timeout=30, interval=0.05)
    finally:
        for sub in shadows:
            await sub.stop()
        await running.stop()

    async with engine.db.primary.read() as conn:
        rows = (await conn.execute(
            select(m.c.recipient_id, m.c.channel, m.c.status, m.c.reason)
            .where(m.c.event_id == event.id)
        )).all()  # fmt: skip
        inbox = (await conn.execute(select(inbox_items_table))).all()
    per_key = Counter((r.recipient_id, r.channel) for r in rows)
    assert len(per_key) == 2 * len(users) and set(per_key.values()) == {1}
    statuses = Counter((r.channel, r.status, r.reason) for r in rows)
    assert statuses == {
        ("in_app", "delivered", None): len(users),
        ("email", "sent", None): len(emailed),
        ("email", "suppressed", "no address"): len(users) - len(emailed),
    }
    assert sorted(r.user_id for r in inbox) == users  # one inbox item each
    assert len({r.message_id for r in inbox}) == len(users)
    assert len(list((tmp_path / "outbox" / "email").iterdir())) == len(emailed)
    for topic in TOPICS:  # no handler gave up on a message
        assert await engine.queue.dead_letter_depth(topic) == 0, topic
    # Each queued message was claimed once, by one of the two consumers given it.
    assert running.delivery.handled + shadow_delivery.handled == len(users) + len(emailed)


async def test_two_concurrent_claims_of_one_message_have_one_winner(
    engine: Platform, clock: ManualClock
) -> None:
    now_ms = int(clock.time() * 1000)
    ids = [engine.ids.next_id() for _ in range(40)]
    async with engine.db.primary.begin() as conn:
        await messages.insert_messages(
            conn, [_message(i, Status.QUEUED.value, now_ms) for i in ids]
        )

    async def claim(message_ids: list[int]) -> set[int]:
        async with engine.db.primary.begin() as conn:
            got = await messages.claim(conn, message_ids, now_ms, engine.ids.next_id())
        return {msg.id for msg in got}

    for message_id in ids[:10]:  # one message, two claims
        results = await asyncio.gather(claim([message_id]), claim([message_id]))
        assert sorted(map(len, results)) == [0, 1]
    # Overlapping batches in different orders: each message claimed once.
    rest = ids[10:]
    batches = [random.Random(n).sample(rest, len(rest) // 2) for n in range(3)] + [rest[::-1]]
    results = await asyncio.gather(*(claim(b) for b in batches))
    assert sum(map(len, results)) == len(set().union(*results))
    assert set().union(*results) == set().union(*map(set, batches))
    m = messages_table
    claimed = select(func.count()).select_from(m).where(m.c.status == "sending", m.c.attempts == 1)
    assert await count(engine, claimed) == len(ids)


async def test_two_schedulers_release_each_due_message_once(
    engine: Platform, clock: ManualClock, tmp_path: Path
) -> None:
    now_ms = int(clock.time() * 1000)
    due = [engine.ids.next_id() for _ in range(BATCH * 2 + 50)]  # several batches each
    later = engine.ids.next_id()
    rows = [_message(i, Status.SCHEDULED.value, now_ms - 1000) for i in due]
    rows.append(_message(later, Status.SCHEDULED.value, now_ms + 60_000))
    async with engine.db.primary.begin() as conn:
        await messages.insert_messages(conn, rows)
    config = config_for(tmp_path)
    schedulers = [Scheduler(engine, config), Scheduler(engine, config)]
    await asyncio.gather(*(s.run_once() for s in schedulers))
    assert sum(s.released for s in schedulers) == len(due)

    m = messages_table
    async with engine.db.primary.read() as conn:
        statuses = dict((await conn.execute(select(m.c.id, m.c.status))).all())
        emitted = (await conn.execute(
            select(outbox_table.c.payload)
            .where(outbox_table.c.topic == deliver_topic(Priority.NORMAL))
        )).scalars().all()  # fmt: skip
    assert statuses.pop(later) == Status.SCHEDULED.value
    assert set(statuses.values()) == {Status.QUEUED.value}
    released = Counter(int(orjson.loads(p)["message_id"]) for p in emitted)
    assert set(released) == set(due) and set(released.values()) == {1}


async def test_an_idempotency_key_makes_one_event(engine: Platform) -> None:
    service = NotificationService(engine)
    await service.put_template(inbox_template("hello"))
    to = Recipients(user_ids=(1, 2))

    async def trigger(key: str, name: str = "Ana") -> tuple[Any, bool]:
        return await service.trigger("caller", "hello", to, {"name": name}, idempotency_key=key)

    results = await asyncio.gather(*(trigger("k-1") for _ in range(4)))
    assert [created for _, created in results].count(True) == 1
    assert len({event.id for event, _ in results}) == 1
    again, created = await trigger("k-1")
    assert not created and again.id == results[0][0].id
    with pytest.raises(IdempotencyKeyReused):
        await trigger("k-1", name="Bo")
    # Keys are compared exactly: keys that differ by case are two keys on every engine.
    other, created = await trigger("K-1", name="Bo")
    assert created and other.id != again.id
    # Another caller's key is its own.
    _, created = await service.trigger("other", "hello", to, {"name": "Ana"}, idempotency_key="k-1")
    assert created
    e = events_table
    assert await count(engine, select(func.count()).select_from(e)) == 3


async def test_the_inbox_counts_unread_and_reads_all(engine: Platform, tmp_path: Path) -> None:
    service = NotificationService(engine)
    await service.put_template(inbox_template("hello"))
    # A body above 64 KiB: TEXT on MySQL/MariaDB would cut it (or refuse it).
    await service.put_template(inbox_template("long", body="{{ text }}{{ text }}"))
    config = config_for(tmp_path)
    running = await workers.start(engine, config, workers.build_senders(config, engine.clock))
    try:
        for name in ("Ana", "Ben", "Cy"):
            await service.trigger("test", "hello", Recipients(user_ids=(7, 8)), {"name": name})
        text = "é" * 20_000  # 40 KB of UTF-8 per copy
        await service.trigger("test", "long", Recipients(user_ids=(7,)), {"text": text})
        inbox = Inbox(engine)

        async def arrived() -> bool:
            return await inbox.unread_count(7) == 4 and await inbox.unread_count(8) == 3

        await eventually(arrived, timeout=15)
    finally:
        await running.stop()
    items = await inbox.list(7, before_id=None, limit=10, unread=None, archived=False)
    bodies = sorted(i["body"] for i in items)
    assert bodies == ["Ana waved", "Ben waved", "Cy waved", text * 2]  # the long one whole
    assert (await inbox.read(7, items[0]["id"]))["read_at_ms"] is not None
    await inbox.archive(7, items[1]["id"])
    assert await inbox.unread_count(7) == 2
    assert await inbox.read_all(7) == 2
    assert await inbox.unread_count(7) == 0
    assert await inbox.read_all(7) == 0  # nothing left: no row changes
    assert await inbox.unread_count(8) == 3  # another user's inbox is untouched
    unread = await inbox.list(8, before_id=None, limit=10, unread=True, archived=False)
    assert len(unread) == 3


def _message(message_id: int, status: str, due_ms: int) -> dict[str, Any]:
    return {
        "id": message_id, "event_id": 1, "recipient_id": message_id, "channel": "in_app",
        "status": status, "priority": Priority.NORMAL.value, "attempts": 0, "due_at": due_ms,
        "claimed_at": None, "reason": None, "last_error": None, "provider_id": None,
        "digest_key": None, "digest_of": None, "created_at": due_ms, "updated_at": due_ms,
    }  # fmt: skip
