"""Queries on messages (one recipient, one channel) and the in-app inbox.

A message's ``status`` moves ``queued -> sending -> sent | delivered | failed
| suppressed``, or ``-> scheduled -> queued`` when it waits (``send_at``,
quiet hours, a digest window, a retry's backoff). Every move is a conditional
UPDATE on the status it leaves, so two workers, or two scheduler processes,
never both move one message: the second one's UPDATE matches no row.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import and_, bindparam, func, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from sysdesign.blocks.notify.base import Channel, Priority, Status
from sysdesign.systems.notifications.domain import SENDING, Message, deliver_topic
from sysdesign.systems.notifications.store import insert_ignoring_duplicates
from sysdesign.systems.notifications.tables import inbox_items_table, messages_table

if TYPE_CHECKING:
    from sysdesign.platform.uow import UnitOfWork

m = messages_table
SCHEDULED = Status.SCHEDULED.value
QUEUED = Status.QUEUED.value
DELIVERED = Status.DELIVERED.value
FAILED = Status.FAILED.value


def _message(row: Row[Any]) -> Message:
    return Message(
        id=row.id,
        event_id=row.event_id,
        recipient_id=row.recipient_id,
        channel=Channel(row.channel),
        status=row.status,
        priority=Priority(row.priority),
        attempts=row.attempts,
        due_at_ms=row.due_at,
        reason=row.reason,
        last_error=row.last_error,
        provider_id=row.provider_id,
        digest_key=row.digest_key,
        digest_of=row.digest_of,
        claim=row.claim,
        created_at_ms=row.created_at,
        updated_at_ms=row.updated_at,
    )


async def insert_messages(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await conn.execute(m.insert(), list(rows))


async def existing_recipients(
    conn: AsyncConnection, event_id: int, recipient_ids: Sequence[int]
) -> set[int]:
    if not recipient_ids:
        return set()
    query = select(m.c.recipient_id).where(
        and_(m.c.event_id == event_id, m.c.recipient_id.in_(list(recipient_ids)))
    )
    return {r.recipient_id for r in await conn.execute(query)}


async def get_message(conn: AsyncConnection, message_id: int) -> Message | None:
    row = (await conn.execute(select(m).where(m.c.id == message_id))).first()
    return _message(row) if row else None


async def claim(
    conn: AsyncConnection, message_ids: Sequence[int], now_ms: int, token: int
) -> list[Message]:
    """``queued -> sending`` under the claim ``token`` (unique to this call),
    counting an attempt; the messages this claim got, in the order asked.
    One that another worker has, or that was handled already (a duplicate
    delivery of its queue message), is not among them."""
    ids = list(dict.fromkeys(message_ids))
    if not ids:
        return []
    await conn.execute(
        update(m)
        .where(and_(m.c.id.in_(ids), m.c.status == QUEUED))
        .values(
            status=SENDING,
            claimed_at=now_ms,
            attempts=m.c.attempts + 1,
            claim=token,
            updated_at=now_ms,
        )
    )
    query = select(m).where(and_(m.c.id.in_(ids), m.c.status == SENDING, m.c.claim == token))
    found = {r.id: _message(r) for r in await conn.execute(query)}
    return [found[i] for i in ids if i in found]


def _held(message: Message) -> Any:
    return and_(m.c.id == message.id, m.c.status == SENDING, m.c.claim == message.claim)


async def finish(conn: AsyncConnection, message: Message, now_ms: int, **values: Any) -> bool:
    """Leave ``sending`` with ``values``, only if this claim still holds the
    message: a worker too slow for the visibility timeout, whose message was
    handed to another, changes nothing."""
    result = await conn.execute(update(m).where(_held(message)).values(updated_at=now_ms, **values))
    return result.rowcount == 1


# Every finish of ``finish_many`` sets these, from the message where not given.
_FINISHED = ("status", "reason", "last_error", "provider_id", "due_at", "attempts")


async def finish_many(
    conn: AsyncConnection, finishes: Sequence[tuple[Message, dict[str, Any]]], now_ms: int
) -> None:
    """``finish`` for many messages in one statement (executed once per row by
    the driver): each leaves ``sending`` with its values if its claim holds."""
    if not finishes:
        return
    rows = []
    for message, values in finishes:
        current = {"status": message.status, "reason": message.reason,
                   "last_error": message.last_error, "provider_id": message.provider_id,
                   "due_at": message.due_at_ms, "attempts": message.attempts}  # fmt: skip
        unknown = set(values) - set(_FINISHED)
        if unknown:
            raise ValueError(f"finish_many cannot set {sorted(unknown)}")
        row = {f"v_{k}": values.get(k, current[k]) for k in _FINISHED}
        rows.append({**row, "w_id": message.id, "w_claim": message.claim})
    statement = (
        update(m)
        .where(
            and_(
                m.c.id == bindparam("w_id"),
                m.c.status == SENDING,
                m.c.claim == bindparam("w_claim"),
            )
        )
        .values(updated_at=now_ms, **{k: bindparam(f"v_{k}") for k in _FINISHED})
    )
    await conn.execute(statement, rows)


def _claimed_by(held: Sequence[Message]) -> Any:
    """Those of ``held`` still under their claim's token, whatever their status."""
    ids = [msg.id for msg in held]
    tokens = list({msg.claim for msg in held})
    # Tokens are unique per claim, and a message is in one claim of this
    # worker's, so matching any of the batch's tokens is matching its own.
    return and_(m.c.id.in_(ids), m.c.claim.in_(tokens))


