"""Retention: old finished messages, their events and old inbox items go;
anything recent, anything still on its way and a digest's parts stay. On
SQLite here, and on every engine of the matrix in the last test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.event import listen as event_listen
from sqlalchemy.event import remove as event_remove

from sysdesign.platform.clock import ManualClock
from sysdesign.platform.context import Platform
from sysdesign.systems.notifications import retention
from sysdesign.systems.notifications.config import NotifyConfig
from sysdesign.systems.notifications.replay import Replay
from sysdesign.systems.notifications.retention import Retention
from sysdesign.systems.notifications.tables import events_table, inbox_items_table, messages_table
from tests.conftest import make_settings
from tests.systems.notifications.conftest import eventually

DAY_MS = 86_400_000


@pytest.fixture
async def db(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Platform]:
    """A platform on SQLite with the tables and no workers."""
    async with started(f"sqlite+aiosqlite:///{tmp_path}/app.db", tmp_path, clock) as platform:
        yield platform


class started:
    def __init__(self, url: str, tmp_path: Path, clock: ManualClock) -> None:
        settings = make_settings(tmp_path, database_url=url, auto_migrate=True,
                                 outbox_relay=False, queue_url="memory://")  # fmt: skip
        self.platform = Platform(settings, clock=clock)

    async def __aenter__(self) -> Platform:
        await self.platform.start()
        return self.platform

    async def __aexit__(self, *exc: object) -> None:
        await self.platform.close()


def config_for(tmp_path: Path, **values: Any) -> NotifyConfig:
    return NotifyConfig(email_url=f"file://{tmp_path}/email", sms_url=f"file://{tmp_path}/sms",
                        **values)  # fmt: skip


class Rows:
    """Rows written straight to the tables, aged on the clock: ``days`` ago."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.now_ms = int(platform.clock.time() * 1000)

    def ago(self, days: float) -> int:
        return self.now_ms - int(days * DAY_MS)

    async def event(self, days: float, *, done: bool = True) -> int:
        event_id = self.platform.ids.next_id()
        row = {
            "id": event_id, "caller": "test", "idempotency_key": None, "fingerprint": "f" * 64,
            "template": "t", "recipients": '{"user_ids": [1]}', "data": "{}",
            "priority": "normal", "send_at": None, "created_at": self.ago(days),
            "fanout_done": done,
        }  # fmt: skip
        await self._insert(events_table, [row])
        return event_id

    async def message(self, event_id: int, status: str, days: float, **extra: Any) -> int:
        [message_id] = await self.messages(event_id, status, days, 1, **extra)
        return message_id

    async def messages(
        self, event_id: int, status: str, days: float, count: int, **extra: Any
    ) -> list[int]:
        ids = [self.platform.ids.next_id() for _ in range(count)]
        at = self.ago(days)
        await self._insert(messages_table, [{
            "id": i, "event_id": event_id, "recipient_id": i, "channel": "in_app",
            "status": status, "priority": "normal", "attempts": 1, "due_at": at,
            "claimed_at": None, "reason": None, "last_error": None, "provider_id": None,
            "digest_key": None, "digest_of": None, "created_at": at, "updated_at": at, **extra,
        } for i in ids])  # fmt: skip
        return ids

    async def inbox_item(self, days: float) -> int:
        item_id = self.platform.ids.next_id()
        await self._insert(inbox_items_table, [{
            "id": item_id, "user_id": 1, "message_id": item_id, "title": None, "body": "hi",
            "data": "{}", "read_at": None, "archived_at": None, "created_at": self.ago(days),
        }])  # fmt: skip
        return item_id

    async def _insert(self, table: Any, rows: list[dict[str, Any]]) -> None:
        async with self.platform.db.primary.begin() as conn:
            await conn.execute(table.insert(), rows)


async def ids_of(platform: Platform, table: Any) -> set[int]:
    async with platform.db.primary.read() as conn:
        return set((await conn.execute(select(table.c.id))).scalars())


