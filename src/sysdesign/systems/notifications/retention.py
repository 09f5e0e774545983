"""Retention: the notification tables do not grow forever.

Every ``retention_seconds`` (``SYSDESIGN_NOTIFY_RETENTION_SECONDS``) it deletes

- messages in a final status (sent, delivered, failed, suppressed) not
  updated for ``retention_days``; a message still ``scheduled``, ``queued``
  or ``sending`` is kept whatever its age, and a message folded into a digest
  (``digest_of``) is kept while its digest's head is: the head's summary is
  made from them when it is sent, or sent again after a replay;
- then events older than ``retention_days`` whose fan-out is done and that
  have no message left (an event's idempotency key goes with it: a trigger
  with that key after this makes a new event);
- inbox items created more than ``inbox_retention_days`` ago.

A setting of ``0`` days keeps that kind forever. Rows go a batch at a time
(``BATCH``, one transaction each): their primary keys are selected first,
then deleted by key with the conditions checked again, so a message that a
replay put back in the queue meanwhile stays, no transaction holds many
locks, and the same statements run on SQLite, PostgreSQL and MariaDB (which
refuses a DELETE whose subquery reads the table it deletes from). Several
processes may run it at once: a row is deleted once, and the other
process's DELETE finds nothing.

The age is measured on the platform's clock (a test's manual clock moves
it); the cadence is real time, as the scheduler's is. A pass that fails is
logged and the next one tries again.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import and_, delete, exists, or_, select
from sqlalchemy.sql import ColumnElement

from sysdesign.blocks.notify.base import Status
from sysdesign.platform.background import BackgroundTask
from sysdesign.systems.notifications.tables import (
    events_table,
    inbox_items_table,
    messages_table,
)

if TYPE_CHECKING:
    from sqlalchemy import Table

    from sysdesign.platform.context import Platform
    from sysdesign.systems.notifications.config import NotifyConfig

log = structlog.get_logger(__name__)
BATCH = 1000  # rows deleted per transaction
DAY_MS = 86_400_000
FINAL = (Status.SENT.value, Status.DELIVERED.value, Status.FAILED.value,
         Status.SUPPRESSED.value)  # fmt: skip
KINDS = ("messages", "events", "inbox_items")

m = messages_table
e = events_table
i = inbox_items_table


def _old_final_message(cutoff_ms: int) -> ColumnElement[bool]:
    return and_(m.c.status.in_(FINAL), m.c.updated_at < cutoff_ms)


def _done_event_without_messages(cutoff_ms: int) -> ColumnElement[bool]:
    return and_(
        e.c.fanout_done.is_(True),
        e.c.created_at < cutoff_ms,
        ~exists().where(m.c.event_id == e.c.id),
    )


class Retention:
    def __init__(self, platform: Platform, config: NotifyConfig) -> None:
        self._platform = platform
        self._config = config
        self._task = BackgroundTask(self._loop, "notifications-retention")
        self.deleted = dict.fromkeys(KINDS, 0)  # since start, per kind

    @property
    def enabled(self) -> bool:
        """Whether it deletes anything (``0`` days for both keeps everything)."""
        return self._config.retention_days > 0 or self._config.inbox_retention_days > 0

    async def run_once(self) -> dict[str, int]:
        """Delete what is past its retention; the rows deleted per kind
        (``messages``, ``events``, ``inbox_items``)."""
        now_ms = int(self._platform.clock.time() * 1000)
        counts = dict.fromkeys(KINDS, 0)
        if self._config.retention_days > 0:
            cutoff_ms = now_ms - int(self._config.retention_days * DAY_MS)
            counts["messages"] = await self._purge(m, self._messages_query(cutoff_ms),
                                                   _old_final_message(cutoff_ms))  # fmt: skip
            condition = _done_event_without_messages(cutoff_ms)
            counts["events"] = await self._purge(e, select(e.c.id).where(condition), condition)
        if self._config.inbox_retention_days > 0:
            condition = i.c.created_at < now_ms - int(self._config.inbox_retention_days * DAY_MS)
            counts["inbox_items"] = await self._purge(i, select(i.c.id).where(condition),
                                                      condition)  # fmt: skip
        for kind, count in counts.items():
            self.deleted[kind] += count
        return counts

    def _messages_query(self, cutoff_ms: int) -> Any:
        head = m.alias("head")
        head_kept = exists().where(
            and_(head.c.id == m.c.digest_of,
                 or_(head.c.status.not_in(FINAL), head.c.updated_at >= cutoff_ms))
        )  # fmt: skip
        return select(m.c.id).where(
            and_(_old_final_message(cutoff_ms), or_(m.c.digest_of.is_(None), ~head_kept))
        )

    async def _purge(self, table: Table, ids_query: Any, condition: ColumnElement[bool]) -> int:
        """Delete the rows ``ids_query`` finds, ``BATCH`` keys per transaction, each
        DELETE checking ``condition`` again; how many went."""
        key = table.c.id
        total = 0
        while True:
            async with self._platform.db.primary.begin() as conn:
                ids = list((await conn.execute(ids_query.order_by(key).limit(BATCH))).scalars())
                if not ids:
                    return total
                result = await conn.execute(delete(table).where(and_(key.in_(ids), condition)))
            deleted = result.rowcount or 0
            total += deleted
            # Fewer than a batch: that was the last. None deleted: the rest changed meanwhile.
            if len(ids) < BATCH or deleted == 0:
                return total

    def start(self) -> None:
        """Run a pass now and then every ``retention_seconds``, in the background
        (nothing when retention is off)."""
        if self.enabled:
            self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def _loop(self) -> None:
        while True:
            try:
                counts = await self.run_once()
                if any(counts.values()):
                    log.info("notifications_retention", **counts)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # nothing half done: each batch is a transaction
                log.warning("notifications_retention_failed", error=repr(exc))
            await asyncio.sleep(self._config.retention_seconds)


__all__ = ["BATCH", "Retention"]
