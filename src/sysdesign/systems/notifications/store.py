"""Queries on templates, subscribers, topics, preferences and events.

Every function takes the caller's connection, so a use case composes them in
one transaction. Messages and the inbox are ``messages.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import time
from typing import Any

import orjson
from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.expression import Insert

from sysdesign.blocks.notify.base import Channel, Priority
from sysdesign.blocks.notify.prefs import Preferences, QuietHours, parse_quiet_hours
from sysdesign.systems.notifications.domain import Event, Recipients, Subscriber, Template
from sysdesign.systems.notifications.tables import (
    events_table,
    preferences_table,
    subscribers_table,
    templates_table,
    topic_subscriptions_table,
    topics_table,
)


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def insert_ignoring_duplicates(conn: AsyncConnection, table: Any) -> Insert:
    """An INSERT that skips rows whose unique key exists already."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect in ("mysql", "mariadb"):
        # Not INSERT IGNORE: that also turns errors such as a value too long into
        # warnings and stores the row cut short. Setting a key column to itself
        # skips only the duplicate.
        key = next(iter(table.primary_key.columns))
        return mysql.insert(table).on_duplicate_key_update({key.name: key})
    return sqlite.insert(table).on_conflict_do_nothing()


# --- templates ------------------------------------------------------------------------


def _template(row: Row[Any]) -> Template:
    channels = {Channel(c): locales for c, locales in orjson.loads(row.channels).items()}
    return Template(
        key=row.key,
        category=row.category,
        critical=bool(row.critical),
        priority=Priority(row.priority),
        channels=channels,
        digest_window_seconds=row.digest_window_seconds,
        digest_group_field=row.digest_group_field,
        throttle=row.throttle,
        created_at_ms=row.created_at,
        updated_at_ms=row.updated_at,
    )


async def get_template(conn: AsyncConnection, key: str) -> Template | None:
    row = (await conn.execute(select(templates_table).where(templates_table.c.key == key))).first()
    return _template(row) if row else None


async def get_templates(conn: AsyncConnection, keys: Iterable[str]) -> dict[str, Template]:
    wanted = list(set(keys))
    if not wanted:
        return {}
    rows = await conn.execute(select(templates_table).where(templates_table.c.key.in_(wanted)))
    return {row.key: _template(row) for row in rows}


async def list_templates(conn: AsyncConnection, after: str | None, limit: int) -> list[Template]:
    t = templates_table
    query = select(t).order_by(t.c.key).limit(limit)
    if after is not None:
        query = query.where(t.c.key > after)
    return [_template(r) for r in await conn.execute(query)]


async def put_template(conn: AsyncConnection, template: Template, now_ms: int) -> Template:
    """Create or replace; the creation time of a replaced template is kept."""
    t = templates_table
    values = {
        "category": template.category,
        "critical": template.critical,
        "priority": template.priority.value,
        "digest_window_seconds": template.digest_window_seconds,
        "digest_group_field": template.digest_group_field,
        "throttle": template.throttle,
        "channels": dumps({c.value: v for c, v in template.channels.items()}),
        "updated_at": now_ms,
    }
    changed = await conn.execute(update(t).where(t.c.key == template.key).values(**values))
    if not changed.rowcount:
        await conn.execute(t.insert().values(key=template.key, created_at=now_ms, **values))
    found = await get_template(conn, template.key)
    assert found is not None
    return found


async def delete_template(conn: AsyncConnection, key: str) -> bool:
    result = await conn.execute(delete(templates_table).where(templates_table.c.key == key))
    return bool(result.rowcount)


# --- subscribers and preferences -------------------------------------------------------


def _subscriber(row: Row[Any]) -> Subscriber:
    return Subscriber(
        user_id=row.user_id,
        email=row.email,
        phone=row.phone,
        webhook_url=row.webhook_url,
        webhook_secret=row.webhook_secret,
        locale=row.locale,
        timezone=row.timezone,
    )


async def get_subscriber(conn: AsyncConnection, user_id: int) -> Subscriber | None:
    s = subscribers_table
    row = (await conn.execute(select(s).where(s.c.user_id == user_id))).first()
    return _subscriber(row) if row else None


async def get_subscribers(conn: AsyncConnection, user_ids: Sequence[int]) -> dict[int, Subscriber]:
    if not user_ids:
        return {}
    s = subscribers_table
    rows = await conn.execute(select(s).where(s.c.user_id.in_(list(user_ids))))
    return {row.user_id: _subscriber(row) for row in rows}


async def put_subscriber(conn: AsyncConnection, sub: Subscriber, now_ms: int) -> None:
    s = subscribers_table
    values = {
        "email": sub.email,
        "phone": sub.phone,
        "webhook_url": sub.webhook_url,
        "webhook_secret": sub.webhook_secret,
        "locale": sub.locale,
        "timezone": sub.timezone,
        "updated_at": now_ms,
    }
    changed = await conn.execute(update(s).where(s.c.user_id == sub.user_id).values(**values))
    if not changed.rowcount:
        await conn.execute(s.insert().values(user_id=sub.user_id, created_at=now_ms, **values))


async def get_preferences(conn: AsyncConnection, user_id: int) -> Preferences:
    return (await get_preferences_of(conn, [user_id])).get(user_id, Preferences())


async def get_preferences_of(
    conn: AsyncConnection, user_ids: Sequence[int]
) -> dict[int, Preferences]:
    """The preferences of those of ``user_ids`` who set any."""
    if not user_ids:
        return {}
    p = preferences_table
    rows = await conn.execute(select(p).where(p.c.user_id.in_(list(set(user_ids)))))
    return {row.user_id: _preferences(row) for row in rows}


