"""The inbox: which messages a consumer has already processed.

The counterpart of the outbox. Delivery is at least once, so a consumer may
be given a message twice (a redelivery after a crash, or a republish after
the relay crashed between publishing and marking). Recording the message's
id in the same transaction as the consumer's own change makes the second
delivery a no-op: either both the change and the record commit, or neither.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, String, Table, delete
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from sysdesign.platform.db import metadata

inbox_table = Table(
    "inbox",
    metadata,
    Column("consumer", String(128), primary_key=True),
    Column("message_id", String(255), primary_key=True),
    Column("processed_at", BigInteger, nullable=False),  # epoch milliseconds
    Index("ix_inbox_processed_at", "processed_at"),
)


async def record_processed(
    conn: AsyncConnection, consumer: str, message_id: str, now_ms: int
) -> bool:
    """Record ``message_id`` for ``consumer`` in the caller's transaction.

    ``True`` the first time; ``False`` if it was already recorded (by a
    committed transaction, or by a concurrent one that commits first: the
    primary key makes the second wait and then see the row).
    """
    values = {"consumer": consumer, "message_id": message_id, "processed_at": now_ms}
    dialect = conn.dialect.name
    if dialect == "postgresql":
        stmt = postgresql.insert(inbox_table).values(values).on_conflict_do_nothing()
    elif dialect in ("mysql", "mariadb"):
        stmt = mysql.insert(inbox_table).values(values).prefix_with("IGNORE")
    else:
        stmt = sqlite.insert(inbox_table).values(values).on_conflict_do_nothing()
    result = await conn.execute(stmt)
    return result.rowcount == 1


async def purge_processed(
    conn: AsyncConnection, older_than_ms: int, consumer: str | None = None
) -> int:
    """Forget records older than ``older_than_ms`` (only ``consumer``'s when
    given): a message redelivered after that long would be processed again,
    so keep them longer than any retry."""
    t = inbox_table
    stmt = delete(t).where(t.c.processed_at < older_than_ms)
    if consumer is not None:
        stmt = stmt.where(t.c.consumer == consumer)
    result = await conn.execute(stmt)
    return result.rowcount or 0