async def fail_held(
    conn: AsyncConnection, failures: Sequence[tuple[Message, str]], now_ms: int
) -> set[int]:
    """Mark ``failed``, with its ``last_error``, every message whose claim still
    holds; the ids of those that this call failed."""
    if not failures:
        return set()
    await finish_many(
        conn, [(msg, {"status": FAILED, "last_error": error}) for msg, error in failures], now_ms
    )
    query = select(m.c.id).where(and_(_claimed_by([msg for msg, _ in failures]),
                                      m.c.status == FAILED))  # fmt: skip
    return {r.id for r in await conn.execute(query)}


async def deliver_held(conn: AsyncConnection, held: Sequence[Message], now_ms: int) -> list[int]:
    """Mark ``delivered`` every message whose claim still holds; their ids."""
    if not held:
        return []
    where = _claimed_by(held)
    await conn.execute(
        update(m).where(and_(where, m.c.status == SENDING))
        .values(status=DELIVERED, reason=None, last_error=None, updated_at=now_ms)
    )  # fmt: skip
    query = select(m.c.id).where(and_(where, m.c.status == DELIVERED))
    return [r.id for r in await conn.execute(query)]


async def emit_deliveries(uow: UnitOfWork, deliveries: Iterable[tuple[int, str, int]]) -> None:
    """Write the delivery queue message of each ``(message_id, priority,
    recipient_id)`` to the outbox in ``uow``'s transaction: ``{message_id}`` on
    the priority's topic, keyed by the recipient (whose messages stay in order)."""
    by_priority: dict[Priority, list[tuple[Any, str | None]]] = defaultdict(list)
    for message_id, priority, recipient_id in deliveries:
        by_priority[Priority(priority)].append(({"message_id": message_id}, str(recipient_id)))
    for priority, events in by_priority.items():
        await uow.emit_many(deliver_topic(priority), events)


async def open_digest(conn: AsyncConnection, digest_key: str) -> int | None:
    """The message collecting ``digest_key``'s events until its window ends, if any."""
    query = select(m.c.id).where(
        and_(m.c.digest_key == digest_key, m.c.status == SCHEDULED, m.c.digest_of.is_(None))
    )
    row = (await conn.execute(query.order_by(m.c.id).limit(1))).first()
    return row.id if row else None


async def digested_events(conn: AsyncConnection, head_id: int) -> list[int]:
    """Events attached to the digest ``head_id``, in the order they came."""
    query = select(m.c.event_id).where(m.c.digest_of == head_id).order_by(m.c.id)
    return [r.event_id for r in await conn.execute(query)]