def _preferences(row: Row[Any]) -> Preferences:
    disabled = frozenset((c, Channel(ch)) for c, ch in orjson.loads(row.disabled))
    quiet = None
    if row.quiet_start and row.quiet_end and row.quiet_timezone:
        quiet = parse_quiet_hours(row.quiet_start, row.quiet_end, row.quiet_timezone)
    return Preferences(disabled=disabled, quiet_hours=quiet)


def _hhmm(value: time) -> str:
    return f"{value.hour:02d}:{value.minute:02d}"


async def put_preferences(
    conn: AsyncConnection, user_id: int, prefs: Preferences, now_ms: int
) -> None:
    p = preferences_table
    quiet: QuietHours | None = prefs.quiet_hours
    values = {
        "disabled": dumps(sorted([c, ch.value] for c, ch in prefs.disabled)),
        "quiet_start": _hhmm(quiet.start) if quiet else None,
        "quiet_end": _hhmm(quiet.end) if quiet else None,
        "quiet_timezone": quiet.timezone if quiet else None,
        "updated_at": now_ms,
    }
    changed = await conn.execute(update(p).where(p.c.user_id == user_id).values(**values))
    if not changed.rowcount:
        await conn.execute(p.insert().values(user_id=user_id, **values))


# --- topics ---------------------------------------------------------------------------


async def get_topic(conn: AsyncConnection, key: str) -> Row[Any] | None:
    return (await conn.execute(select(topics_table).where(topics_table.c.key == key))).first()


async def put_topic(
    conn: AsyncConnection, topic_id: int, key: str, name: str, now_ms: int
) -> Row[Any]:
    t = topics_table
    changed = await conn.execute(update(t).where(t.c.key == key).values(name=name))
    if not changed.rowcount:
        await conn.execute(t.insert().values(id=topic_id, key=key, name=name, created_at=now_ms))
    row = await get_topic(conn, key)
    assert row is not None
    return row


async def subscriber_count(conn: AsyncConnection, topic_id: int) -> int:
    ts = topic_subscriptions_table
    query = select(func.count()).select_from(ts).where(ts.c.topic_id == topic_id)
    return int((await conn.execute(query)).scalar_one())


async def subscribe(
    conn: AsyncConnection, topic_id: int, user_ids: Iterable[int], now_ms: int
) -> int:
    """Add subscribers, ignoring those already there; how many were new."""
    ts = topic_subscriptions_table
    wanted = list(set(user_ids))
    added = 0
    for start in range(0, len(wanted), 1000):
        chunk = wanted[start : start + 1000]
        existing = await conn.execute(
            select(func.count())
            .select_from(ts)
            .where(and_(ts.c.topic_id == topic_id, ts.c.user_id.in_(chunk)))
        )
        rows = [{"topic_id": topic_id, "user_id": u, "created_at": now_ms} for u in chunk]
        await conn.execute(insert_ignoring_duplicates(conn, ts), rows)
        added += len(chunk) - int(existing.scalar_one())
    return added


async def unsubscribe(conn: AsyncConnection, topic_id: int, user_id: int) -> bool:
    ts = topic_subscriptions_table
    result = await conn.execute(
        delete(ts).where(and_(ts.c.topic_id == topic_id, ts.c.user_id == user_id))
    )
    return bool(result.rowcount)


async def topic_page(
    conn: AsyncConnection, topic_id: int, after: int | None, limit: int
) -> list[int]:
    """Subscribers of a topic after ``after``, in user id order (keyset paging)."""
    ts = topic_subscriptions_table
    query = select(ts.c.user_id).where(ts.c.topic_id == topic_id)
    if after is not None:
        query = query.where(ts.c.user_id > after)
    rows = await conn.execute(query.order_by(ts.c.user_id).limit(limit))
    return [r.user_id for r in rows]


# --- events ---------------------------------------------------------------------------


def _event(row: Row[Any]) -> Event:
    return Event(
        id=row.id,
        caller=row.caller,
        template=row.template,
        recipients=Recipients.from_json(orjson.loads(row.recipients)),
        data=orjson.loads(row.data),
        priority=Priority(row.priority),
        send_at_ms=row.send_at,
        created_at_ms=row.created_at,
        idempotency_key=row.idempotency_key,
        fanout_done=bool(row.fanout_done),
    )


async def get_event(conn: AsyncConnection, event_id: int) -> Event | None:
    row = (await conn.execute(select(events_table).where(events_table.c.id == event_id))).first()
    return _event(row) if row else None


async def get_events(conn: AsyncConnection, ids: Iterable[int]) -> dict[int, Event]:
    wanted = list(set(ids))
    if not wanted:
        return {}
    rows = await conn.execute(select(events_table).where(events_table.c.id.in_(wanted)))
    return {row.id: _event(row) for row in rows}


async def find_event_by_key(
    conn: AsyncConnection, caller: str, key: str
) -> tuple[Event, str] | None:
    """The caller's event made with idempotency key ``key``, with its fingerprint."""
    e = events_table
    row = (
        await conn.execute(select(e).where(and_(e.c.caller == caller, e.c.idempotency_key == key)))
    ).first()
    return (_event(row), row.fingerprint) if row else None


async def insert_event(conn: AsyncConnection, event: Event, fingerprint: str) -> None:
    await conn.execute(
        events_table.insert().values(
            id=event.id,
            caller=event.caller,
            idempotency_key=event.idempotency_key,
            fingerprint=fingerprint,
            template=event.template,
            recipients=dumps(event.recipients.as_json()),
            data=dumps(event.data),
            priority=event.priority.value,
            send_at=event.send_at_ms,
            created_at=event.created_at_ms,
            fanout_done=False,
        )
    )


async def mark_fanout_done(conn: AsyncConnection, event_id: int) -> None:
    await conn.execute(
        update(events_table).where(events_table.c.id == event_id).values(fanout_done=True)
    )
