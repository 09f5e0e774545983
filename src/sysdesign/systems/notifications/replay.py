"""Dead-letter replay: a ``failed`` message goes back to the queue.

An operator fixes what made messages fail (a receiver that answered 500, a
template that did not render) and replays them, one message or every failed
message of an event. A replayed message is ``queued`` again with ``attempts``
0 (a full set of retries), ``reason`` ``replayed``, and its ``last_error``
kept: it says why the message failed until a new attempt fails differently
or it is delivered. Its delivery queue message is written to the outbox in
the transaction that changes its status, so a replay is never half done.

The status change is a conditional UPDATE on ``failed``: of two replays at
once, one requeues the message and the other finds it ``queued`` already
(``NotFailed``), so a replay never sends a message twice. A replayed message
goes through delivery as a new one would: preferences, quiet hours and the
template's throttle apply again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, select, update

from sysdesign.blocks.notify.base import Status
from sysdesign.systems.notifications import messages
from sysdesign.systems.notifications.domain import Message, public_status
from sysdesign.systems.notifications.service import NotFound
from sysdesign.systems.notifications.tables import events_table, messages_table

if TYPE_CHECKING:
    from sysdesign.platform.context import Platform

BATCH = 1000  # messages requeued per transaction
FAILED = Status.FAILED.value
REPLAYED = "replayed"
m = messages_table


class NotFailed(Exception):
    """The message is not ``failed`` (``status`` says what it is, as callers see it)."""

    def __init__(self, message_id: int, status: str) -> None:
        super().__init__(f"message {message_id} is {status}")
        self.message_id = message_id
        self.status = status


class Replay:
    def __init__(self, platform: Platform) -> None:
        self._platform = platform

    def _now_ms(self) -> int:
        return int(self._platform.clock.time() * 1000)

    def _requeued(self, now_ms: int) -> dict[str, Any]:
        return {
            "status": Status.QUEUED.value, "attempts": 0, "reason": REPLAYED,
            "due_at": now_ms, "claimed_at": None, "claim": None, "updated_at": now_ms,
        }  # fmt: skip

    async def retry_message(self, message_id: int) -> Message:
        """Requeue one failed message; the message as it is now.

        Raises ``NotFound`` when there is no such message and ``NotFailed``
        when it is not ``failed`` (a concurrent replay requeued it first)."""
        async with self._platform.unit_of_work() as uow:
            result = await uow.conn.execute(
                update(m).where(and_(m.c.id == message_id, m.c.status == FAILED))
                .values(**self._requeued(self._now_ms()))
            )  # fmt: skip
            msg = await messages.get_message(uow.conn, message_id)
            if msg is None:
                raise NotFound("message", message_id)
            if result.rowcount != 1:
                raise NotFailed(message_id, public_status(msg.status).value)
            await messages.emit_deliveries(uow, [(msg.id, msg.priority, msg.recipient_id)])
        return msg

    async def retry_event(self, event_id: int) -> int:
        """Requeue every failed message of an event, ``BATCH`` per transaction;
        how many. Raises ``NotFound`` for an unknown event."""
        async with self._platform.db.primary.read() as conn:
            query = select(events_table.c.id).where(events_table.c.id == event_id)
            if (await conn.execute(query)).first() is None:
                raise NotFound("event", event_id)
        requeued = 0
        while True:
            async with self._platform.unit_of_work() as uow:
                # Locked, so a concurrent replay of the same rows waits and then skips
                # them (on SQLite the write transaction is exclusive already).
                rows = (await uow.conn.execute(
                    select(m.c.id, m.c.priority, m.c.recipient_id)
                    .where(and_(m.c.event_id == event_id, m.c.status == FAILED))
                    .order_by(m.c.id).limit(BATCH).with_for_update()
                )).all()  # fmt: skip
                if not rows:
                    return requeued
                result = await uow.conn.execute(
                    update(m).where(and_(m.c.id.in_([r.id for r in rows]), m.c.status == FAILED))
                    .values(**self._requeued(self._now_ms()))
                )  # fmt: skip
                await messages.emit_deliveries(
                    uow, [(r.id, r.priority, r.recipient_id) for r in rows]
                )
            requeued += result.rowcount or 0


__all__ = ["BATCH", "NotFailed", "Replay"]
