"""The outbox relay: publishes the events that units of work wrote to the outbox.

Each pass takes a batch of unpublished rows on a shard inside one
transaction, publishes them (in id order, each topic's as one batch) and
marks them published before committing. A crash after publishing and before
the commit leaves the rows unpublished, so the next pass publishes them
again: a duplicate, never a loss. Topics marked ``expedite`` go first: each
pass takes their pending rows before any other, so an urgent event waits for
at most the pass in progress, not for a backlog of other topics' events
(a topic's own events keep their order). Every message carries the event id in the
``sysdesign-event-id`` header, the same on a republish, which is what
idempotent consumers record.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict

import structlog

from sysdesign.blocks.queue.base import EVENT_ID_HEADER
from sysdesign.blocks.queue.queue import OutgoingMessage, Queue
from sysdesign.platform import outbox
from sysdesign.platform.background import BackgroundTask
from sysdesign.platform.clock import Clock, SystemClock
from sysdesign.platform.db import Database, ShardRouter
from sysdesign.platform.writerlock import urgent

log = structlog.get_logger("sysdesign.queue.relay")


class OutboxRelay:
    def __init__(
        self,
        router: ShardRouter,
        queue: Queue,
        *,
        clock: Clock | None = None,
        batch_size: int = 500,
        interval_seconds: float = 0.5,
    ) -> None:
        self.router = router
        self.queue = queue
        self.clock = clock or SystemClock()
        self.batch_size = batch_size
        self.interval_seconds = interval_seconds
        self.published = 0
        self.expedited: set[str] = set()
        self._wake = asyncio.Event()
        self._task = BackgroundTask(self._loop, "outbox-relay")

    async def relay_shard(self, db: Database) -> int:
        """One batch from one shard (and first a batch of expedited topics'
        events, if any are pending); returns how many events were published."""
        # Cheap looks first: an idle pass is one SELECT and takes no write lock.
        async with db.read() as conn:
            if not await outbox.fetch_pending(conn, 1):
                return 0
            expedite = bool(self.expedited) and bool(
                await outbox.fetch_pending(conn, 1, topics=self.expedited)
            )
        published = 0
        if expedite:
            # Its turn at SQLite's writer comes before other writers' (see writerlock).
            with urgent():
                published = await self._relay_batch(db, self.expedited)
            async with db.read() as conn:  # were the expedited ones all that was pending?
                if not await outbox.fetch_pending(conn, 1):
                    return published
        return published + await self._relay_batch(db, None)

    async def _relay_batch(self, db: Database, topics: set[str] | None) -> int:
        async with db.begin() as conn:
            events = await outbox.fetch_pending(conn, self.batch_size, lock=True, topics=topics)
            if not events:
                return 0
            by_topic: dict[str, list[OutgoingMessage]] = defaultdict(list)
            for event in events:
                headers = {**event.headers, EVENT_ID_HEADER: str(event.id)}
                by_topic[event.topic].append(OutgoingMessage(event.payload, event.key, headers))
            for topic, messages in by_topic.items():
                await self.queue.publish_batch(topic, messages)
            await outbox.mark_published(conn, [e.id for e in events], int(self.clock.time() * 1000))
        self.published += len(events)
        return len(events)

    async def run_once(self) -> int:
        """Publish everything pending on every shard; returns how many."""
        total = 0
        for db in self.router.shards:
            while True:
                done = await self.relay_shard(db)
                total += done
                if done < self.batch_size:
                    break
        return total

    def expedite(self, *topics: str) -> None:
        """Publish ``topics``' events before any other pending ones."""
        self.expedited.update(topics)

    def wake(self) -> None:
        """Run a pass now (a unit of work that emitted events just committed)."""
        self._wake.set()

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the rows stay pending; the next pass retries
                log.warning("outbox.relay_failed", error=f"{exc.__class__.__name__}: {exc}")
            # Polling is operational time, not domain time: real seconds even
            # when the platform runs on a manual clock.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_seconds)
            self._wake.clear()
