"""The in-app inbox: items stored per user, read and archived by their owner,
and pushed live to the user's open streams.

Delivering to the inbox stores the item and finishes its message in one
transaction (the unique message id keeps a second copy out), then publishes
it on the realtime channel ``notifications:inbox:<user_id>``. Realtime is at
most once and keeps no history, so a stream reads the unread count *after*
subscribing: anything stored before is in that count, anything after comes
as an event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from sysdesign.blocks.notify.base import Rendered
from sysdesign.systems.notifications import messages
from sysdesign.systems.notifications.domain import Message
from sysdesign.systems.notifications.service import NotFound
from sysdesign.systems.notifications.store import dumps

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from sysdesign.platform.context import Platform

log = structlog.get_logger(__name__)


def channel_of(user_id: int) -> str:
    return f"notifications:inbox:{user_id}"


async def publish(platform: Platform, user_id: int, payload: dict[str, Any]) -> None:
    """Tell the user's open streams; a lost push is repaired by the next read."""
    try:
        await platform.realtime.publish(channel_of(user_id), orjson.dumps(payload))
    except Exception as exc:
        log.warning("notifications_push_failed", user=user_id, error=repr(exc))


async def store(
    platform: Platform, conn: AsyncConnection,
    deliveries: Sequence[tuple[Message, Rendered, dict[str, Any]]], now_ms: int,
) -> list[tuple[int, dict[str, Any]]]:  # fmt: skip
    """In ``conn``'s transaction: mark ``delivered`` each message whose claim
    still holds and store its item (a second item for one message is
    ignored); the pushes to publish once the transaction commits, as
    ``(user_id, payload)``. A message whose claim was lost stores nothing."""
    if not deliveries:
        return []
    held = set(await messages.deliver_held(conn, [d[0] for d in deliveries], now_ms))
    rows = [
        {"id": platform.ids.next_id(), "user_id": msg.recipient_id, "message_id": msg.id,
         "title": (rendered.subject or "")[:500] or None, "body": rendered.body,
         "data": dumps(data), "read_at": None, "archived_at": None, "created_at": now_ms}
        for msg, rendered, data in deliveries if msg.id in held
    ]  # fmt: skip
    if not rows:
        return []
    await messages.add_inbox_items(conn, rows)
    stored = await messages.inbox_item_ids(conn, [r["message_id"] for r in rows])
    new = [r for r in rows if stored.get(r["message_id"]) == r["id"]]
    unread = await messages.unread_counts(conn, {r["user_id"] for r in new})
    data_of = {msg.id: data for msg, _, data in deliveries}
    return [
        (r["user_id"], {"type": "item", "unread_count": unread.get(r["user_id"], 0),
                        "item": _public({**r, "data": data_of[r["message_id"]]})})
        for r in new
    ]  # fmt: skip


def _public(item: dict[str, Any]) -> dict[str, Any]:
    """A freshly stored row as the stream shows it (as the API shows an item)."""
    return {
        "id": str(item["id"]), "message_id": str(item["message_id"]), "title": item["title"],
        "body": item["body"], "data": item["data"], "read_at_ms": item["read_at"],
        "archived_at_ms": item["archived_at"], "created_at_ms": item["created_at"],
    }  # fmt: skip


class Inbox:
    """One user's inbox, for the API."""

    def __init__(self, platform: Platform) -> None:
        self._platform = platform

    def _now_ms(self) -> int:
        return int(self._platform.clock.time() * 1000)

    async def list(
        self, user_id: int, *, before_id: int | None, limit: int, unread: bool | None,
        archived: bool,
    ) -> list[dict[str, Any]]:  # fmt: skip
        async with self._platform.db.primary.read() as conn:
            return await messages.list_inbox(conn, user_id, before_id=before_id, limit=limit,
                                             unread=unread, archived=archived)  # fmt: skip

    async def unread_count(self, user_id: int) -> int:
        async with self._platform.db.primary.read() as conn:
            return await messages.unread_count(conn, user_id)

    async def read(self, user_id: int, item_id: int) -> dict[str, Any]:
        """Mark one item read (again: no change); ``NotFound`` if not the user's."""
        return await self._change(user_id, item_id, messages.mark_read)

    async def archive(self, user_id: int, item_id: int) -> dict[str, Any]:
        return await self._change(user_id, item_id, messages.archive)

    async def read_all(self, user_id: int) -> int:
        async with self._platform.db.primary.begin() as conn:
            changed = await messages.mark_read(conn, user_id, None, self._now_ms())
        await self._push_count(user_id)
        return changed

    async def _change(self, user_id: int, item_id: int, change: Any) -> dict[str, Any]:
        async with self._platform.db.primary.begin() as conn:
            changed = await change(conn, user_id, item_id, self._now_ms())
            item = await messages.get_inbox_item(conn, user_id, item_id)
        if item is None:
            raise NotFound("inbox item", item_id)
        if changed:
            await self._push_count(user_id)
        return item

    async def _push_count(self, user_id: int) -> None:
        count = await self.unread_count(user_id)
        await publish(self._platform, user_id, {"type": "unread-count", "count": count})

    @asynccontextmanager
    async def watch(self, user_id: int) -> AsyncIterator[Any]:
        """The user's live channel, subscribed (read the state after entering)."""
        async with self._platform.realtime.subscribe(channel_of(user_id)) as sub:
            yield sub
