"""A consumer-group member: partition leases, in-order handling, retries, dead letters.

Assignment needs no coordinator. Every member heartbeats into the group and
reads the list of live members; partition ``p`` belongs to the member at
index ``p % n`` of that sorted list. Members converge on the same answer
within a heartbeat, and the lease on each partition keeps two members from
working on one partition while they disagree: a member releases what is no
longer its own after finishing the message in hand, and the new owner's
``acquire`` succeeds only then (or once the lease lapses, if the old owner
died).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import structlog

from sysdesign.blocks.queue.base import Message, StartPosition

if TYPE_CHECKING:
    from sysdesign.blocks.queue.queue import Queue

log = structlog.get_logger("sysdesign.queue")

ACK_INTERVAL_SECONDS = 0.2


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with "equal jitter": after the n-th failed attempt
    wait between half and all of ``min(maximum, base * factor**(n-1))``, so
    failing consumers spread out without ever retrying at once."""

    base: float = 0.5
    factor: float = 2.0
    maximum: float = 60.0

    def delay(self, attempt: int) -> float:
        ceiling = min(self.maximum, self.base * self.factor ** max(attempt - 1, 0))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


@dataclass
class SubscriptionStats:
    handled: int = 0  # handler returned
    failures: int = 0  # handler raised or timed out
    dead_lettered: int = 0


@dataclass
class _Worker:
    task: asyncio.Task[None]
    stop: asyncio.Event
    renewed_at: float
    busy: bool = False
    handling_since: float | None = None  # when the handler in progress started
    timed_out: bool = False  # the coordinator cancelled the handler for running too long


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it, cancelling again if the first one was lost
    (some client libraries swallow a cancellation that races with a reply)."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.5)
    if not task.cancelled() and task.exception() is not None:
        log.warning("queue.coordinator_failed", error=str(task.exception()))


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


def _absorb_timeout(worker: _Worker | None) -> bool:
    """After a ``CancelledError`` in a handler: ``True`` when it was the
    watchdog's (the handler ran past its visibility timeout), which is then
    taken back; ``False`` for a real cancellation, to be raised."""
    if worker is None or not worker.timed_out:
        return False
    worker.timed_out = False
    _uncancel()
    return True