async def due(conn: AsyncConnection, now_ms: int, limit: int) -> list[Message]:
    """Scheduled messages whose time has come, locked for this transaction
    (skipping those another scheduler has locked)."""
    query = (
        select(m)
        .where(and_(m.c.status == SCHEDULED, m.c.due_at <= now_ms))
        .order_by(m.c.due_at, m.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [_message(r) for r in await conn.execute(query)]


async def stuck(conn: AsyncConnection, claimed_before_ms: int, limit: int) -> list[Message]:
    """Messages claimed before ``claimed_before_ms`` and never finished: their worker died."""
    query = (
        select(m)
        .where(and_(m.c.status == SENDING, m.c.claimed_at < claimed_before_ms))
        .order_by(m.c.claimed_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [_message(r) for r in await conn.execute(query)]


async def requeue(conn: AsyncConnection, ids: Sequence[int], from_status: str, now_ms: int) -> int:
    if not ids:
        return 0
    result = await conn.execute(
        update(m)
        .where(and_(m.c.id.in_(list(ids)), m.c.status == from_status))
        .values(status=QUEUED, due_at=now_ms, updated_at=now_ms)
    )
    return result.rowcount or 0


async def next_due(conn: AsyncConnection) -> tuple[int | None, int | None]:
    """The earliest due time of a scheduled message, and the earliest claim of a
    message still being sent."""
    scheduled = select(func.min(m.c.due_at)).where(m.c.status == SCHEDULED)
    sending = select(func.min(m.c.claimed_at)).where(m.c.status == SENDING)
    return (await conn.execute(scheduled)).scalar(), (await conn.execute(sending)).scalar()


async def counts(conn: AsyncConnection, event_id: int) -> list[tuple[str, str, int]]:
    query = (
        select(m.c.channel, m.c.status, func.count())
        .where(m.c.event_id == event_id)
        .group_by(m.c.channel, m.c.status)
    )
    return [(r[0], r[1], int(r[2])) for r in await conn.execute(query)]


async def list_for_event(
    conn: AsyncConnection, event_id: int, after_id: int | None, limit: int
) -> list[Message]:
    query = select(m).where(m.c.event_id == event_id)
    if after_id is not None:
        query = query.where(m.c.id > after_id)
    return [_message(r) for r in await conn.execute(query.order_by(m.c.id).limit(limit))]


# --- the inbox ------------------------------------------------------------------------

i = inbox_items_table


async def add_inbox_items(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Store items; a second one for the same message is ignored."""
    if rows:
        await conn.execute(insert_ignoring_duplicates(conn, i), list(rows))


async def inbox_item_ids(conn: AsyncConnection, message_ids: Sequence[int]) -> dict[int, int]:
    """The inbox item id stored for each of ``message_ids`` that has one."""
    if not message_ids:
        return {}
    query = select(i.c.message_id, i.c.id).where(i.c.message_id.in_(list(message_ids)))
    return {r.message_id: r.id for r in await conn.execute(query)}


async def unread_counts(conn: AsyncConnection, user_ids: set[int]) -> dict[int, int]:
    if not user_ids:
        return {}
    query = (
        select(i.c.user_id, func.count())
        .where(
            and_(i.c.user_id.in_(list(user_ids)), i.c.archived_at.is_(None), i.c.read_at.is_(None))
        )
        .group_by(i.c.user_id)
    )
    return {r[0]: int(r[1]) for r in await conn.execute(query)}


def inbox_item(row: Row[Any]) -> dict[str, Any]:
    return {
        "id": row.id,
        "message_id": row.message_id,
        "title": row.title,
        "body": row.body,
        "data": orjson.loads(row.data),
        "read_at_ms": row.read_at,
        "archived_at_ms": row.archived_at,
        "created_at_ms": row.created_at,
    }


async def list_inbox(
    conn: AsyncConnection,
    user_id: int,
    *,
    before_id: int | None,
    limit: int,
    unread: bool | None,
    archived: bool,
) -> list[dict[str, Any]]:
    """Newest first."""
    query = select(i).where(i.c.user_id == user_id)
    query = query.where(i.c.archived_at.is_not(None) if archived else i.c.archived_at.is_(None))
    if unread is True:
        query = query.where(i.c.read_at.is_(None))
    elif unread is False:
        query = query.where(i.c.read_at.is_not(None))
    if before_id is not None:
        query = query.where(i.c.id < before_id)
    rows = await conn.execute(query.order_by(i.c.id.desc()).limit(limit))
    return [inbox_item(r) for r in rows]


async def get_inbox_item(
    conn: AsyncConnection, user_id: int, item_id: int
) -> dict[str, Any] | None:
    row = (
        await conn.execute(select(i).where(and_(i.c.id == item_id, i.c.user_id == user_id)))
    ).first()
    return inbox_item(row) if row else None


async def unread_count(conn: AsyncConnection, user_id: int) -> int:
    query = (
        select(func.count())
        .select_from(i)
        .where(and_(i.c.user_id == user_id, i.c.archived_at.is_(None), i.c.read_at.is_(None)))
    )
    return int((await conn.execute(query)).scalar_one())


async def mark_read(conn: AsyncConnection, user_id: int, item_id: int | None, now_ms: int) -> int:
    """Mark one item (or, with ``item_id`` ``None``, every unread one not archived) read."""
    where = [i.c.user_id == user_id, i.c.read_at.is_(None)]
    where.append(i.c.id == item_id if item_id is not None else i.c.archived_at.is_(None))
    result = await conn.execute(update(i).where(and_(*where)).values(read_at=now_ms))
    return result.rowcount or 0


async def archive(conn: AsyncConnection, user_id: int, item_id: int, now_ms: int) -> int:
    result = await conn.execute(
        update(i)
        .where(and_(i.c.id == item_id, i.c.user_id == user_id, i.c.archived_at.is_(None)))
        .values(archived_at=now_ms)
    )
    return result.rowcount or 0
