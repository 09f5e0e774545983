"""The transactional outbox: an event row written in the same transaction as the change.

A relay (the queue block's) later reads pending rows in id order, publishes
them and marks them published. A crash between publishing and marking gives
a duplicate publish, never a lost event; consumers deduplicate by event id.

Ids are taken before commit, so transactions that overlap can commit out of
id order: a relay must select every row not yet published, never "ids above
the last one I saw", and order is only promised between events whose
transactions did not overlap (one key's events, written one change at a time).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import BigInteger, Column, Index, LargeBinary, String, Table, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from sysdesign.platform.db import metadata

outbox_table = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("topic", String(255), nullable=False),
    Column("key", String(255), nullable=True),
    Column("payload", LargeBinary, nullable=False),
    Column("headers", LargeBinary, nullable=True),
    Column("created_at", BigInteger, nullable=False),  # epoch milliseconds
    Column("published_at", BigInteger, nullable=True),
    Index("ix_outbox_pending", "published_at", "id"),
    Index("ix_outbox_pending_topic", "published_at", "topic", "id"),
)


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    id: int
    topic: str
    key: str | None
    payload: Any
    headers: dict[str, str]
    created_at: int


async def add_event(
    conn: AsyncConnection,
    *,
    event_id: int,
    topic: str,
    payload: Any,
    created_at_ms: int,
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> int:
    """Insert one event in the caller's transaction; it commits or rolls back with it."""
    if not topic:
        raise ValueError("an outbox event needs a topic")
    await conn.execute(
        outbox_table.insert().values(
            id=event_id,
            topic=topic,
            key=key,
            payload=orjson.dumps(payload),
            headers=orjson.dumps(headers) if headers else None,
            created_at=created_at_ms,
        )
    )
    return event_id


async def add_events(
    conn: AsyncConnection,
    topic: str,
    events: Sequence[tuple[int, Any, str | None]],
    created_at_ms: int,
) -> None:
    """Insert many events of one topic (``(event_id, payload, key)`` each) in one
    executemany, in the caller's transaction."""
    if not topic:
        raise ValueError("an outbox event needs a topic")
    if events:
        rows = [
            {"id": event_id, "topic": topic, "key": key, "payload": orjson.dumps(payload),
             "headers": None, "created_at": created_at_ms}
            for event_id, payload, key in events
        ]  # fmt: skip
        await conn.execute(outbox_table.insert(), rows)


async def fetch_pending(
    conn: AsyncConnection,
    limit: int = 100,
    *,
    lock: bool = False,
    topics: Collection[str] | None = None,
) -> list[OutboxEvent]:
    """Unpublished events, lowest id (earliest created) first; of ``topics``
    only when given.

    ``lock`` locks the rows for the caller's transaction and skips rows
    another transaction has locked (``FOR UPDATE SKIP LOCKED`` where the
    engine has it; SQLite's write transaction is exclusive already), so
    several relays share the work instead of publishing the same rows.
    """
    o = outbox_table
    query = select(o).where(o.c.published_at.is_(None))
    if topics is not None:
        query = query.where(o.c.topic.in_(list(topics)))
    query = query.order_by(o.c.id).limit(limit)
    if lock:
        query = query.with_for_update(skip_locked=True)
    rows = await conn.execute(query)
    return [
        OutboxEvent(
            id=row.id,
            topic=row.topic,
            key=row.key,
            payload=orjson.loads(row.payload),
            headers=orjson.loads(row.headers) if row.headers else {},
            created_at=row.created_at,
        )
        for row in rows
    ]


async def mark_published(conn: AsyncConnection, event_ids: list[int], now_ms: int) -> int:
    if not event_ids:
        return 0
    result = await conn.execute(
        update(outbox_table)
        .where(outbox_table.c.id.in_(event_ids), outbox_table.c.published_at.is_(None))
        .values(published_at=now_ms)
    )
    return result.rowcount or 0