def default_member_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Subscription:
    """One member of ``group`` consuming ``topic``; build it with ``Queue.subscribe``."""

    def __init__(
        self,
        queue: Queue,
        topic: str,
        group: str,
        handler: Callable[[Message], Awaitable[Any]],
        *,
        concurrency: int,
        max_attempts: int,
        visibility_timeout: float,
        backoff: Backoff,
        batch_size: int,
        start: StartPosition,
        poll_wait: float,
        member: str | None = None,
    ) -> None:
        self.queue = queue
        self.backend = queue.backend
        self.clock = queue.clock
        self.topic = topic
        self.group = group
        self.handler = handler
        # Set by ``Queue.subscribe_batch``: tried first on each fetched batch.
        self.batch_handler: Callable[[list[Message]], Awaitable[Any]] | None = None
        self.max_attempts = max_attempts
        self.visibility_timeout = visibility_timeout
        self.backoff = backoff
        self.batch_size = batch_size
        self.start_position: StartPosition = start
        self.poll_wait = min(poll_wait, visibility_timeout / 3)
        self.tick = min(visibility_timeout / 3, 1.0)
        self.member = member or default_member_id()
        self.stats = SubscriptionStats()
        self.concurrency = concurrency
        self._semaphore: asyncio.Semaphore | None = None
        self._workers: dict[int, _Worker] = {}
        self._coordinator: asyncio.Task[None] | None = None
        self._partitions = 0

    @property
    def partitions(self) -> list[int]:
        """The partitions this member holds and is working on (not those it is giving up)."""
        return sorted(p for p, w in self._workers.items() if not w.stop.is_set())

    async def start(self) -> Subscription:
        self._partitions = await self.queue.partitions(self.topic)
        if self.concurrency < self._partitions:  # otherwise one handler per partition is the bound
            self._semaphore = asyncio.Semaphore(self.concurrency)
        await self.backend.create_group(self.topic, self.group, self.start_position)
        await self._rebalance()
        self._coordinator = asyncio.create_task(
            self._coordinate(), name=f"queue:{self.topic}:{self.group}"
        )
        return self

    async def stop(self) -> None:
        """Finish the messages in hand, acknowledge them, give every partition up."""
        if self._coordinator is not None:
            await _cancel(self._coordinator)
            self._coordinator = None
        for worker in self._workers.values():
            worker.stop.set()
        # A busy worker finishes the message in hand; one waiting for messages is
        # cancelled, again if a library swallowed the first cancellation.
        while pending := [w for w in self._workers.values() if not w.task.done()]:
            for worker in pending:
                if not worker.busy:
                    worker.task.cancel()
            await asyncio.wait([w.task for w in pending], timeout=0.5)
        self._workers.clear()
        try:
            await self.backend.leave(self.topic, self.group, self.member)
        except Exception as exc:  # the leases lapse on their own
            log.warning("queue.leave_failed", topic=self.topic, group=self.group, error=str(exc))

    async def __aenter__(self) -> Subscription:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- assignment -------------------------------------------------------------

    async def _coordinate(self) -> None:
        while True:
            await asyncio.sleep(self.tick)  # real time: leases expire in real time
            self._cancel_overdue()
            try:
                await self._rebalance()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "queue.rebalance_failed", topic=self.topic, group=self.group, error=str(exc)
                )
                self._stop_unrenewed()

    def _cancel_overdue(self) -> None:
        # One watchdog per member instead of a timer per message: a handler past
        # its visibility timeout is cancelled within a tick.
        now = self.clock.monotonic()
        for worker in self._workers.values():
            since = worker.handling_since
            if since is not None and not worker.timed_out and now - since > self.visibility_timeout:
                worker.timed_out = True
                worker.task.cancel()

    def _stop_unrenewed(self) -> None:
        # Past its lease another member may hold the partition: stop handling it.
        now = self.clock.monotonic()
        for worker in self._workers.values():
            if now - worker.renewed_at >= self.visibility_timeout:
                worker.stop.set()

    async def _rebalance(self) -> None:
        ttl = self.visibility_timeout
        members = await self.backend.heartbeat(self.topic, self.group, self.member, ttl)
        if self.member not in members:
            members = sorted([*members, self.member])
        index, count = members.index(self.member), len(members)
        wanted = {p for p in range(self._partitions) if p % count == index}

        for p, worker in list(self._workers.items()):
            if worker.task.done():
                del self._workers[p]
                continue
            if p not in wanted:
                worker.stop.set()  # finish the message in hand, then release
            if await self.backend.renew(self.topic, self.group, p, self.member, ttl):
                worker.renewed_at = self.clock.monotonic()
            else:
                worker.stop.set()
        self._stop_unrenewed()

        for p in sorted(wanted - set(self._workers)):
            if await self.backend.acquire(self.topic, self.group, p, self.member, ttl):
                stop = asyncio.Event()
                worker = _Worker(
                    task=asyncio.create_task(self._work(p, stop)),
                    stop=stop,
                    renewed_at=self.clock.monotonic(),
                )
                self._workers[p] = worker

    # --- handling ---------------------------------------------------------------

    async def _work(self, partition: int, stop: asyncio.Event) -> None:
        done: list[Message] = []
        try:
            while not stop.is_set():
                batch = await self.backend.fetch(
                    self.topic, self.group, partition, self.member, self.batch_size, self.poll_wait
                )
                worker = self._workers.get(partition)
                if worker is not None:
                    worker.busy = True
                monotonic = self.clock.monotonic
                ack_due = monotonic() + ACK_INTERVAL_SECONDS
                if batch and not stop.is_set() and await self._handle_batch(batch, worker):
                    done.extend(batch)
                    batch = []
                for message in batch:
                    if stop.is_set() or not await self._handle(message, stop, worker):
                        break  # what is not acknowledged goes to the partition's next holder
                    done.append(message)
                    if monotonic() >= ack_due:  # slow handlers: acknowledge as they go
                        await self._ack(partition, done)
                        ack_due = monotonic() + ACK_INTERVAL_SECONDS
                await self._ack(partition, done)
                if worker is not None:
                    worker.busy = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A backend error: give the partition up; a later acquire starts again
            # at the first unacknowledged message, so nothing fetched is skipped.
            log.warning(
                "queue.worker_failed",
                topic=self.topic,
                group=self.group,
                partition=partition,
                error=f"{exc.__class__.__name__}: {exc}",
            )
        finally:
            await asyncio.shield(self._finish(partition, done))

    async def _finish(self, partition: int, done: list[Message]) -> None:
        try:
            await self._ack(partition, done)
            await self.backend.release(self.topic, self.group, partition, self.member)
        except Exception as exc:  # unacknowledged messages are redelivered later
            log.warning("queue.release_failed", partition=partition, error=str(exc))

    async def _ack(self, partition: int, done: list[Message]) -> None:
        if done:
            await self.backend.ack(self.topic, self.group, partition, self.member, done)
            done.clear()

    async def _handle(self, message: Message, stop: asyncio.Event, worker: _Worker | None) -> bool:
        """Handle until success or dead letter (``True``), or give the message up
        unacknowledged when told to stop while waiting to retry (``False``)."""
        attempt = message.attempt
        error: str | None = None
        while True:
            if attempt > self.max_attempts:
                reason = error or (
                    f"not acknowledged after {attempt - 1} deliveries "
                    "(its consumer died or lost the partition)"
                )
                await self._dead_letter(replace(message, attempt=attempt - 1), reason)
                return True
            current = message if attempt == message.attempt else replace(message, attempt=attempt)
            try:
                await self._run(self.handler, current, worker)
                self.stats.handled += 1
                return True
            except asyncio.CancelledError:
                if not _absorb_timeout(worker):
                    raise
                error = f"handler did not finish within {self.visibility_timeout:g}s"
            except Exception as exc:
                error = f"{exc.__class__.__name__}: {exc}"
            self.stats.failures += 1
            log.warning(
                "queue.handler_failed",
                topic=self.topic,
                group=self.group,
                message=current.id,
                attempt=attempt,
                error=error,
            )
            if attempt >= self.max_attempts:
                await self._dead_letter(current, error)
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.backoff.delay(attempt))
            if stop.is_set():
                return False
            attempt += 1

    async def _handle_batch(self, batch: list[Message], worker: _Worker | None) -> bool:
        """Run the batch handler once on the whole batch; ``False`` (handle the
        messages one at a time) without one, when it fails, or when a message
        of the batch was delivered before: that batch may be what killed its
        last consumer."""
        handler = self.batch_handler
        if handler is None or any(m.attempt > 1 for m in batch):
            return False
        try:
            await self._run(handler, batch, worker)
        except asyncio.CancelledError:
            if not _absorb_timeout(worker):
                raise
            error = f"batch handler did not finish within {self.visibility_timeout:g}s"
        except Exception as exc:
            error = f"{exc.__class__.__name__}: {exc}"
        else:
            self.stats.handled += len(batch)
            return True
        self.stats.failures += 1
        log.warning("queue.batch_failed", topic=self.topic, group=self.group,
                    messages=len(batch), error=error)  # fmt: skip
        return False

    async def _run(
        self, handler: Callable[[Any], Awaitable[Any]], argument: Any, worker: _Worker | None
    ) -> None:
        if self._semaphore is not None:
            await self._semaphore.acquire()
        try:
            if worker is not None:
                worker.handling_since = self.clock.monotonic()
            await handler(argument)
            if worker is not None and worker.timed_out:
                # The handler swallowed the watchdog's cancellation and finished.
                worker.timed_out = False
                _uncancel()
        finally:
            if worker is not None:
                worker.handling_since = None
            if self._semaphore is not None:
                self._semaphore.release()

    async def _dead_letter(self, message: Message, error: str) -> None:
        await self.queue.dead_letter(message, error)
        self.stats.dead_lettered += 1
        log.error(
            "queue.dead_lettered",
            topic=self.topic,
            group=self.group,
            message=message.id,
            attempts=message.attempt,
            error=error,
        )
