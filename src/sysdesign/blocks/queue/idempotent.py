"""Idempotent consumers: a duplicate delivery has no second effect.

``idempotent(consumer, open_unit_of_work, handle)`` wraps a handler that
changes a database: it opens the unit of work, records the message's
``dedupe_key`` in the inbox table in that same transaction, and runs the
handler only if the record is new. The change and the record commit
together or not at all, so whether the message arrives once or five times
(a redelivery after a crash, a republish after a relay crash), its effect
happens once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sysdesign.blocks.queue.base import Message
from sysdesign.platform.inbox import record_processed
from sysdesign.platform.uow import UnitOfWork

UnitOfWorkFactory = Callable[[Message], UnitOfWork]
Handle = Callable[[Message, UnitOfWork], Awaitable[None]]


def idempotent(
    consumer: str, open_unit_of_work: UnitOfWorkFactory, handle: Handle
) -> Callable[[Message], Awaitable[bool]]:
    """A queue handler that runs ``handle(message, uow)`` at most once per message.

    ``open_unit_of_work(message)`` chooses the shard (``platform.unit_of_work``
    with the key the change belongs to). The returned handler answers
    ``True`` when it ran ``handle`` and ``False`` for a duplicate.
    """

    async def handler(message: Message) -> bool:
        async with open_unit_of_work(message) as uow:
            now_ms = int(uow.clock.time() * 1000)
            if not await record_processed(uow.conn, consumer, message.dedupe_key, now_ms):
                return False
            await handle(message, uow)
            return True

    return handler
