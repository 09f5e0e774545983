"""``NotificationsClient``: how the other systems of this process send notifications.

It calls the notification service in process (no HTTP, no admin token) with
the same guarantees as ``POST /notifications/v1/events``: the event and its
fan-out are written in one transaction, and an ``idempotency_key`` makes a
repeated call (a retried request, a redelivered queue message) return the
first event instead of notifying twice. The ``caller`` names the system, so
two systems' keys never collide.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sysdesign.blocks.notify.base import Priority
from sysdesign.systems.notifications.domain import MAX_USER_IDS, Invalid, Recipients
from sysdesign.systems.notifications.service import NotificationService

if TYPE_CHECKING:
    from sysdesign.platform.context import Platform


@dataclass(frozen=True, slots=True)
class Triggered:
    event_id: int
    created: bool  # false: an earlier call with the same idempotency key made it


class NotificationsClient:
    def __init__(self, platform: Platform, caller: str) -> None:
        if not caller or len(caller) > 56:
            raise ValueError("caller names the calling system in 1 to 56 characters")
        self._service = NotificationService(platform)
        self._caller = f"system:{caller}"

    async def trigger(
        self,
        template: str,
        *,
        user_ids: Iterable[int] | None = None,
        topic: str | None = None,
        data: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        priority: Priority | str | None = None,
        send_at: datetime | None = None,
    ) -> Triggered:
        """Send ``template`` to ``user_ids`` or a ``topic``'s subscribers.

        Raises ``Invalid`` (unknown template or topic, data over 64 KiB,
        both or neither of ``user_ids`` and ``topic``) and
        ``IdempotencyKeyReused`` (the key came before with other arguments).
        """
        ids = tuple(int(u) for u in user_ids) if user_ids is not None else None
        if (ids is None) == (topic is None):
            raise Invalid("to", "give exactly one of user_ids and topic")
        if ids is not None and not 1 <= len(ids) <= MAX_USER_IDS:
            raise Invalid("to.user_ids", f"give 1 to {MAX_USER_IDS} user ids")
        event, created = await self._service.trigger(
            self._caller,
            template,
            Recipients(user_ids=ids or (), topic=topic),
            data or {},
            idempotency_key=idempotency_key,
            priority=Priority(priority) if priority is not None else None,
            send_at_ms=int(send_at.timestamp() * 1000) if send_at is not None else None,
        )
        return Triggered(event.id, created)