async def test_old_final_rows_go_and_recent_or_unfinished_ones_stay(
    db: Platform, tmp_path: Path
) -> None:
    rows = Rows(db)
    finished = await rows.event(40)  # every message finished long ago: all go, then it
    gone = [await rows.message(finished, status, 31) for status in
            ("sent", "delivered", "failed", "suppressed")]  # fmt: skip
    mixed = await rows.event(40)  # one message goes; those on their way stay, and the event
    gone.append(await rows.message(mixed, "delivered", 45))
    waiting = [await rows.message(mixed, status, 400) for status in
               ("scheduled", "queued", "sending")]  # fmt: skip
    recent = await rows.event(40)
    kept_recent = await rows.message(recent, "delivered", 29)  # updated within the 30 days
    empty_old = await rows.event(31)  # fanned out to no one, long ago: goes
    empty_new = await rows.event(29)
    fanning_out = await rows.event(40, done=False)
    old_item, new_item = await rows.inbox_item(91), await rows.inbox_item(89)

    job = Retention(db, config_for(tmp_path))
    assert await job.run_once() == {"messages": 5, "events": 2, "inbox_items": 1}
    assert await ids_of(db, messages_table) == {*waiting, kept_recent}
    events = await ids_of(db, events_table)
    assert events == {mixed, recent, empty_new, fanning_out}
    assert finished not in events and empty_old not in events
    assert not set(gone) & await ids_of(db, messages_table)
    assert await ids_of(db, inbox_items_table) == {new_item}
    assert old_item not in await ids_of(db, inbox_items_table)
    assert await job.run_once() == {"messages": 0, "events": 0, "inbox_items": 0}
    assert job.deleted == {"messages": 5, "events": 2, "inbox_items": 1}


async def test_age_is_measured_on_the_platform_clock(
    db: Platform, clock: ManualClock, tmp_path: Path
) -> None:
    rows = Rows(db)
    event = await rows.event(0)
    message = await rows.message(event, "delivered", 0)
    item = await rows.inbox_item(0)
    job = Retention(db, config_for(tmp_path, retention_days=2, inbox_retention_days=3))
    clock.advance(2 * 86400 - 1)
    assert await job.run_once() == {"messages": 0, "events": 0, "inbox_items": 0}
    clock.advance(2)
    assert await job.run_once() == {"messages": 1, "events": 1, "inbox_items": 0}
    clock.advance(86400)
    assert await job.run_once() == {"messages": 0, "events": 0, "inbox_items": 1}
    assert message not in await ids_of(db, messages_table)
    assert item not in await ids_of(db, inbox_items_table)


async def test_a_digest_keeps_its_parts_while_its_head_stays(db: Platform, tmp_path: Path) -> None:
    rows = Rows(db)
    event = await rows.event(40)
    waiting_head = await rows.message(event, "scheduled", 40, digest_key="k")
    waiting_parts = [await rows.message(event, "suppressed", 40, reason="digested",
                                        digest_key="k", digest_of=waiting_head)]  # fmt: skip
    recent_head = await rows.message(event, "failed", 1, digest_key="k2")  # may be replayed
    waiting_parts.append(await rows.message(event, "suppressed", 40, reason="digested",
                                            digest_key="k2", digest_of=recent_head))  # fmt: skip
    old_head = await rows.message(event, "delivered", 40, digest_key="k3")
    old_part = await rows.message(event, "suppressed", 40, reason="digested", digest_key="k3",
                                  digest_of=old_head)  # fmt: skip
    orphan = await rows.message(event, "suppressed", 40, reason="digested", digest_of=12345)

    job = Retention(db, config_for(tmp_path))
    assert (await job.run_once())["messages"] == 3
    left = await ids_of(db, messages_table)
    assert left == {waiting_head, recent_head, *waiting_parts}
    assert not {old_head, old_part, orphan} & left
    assert await ids_of(db, events_table) == {event}  # it still has messages


async def test_a_replayed_message_is_not_deleted(db: Platform, tmp_path: Path) -> None:
    rows = Rows(db)
    event = await rows.event(40)
    replayed, old = await rows.messages(event, "failed", 40, 2)
    await Replay(db).retry_message(replayed)  # queued again, just now
    assert await Retention(db, config_for(tmp_path)).run_once() == {
        "messages": 1, "events": 0, "inbox_items": 0,
    }  # fmt: skip
    assert await ids_of(db, messages_table) == {replayed}
    assert old not in await ids_of(db, messages_table)


