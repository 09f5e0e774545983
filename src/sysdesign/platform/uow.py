"""The unit of work: one transaction on one shard, with the outbox inside it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from sysdesign.platform import outbox
from sysdesign.platform.clock import Clock
from sysdesign.platform.db import Database
from sysdesign.platform.ids import SnowflakeGenerator


class UnitOfWork:
    """``async with UnitOfWork(db, ids, clock) as uow``: ``uow.conn`` for statements,
    ``uow.emit()`` for events. Leaving the block normally commits both; an
    exception rolls both back, so no event is published for a change that did
    not happen, and no change happens without its event."""

    def __init__(
        self,
        db: Database,
        ids: SnowflakeGenerator,
        clock: Clock,
        on_events_committed: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self._ids = ids
        self._on_events_committed = on_events_committed
        self._conn: AsyncConnection | None = None
        self._cm: Any = None
        self.emitted: list[int] = []

    @property
    def conn(self) -> AsyncConnection:
        if self._conn is None:
            raise RuntimeError("the unit of work is not open")
        return self._conn

    async def __aenter__(self) -> UnitOfWork:
        self._cm = self.db.begin()
        self._conn = await self._cm.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        try:
            result = await self._cm.__aexit__(exc_type, exc, tb)
        finally:
            self._conn = None
        if exc_type is None and self.emitted and self._on_events_committed is not None:
            self._on_events_committed()  # the relay publishes now rather than at its next poll
        return result

    async def emit(
        self,
        topic: str,
        payload: Any,
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> int:
        """Write an event to the outbox in this transaction; returns its id."""
        event_id = await outbox.add_event(
            self.conn,
            event_id=self._ids.next_id(),
            topic=topic,
            payload=payload,
            key=key,
            headers=headers,
            created_at_ms=int(self.clock.time() * 1000),
        )
        self.emitted.append(event_id)
        return event_id

    async def emit_many(self, topic: str, events: Sequence[tuple[Any, str | None]]) -> list[int]:
        """Write many events of one topic (``(payload, key)`` each) to the outbox in
        this transaction, in one statement; returns their ids."""
        batch = [(self._ids.next_id(), payload, key) for payload, key in events]
        await outbox.add_events(self.conn, topic, batch, int(self.clock.time() * 1000))
        ids = [event_id for event_id, _, _ in batch]
        self.emitted.extend(ids)
        return ids
