"""The scheduler: releases messages whose time has come, and rescues messages
whose worker died.

Messages wait as ``scheduled`` with a ``due_at`` (``send_at``, the end of
quiet hours, a digest window, a retry's backoff). The scheduler moves due
ones back to ``queued`` and writes their delivery events to the outbox in the
same transaction, a batch at a time, with the rows locked ``FOR UPDATE SKIP
LOCKED`` (SQLite's write transaction is exclusive), so several processes
share the work and none releases a message twice. It also hands a message
that stayed ``sending`` longer than the visibility timeout (its worker died
mid-send) back to the queue: delivery is at least once.

**When it reads the database.** It keeps the earliest due time it knows of:
what its own workers scheduled (``wake_at``) and what the last read found.
Every ``scheduler_seconds`` it compares that with the clock (the platform's:
a test's manual clock releases messages when it is moved) and reads only
when something is due; and every ``sweep_seconds`` it reads anyway, to find
what other processes scheduled and messages stuck in ``sending``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import structlog

from sysdesign.platform.background import BackgroundTask
from sysdesign.systems.notifications import messages
from sysdesign.systems.notifications.domain import SENDING

if TYPE_CHECKING:
    from sysdesign.platform.context import Platform
    from sysdesign.systems.notifications.config import NotifyConfig

log = structlog.get_logger(__name__)
BATCH = 500


class Scheduler:
    def __init__(self, platform: Platform, config: NotifyConfig) -> None:
        self._platform = platform
        self._config = config
        self._hint_ms: int | None = None
        self._wake = asyncio.Event()
        self._task = BackgroundTask(self._loop, "notifications-scheduler")
        self.released = 0

    def _now_ms(self) -> int:
        return int(self._platform.clock.time() * 1000)

    def wake_at(self, due_ms: int) -> None:
        """A message of this process waits until ``due_ms`` (epoch milliseconds)."""
        if self._hint_ms is None or due_ms < self._hint_ms:
            self._hint_ms = due_ms
        if due_ms <= self._now_ms():
            self._wake.set()

    async def run_once(self) -> int:
        """Release every due message and rescue every stuck one; how many moved."""
        self._hint_ms = None  # wake_at during the pass lowers it again
        moved = 0
        now_ms = self._now_ms()
        while (count := await self._release(now_ms)) == BATCH:
            moved += count
        moved += count
        visibility_ms = int(self._config.visibility_seconds * 1000)
        while (count := await self._rescue(now_ms - visibility_ms)) == BATCH:
            moved += count
        moved += count
        async with self._platform.db.primary.read() as conn:
            due, claimed = await messages.next_due(conn)
        candidates = [t for t in (due, claimed + visibility_ms if claimed else None,
                                  self._hint_ms) if t is not None]  # fmt: skip
        self._hint_ms = min(candidates) if candidates else None
        return moved

    async def _release(self, now_ms: int) -> int:
        async with self._platform.unit_of_work() as uow:
            rows = await messages.due(uow.conn, now_ms, BATCH)
            await messages.requeue(uow.conn, [r.id for r in rows], messages.SCHEDULED, now_ms)
            await messages.emit_deliveries(uow, [(r.id, r.priority, r.recipient_id) for r in rows])
        self.released += len(rows)
        return len(rows)

    async def _rescue(self, claimed_before_ms: int) -> int:
        async with self._platform.unit_of_work() as uow:
            rows = await messages.stuck(uow.conn, claimed_before_ms, BATCH)
            now_ms = self._now_ms()
            await messages.requeue(uow.conn, [r.id for r in rows], SENDING, now_ms)
            await messages.emit_deliveries(uow, [(r.id, r.priority, r.recipient_id) for r in rows])
        if rows:
            log.warning("notifications_rescued", messages=len(rows))
        return len(rows)

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        swept_at = loop.time()
        while True:
            hint = self._hint_ms
            # Real time for the cadence (it is operational); the platform clock for due times.
            sweep = loop.time() - swept_at >= self._config.sweep_seconds
            if sweep or (hint is not None and hint <= self._now_ms()):
                try:
                    await self.run_once()
                    swept_at = loop.time() if sweep else swept_at
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the rows stay as they are; the next pass retries
                    log.warning("notifications_scheduler_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._config.scheduler_seconds)
            self._wake.clear()
