"""The fan-out consumer: one event becomes one message per recipient and channel.

``notifications.fanout.<priority>`` carries ``{event_id, after}``. Each
message handles one page of recipients (``FANOUT_PAGE``, in user id order,
after ``after``): in one transaction it records the queue message in the
inbox table, inserts that page's messages, writes a delivery event per
queued message to the outbox, and either the next page's fan-out event or
the event's ``fanout_done``. A page is therefore done once or not at all: a
crash rolls it back and the redelivery does it again; a duplicate delivery
finds its inbox record and does nothing. Paging keeps each step short (a
topic of a million subscribers is a thousand steps, never one transaction
longer than the queue's visibility timeout), and the unique key on
``(event_id, recipient_id, channel)`` is the last guard against a page
written twice.

A recipient gets every channel the template has: the inbox always, e-mail,
SMS and webhooks when they gave an address (otherwise that message is
``suppressed``, reason ``no address``). With ``send_at`` in the future the
messages wait ``scheduled`` and the scheduler releases them.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import structlog

from sysdesign.blocks.notify.base import Priority, Status
from sysdesign.blocks.queue.idempotent import idempotent
from sysdesign.platform.writerlock import urgent
from sysdesign.systems.notifications import messages, store
from sysdesign.systems.notifications.domain import (
    FANOUT_PAGE,
    fanout_topic,
    initial_status,
)

if TYPE_CHECKING:
    from sysdesign.blocks.queue import Message
    from sysdesign.platform.context import Platform
    from sysdesign.platform.uow import UnitOfWork
    from sysdesign.systems.notifications.scheduler import Scheduler

log = structlog.get_logger(__name__)
CONSUMER = "notifications-fanout"


class FanOut:
    """The handler of ``notifications.fanout.*`` (see the module)."""

    def __init__(self, platform: Platform, scheduler: Scheduler | None = None) -> None:
        self._platform = platform
        self._scheduler = scheduler
        self._handle = idempotent(CONSUMER, lambda _m: platform.unit_of_work(), self._page)

    async def __call__(self, message: Message) -> None:
        # A critical event's writes go before bulk ones waiting for SQLite's writer.
        critical = message.topic == fanout_topic(Priority.CRITICAL)
        with urgent() if critical else contextlib.nullcontext():
            await self._handle(message)

    async def _page(self, message: Message, uow: UnitOfWork) -> None:
        payload = message.json()
        event = await store.get_event(uow.conn, int(payload["event_id"]))
        if event is None or event.fanout_done:
            return
        after = payload.get("after")
        template = await store.get_template(uow.conn, event.template)
        if template is None:
            log.warning("notifications_template_gone", event=event.id, template=event.template)
            await store.mark_fanout_done(uow.conn, event.id)
            return
        if event.recipients.topic:
            topic = await store.get_topic(uow.conn, event.recipients.topic)
            page = [] if topic is None else await store.topic_page(
                uow.conn, topic.id, after, FANOUT_PAGE
            )  # fmt: skip
        else:
            page = event.recipients.page_after(after, FANOUT_PAGE)
        now_ms = int(uow.clock.time() * 1000)
        scheduled = event.send_at_ms is not None and event.send_at_ms > now_ms
        done = await messages.existing_recipients(uow.conn, event.id, page)
        subscribers = await store.get_subscribers(uow.conn, page)
        rows: list[dict[str, Any]] = []
        deliveries: list[tuple[int, str, int]] = []
        for user_id in page:
            if user_id in done:
                continue
            for channel in template.channels:
                status, reason = initial_status(channel, subscribers.get(user_id))
                if status == Status.QUEUED.value and scheduled:
                    status = Status.SCHEDULED.value
                message_id = self._platform.ids.next_id()
                rows.append(_row(message_id, event.id, user_id, channel.value, status, reason,
                                 event.priority, event.send_at_ms if scheduled else now_ms,
                                 now_ms))  # fmt: skip
                if status == Status.QUEUED.value:
                    deliveries.append((message_id, event.priority, user_id))
        await messages.insert_messages(uow.conn, rows)
        await messages.emit_deliveries(uow, deliveries)
        if len(page) == FANOUT_PAGE:
            await uow.emit(
                message.topic, {"event_id": event.id, "after": page[-1]}, key=str(event.id)
            )
        else:
            await store.mark_fanout_done(uow.conn, event.id)
        if scheduled and self._scheduler is not None and event.send_at_ms is not None:
            self._scheduler.wake_at(event.send_at_ms)


def _row(
    message_id: int, event_id: int, user_id: int, channel: str, status: str,
    reason: str | None, priority: Priority, due_ms: int | None, now_ms: int,
) -> dict[str, Any]:  # fmt: skip
    return {
        "id": message_id, "event_id": event_id, "recipient_id": user_id, "channel": channel,
        "status": status, "priority": priority.value, "attempts": 0, "due_at": due_ms,
        "claimed_at": None, "reason": reason, "last_error": None, "provider_id": None,
        "digest_key": None, "digest_of": None, "created_at": now_ms, "updated_at": now_ms,
    }  # fmt: skip


__all__ = ["CONSUMER", "FanOut"]
