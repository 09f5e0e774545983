"""Visit events of unlimited links, sent to the queue in batches.

A redirect is the hot path, and one queue append per redirect costs a
round trip (a transaction on the embedded SQLite queue). The redirect
instead hands its event to ``VisitBatcher.add``, which costs a list append,
and a background task publishes what has gathered every ``interval``
seconds or as soon as ``max_batch`` are waiting, in one ``publish_batch``.

What that gives up, on purpose: events still in memory when the process is
killed (at most ``interval`` seconds' worth) are lost, as are events that
arrive while ``max_pending`` are already waiting on a queue that is down.
Both are counted (``dropped``) and logged. Analytics may then miss visits;
a redirect is never delayed or refused for them. Links with ``max_visits``
do not come here: their visits are counted in the database, with the event
in the same transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import structlog

from sysdesign.blocks.queue import OutgoingMessage
from sysdesign.platform.background import BackgroundTask

if TYPE_CHECKING:
    from sysdesign.blocks.queue import Queue

log = structlog.get_logger(__name__)


class VisitBatcher:
    def __init__(
        self,
        queue: Queue,
        topic: str,
        *,
        max_batch: int = 500,
        interval: float = 0.05,
        max_pending: int = 100_000,
    ) -> None:
        self._queue = queue
        self._topic = topic
        self._max_batch = max_batch
        self._interval = interval
        self._max_pending = max_pending
        self._pending: list[OutgoingMessage] = []
        self._wake = asyncio.Event()
        self._task = BackgroundTask(self._run, name="shortener-visit-batcher")
        self.published = 0
        self.dropped = 0

    @property
    def running(self) -> bool:
        return self._task.running

    def add(self, payload: dict[str, Any], key: str) -> None:
        if len(self._pending) >= self._max_pending:
            self.dropped += 1
            if self.dropped % 10_000 == 1:
                log.warning("shortener_visits_dropped", dropped=self.dropped)
            return
        self._pending.append(OutgoingMessage(payload, key))
        if len(self._pending) >= self._max_batch:
            self._wake.set()

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        """Stop, after publishing what is waiting (one last try)."""
        await self._task.stop()
        while self._pending:
            if not await self._flush():
                self.dropped += len(self._pending)
                self._pending.clear()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            while self._pending:
                if not await self._flush():
                    await asyncio.sleep(self._interval)  # the queue is down: hold, try later
                    break

    async def _flush(self) -> bool:
        batch = self._pending[: self._max_batch]
        try:
            await self._queue.publish_batch(self._topic, batch)
        except Exception as exc:
            log.warning("shortener_visits_not_published", count=len(batch), error=repr(exc))
            return False
        del self._pending[: len(batch)]
        self.published += len(batch)
        return True