async def test_rows_go_in_batches(
    db: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "BATCH", 100)
    statements: list[str] = []
    rows = Rows(db)
    event = await rows.event(40)
    await rows.messages(event, "delivered", 40, 250)
    kept = await rows.messages(event, "delivered", 1, 30)
    for _ in range(120):
        await rows.inbox_item(100)

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("DELETE FROM "):
            statements.append(statement.split()[2])

    engine = db.db.primary.engine.sync_engine
    event_listen(engine, "before_cursor_execute", record)
    job = Retention(db, config_for(tmp_path))
    try:
        assert await job.run_once() == {"messages": 250, "events": 0, "inbox_items": 120}
    finally:
        event_remove(engine, "before_cursor_execute", record)
    assert await ids_of(db, messages_table) == set(kept)
    # A transaction per batch of keys: 100, 100 and 50 messages; 100 and 20 items.
    assert statements == ["notifications_messages"] * 3 + ["notifications_inbox"] * 2


async def test_zero_days_keeps_everything(db: Platform, tmp_path: Path) -> None:
    rows = Rows(db)
    event = await rows.event(4000)
    message = await rows.message(event, "delivered", 4000)
    item = await rows.inbox_item(4000)
    job = Retention(db, config_for(tmp_path, retention_days=0, inbox_retention_days=0))
    assert not job.enabled
    assert await job.run_once() == {"messages": 0, "events": 0, "inbox_items": 0}
    job.start()  # nothing to do: no task
    assert not job._task.running
    await job.stop()
    assert await ids_of(db, messages_table) == {message}
    assert await ids_of(db, events_table) == {event}
    assert await ids_of(db, inbox_items_table) == {item}
    inbox_only = Retention(db, config_for(tmp_path, retention_days=0))
    assert await inbox_only.run_once() == {"messages": 0, "events": 0, "inbox_items": 1}


async def test_the_job_runs_periodically_and_survives_errors(
    db: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = Rows(db)
    job = Retention(db, config_for(tmp_path, retention_seconds=0.02))
    real_purge = job._purge
    failures = [RuntimeError("the database went away")]

    async def flaky(*args: Any) -> int:
        if failures:
            raise failures.pop()
        return await real_purge(*args)

    monkeypatch.setattr(job, "_purge", flaky)
    first = await rows.inbox_item(100)
    job.start()
    job.start()  # started once
    try:
        await eventually(lambda: _gone(db, first), timeout=10)
        assert not failures  # the first pass failed; a later one did the work
        second = await rows.inbox_item(100)
        await eventually(lambda: _gone(db, second), timeout=10)
        assert job._task.running
    finally:
        await job.stop()
    assert not job._task.running
    assert job.deleted["inbox_items"] == 2


async def _gone(platform: Platform, item_id: int) -> bool:
    return item_id not in await ids_of(platform, inbox_items_table)


async def test_retention_on_every_engine(
    database_url: str, tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The statements on PostgreSQL and MariaDB too: the digest subquery on the
    table being cleaned, the correlated NOT EXISTS in the events' DELETE,
    boolean comparisons and batches."""
    monkeypatch.setattr(retention, "BATCH", 50)
    async with started(database_url, tmp_path, clock) as platform:
        rows = Rows(platform)
        finished, kept_event = await rows.event(40), await rows.event(40)
        await rows.messages(finished, "delivered", 40, 120)
        await rows.messages(finished, "failed", 35, 10)
        head = await rows.message(kept_event, "scheduled", 40, digest_key="k")
        part = await rows.message(kept_event, "suppressed", 40, reason="digested",
                                  digest_key="k", digest_of=head)  # fmt: skip
        recent = await rows.message(kept_event, "sent", 2)
        empty = await rows.event(31)
        not_done = await rows.event(31, done=False)
        for days in (91, 91, 10):
            await rows.inbox_item(days)

        job = Retention(platform, config_for(tmp_path))
        assert await job.run_once() == {"messages": 130, "events": 2, "inbox_items": 2}
        assert await ids_of(platform, messages_table) == {head, part, recent}
        assert await ids_of(platform, events_table) == {kept_event, not_done}
        assert empty not in await ids_of(platform, events_table)
        assert len(await ids_of(platform, inbox_items_table)) == 1
        assert await job.run_once() == {"messages": 0, "events": 0, "inbox_items": 0}
