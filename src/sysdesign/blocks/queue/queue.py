"""``Queue``: what users publish to and subscribe on, over any ``QueueBackend``."""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sysdesign.blocks.queue.base import (
    DLQ_SUFFIX,
    GroupActive,
    Message,
    QueueBackend,
    Record,
    StartPosition,
    UnknownTopic,
    check_headers,
    check_name,
    encode_payload,
)
from sysdesign.blocks.queue.consumer import Backoff, Subscription
from sysdesign.platform.clock import Clock, SystemClock
from sysdesign.platform.db import stable_hash

Handler = Callable[[Message], Awaitable[Any]]
BatchHandler = Callable[[list[Message]], Awaitable[Any]]


def _one_at_a_time(handler: BatchHandler) -> Handler:
    async def handle(message: Message) -> Any:
        return await handler([message])

    return handle


REPLAY_GROUP = "sysdesign-dlq-replay"


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    payload: Any
    key: str | None = None
    headers: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    partitions: int
    messages: int
    groups: list[str]


@dataclass(frozen=True, slots=True)
class GroupLag:
    topic: str
    group: str
    partitions: dict[int, int]
    owners: dict[int, str]

    @property
    def total(self) -> int:
        return sum(self.partitions.values())


def partition_for(key: str | None, partitions: int, counter: Iterable[int]) -> int:
    if key is None:
        return next(iter(counter)) % partitions
    return stable_hash(key) % partitions


class Queue:
    """A partitioned durable log with consumer groups; see ``base`` for the model.

    ``publish`` appends and returns the message id once the backend has
    stored it. ``subscribe`` returns a ``Subscription``: start it (or use it
    as an async context manager) and it runs the handler for every message
    of the topic that its group has not consumed, at least once each.
    """

    def __init__(
        self,
        backend: QueueBackend,
        *,
        clock: Clock | None = None,
        default_partitions: int = 8,
    ) -> None:
        if default_partitions < 1:
            raise ValueError("default_partitions must be at least 1")
        self.backend = backend
        self.clock = clock or SystemClock()
        self.default_partitions = default_partitions
        self._partitions: dict[str, int] = {}
        self._round_robin = itertools.count()
        self._connected = False

    @property
    def name(self) -> str:
        return self.backend.name

    async def connect(self) -> None:
        if not self._connected:
            await self.backend.connect()
            self._connected = True

    async def close(self) -> None:
        if self._connected:
            self._connected = False
            await self.backend.close()

    async def __aenter__(self) -> Queue:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def ping(self) -> None:
        await self.backend.ping()

    # --- topics -----------------------------------------------------------------

    async def create_topic(self, topic: str, partitions: int | None = None) -> int:
        """Create ``topic`` with ``partitions`` (default: the queue's default);
        returns the count it has, which is fixed once the topic exists, since
        changing it would move keys between partitions and break their order."""
        check_name("topic", topic)
        wanted = self.default_partitions if partitions is None else partitions
        if not 1 <= wanted <= 1024:
            raise ValueError("partitions must be between 1 and 1024")
        count = await self.backend.create_topic(topic, wanted)
        self._partitions[topic] = count
        return count

    async def partitions(self, topic: str, *, create: bool = True) -> int:
        count = self._partitions.get(topic)
        if count is not None:
            return count
        count = await self.backend.partition_count(check_name("topic", topic))
        if count is None:
            if not create:
                raise UnknownTopic(topic)
            partitions = 1 if topic.endswith(DLQ_SUFFIX) else None
            return await self.create_topic(topic, partitions)
        self._partitions[topic] = count
        return count

    # --- publishing -------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        payload: Any,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Append one message; returns its id (``<partition>-<offset>``) once stored.

        ``payload`` is bytes, str (sent as UTF-8) or anything JSON can encode.
        Messages with the same ``key`` go to one partition and are consumed in
        the order they were published.
        """
        ids = await self.publish_batch(topic, [OutgoingMessage(payload, key, headers)])
        return ids[0]

    async def publish_batch(
        self, topic: str, messages: Iterable[OutgoingMessage | Any]
    ) -> list[str]:
        """Append many messages in one round trip where the engine allows;
        items are ``OutgoingMessage`` or bare payloads. Ids come back in order."""
        count = await self.partitions(topic)
        now = self.clock.time()
        records = []
        for item in messages:
            m = item if isinstance(item, OutgoingMessage) else OutgoingMessage(item)
            if m.key is not None and not isinstance(m.key, str):
                raise ValueError("a message key must be a str")
            records.append(
                Record(
                    partition=partition_for(m.key, count, self._round_robin),
                    key=m.key,
                    payload=encode_payload(m.payload),
                    headers=check_headers(m.headers),
                    timestamp=now,
                )
            )
        if not records:
            return []
        offsets = await self.backend.append(topic, records)
        return [f"{r.partition}-{o}" for r, o in zip(records, offsets, strict=True)]

    # --- consuming --------------------------------------------------------------

    def subscribe(
        self,
        topic: str,
        group: str,
        handler: Handler,
        *,
        concurrency: int = 8,
        max_attempts: int = 5,
        visibility_timeout: float = 30.0,
        backoff: Backoff | None = None,
        batch_size: int = 100,
        start: StartPosition = "earliest",
        poll_wait: float = 1.0,
    ) -> Subscription:
        """A consumer in ``group`` running ``handler`` for each message.

        The handler acknowledges a message by returning; raising retries it
        after ``backoff``, in place (later messages of the same partition
        wait, keeping key order), up to ``max_attempts`` deliveries in all,
        then moves it to ``<topic>.dlq`` with the last error and goes on. A
        handler running longer than ``visibility_timeout`` is cancelled and
        counts as a failure; a consumer that dies leaves its partitions to
        the group's other members once its leases lapse after the same time.
        ``concurrency`` bounds handlers running at once across the
        partitions this member holds. A new group starts at the topic's
        first retained message (``earliest``) or at its end (``latest``).
        """
        check_name("topic", topic)
        check_name("group", group)
        if concurrency < 1 or max_attempts < 1 or batch_size < 1:
            raise ValueError("concurrency, max_attempts and batch_size must be at least 1")
        if visibility_timeout <= 0:
            raise ValueError("visibility_timeout must be positive")
        return Subscription(
            self,
            topic,
            group,
            handler,
            concurrency=concurrency,
            max_attempts=max_attempts,
            visibility_timeout=visibility_timeout,
            backoff=backoff or Backoff(),
            batch_size=batch_size,
            start=start,
            poll_wait=poll_wait,
        )

    def subscribe_batch(
        self,
        topic: str,
        group: str,
        handler: BatchHandler,
        **options: Any,
    ) -> Subscription:
        """``subscribe`` for a handler of many messages at once: each call gets
        the messages fetched from one partition together (up to ``batch_size``,
        in partition order), and returning acknowledges all of them.

        When the handler raises, or when any message of the batch was
        delivered before (its consumer died or timed out on it), the messages
        are handled one at a time instead, each as ``[message]`` with the
        retries and dead letters of ``subscribe``: one bad message never holds
        up or dead-letters the others. The handler must therefore be safe to
        run again on messages of a batch that failed part of the way.
        """
        subscription = self.subscribe(topic, group, _one_at_a_time(handler), **options)
        subscription.batch_handler = handler
        return subscription

    async def dead_letter(self, message: Message, error: str) -> str:
        """Move ``message`` to ``<topic>.dlq`` with why it failed."""
        headers = dict(message.headers)
        headers.update(
            {
                "dlq-topic": message.topic,
                "dlq-id": message.id,
                "dlq-error": error[:2000],
                "dlq-attempts": str(message.attempt),
                "dlq-failed-at": f"{self.clock.time():.3f}",
            }
        )
        return await self.publish(
            message.topic + DLQ_SUFFIX, message.payload, key=message.key, headers=headers
        )

    # --- replay and introspection -----------------------------------------------

    async def reset(
        self,
        topic: str,
        group: str,
        *,
        to_time: float | None = None,
        to_offset: int | Mapping[int, int] | StartPosition | None = None,
    ) -> dict[int, int]:
        """Move a stopped group to a time (seconds since the epoch) or to
        offsets (one for every partition, a ``{partition: offset}`` map, or
        ``earliest``/``latest``). Returns each partition's new position.
        Raises ``GroupActive`` while any member of the group is alive."""
        if (to_time is None) == (to_offset is None):
            raise ValueError("give exactly one of to_time and to_offset")
        count = await self.partitions(topic, create=False)
        await self.backend.create_group(topic, check_name("group", group), "earliest")
        if await self.backend.members(topic, group):
            raise GroupActive(f"group {group!r} of {topic!r} has live members; stop them first")
        positions: dict[int, int] = {}
        for p in range(count):
            if to_time is not None:
                target = await self.backend.offset_for_time(topic, p, to_time)
            elif to_offset == "earliest":
                first = await self.backend.read(topic, p, 0, 1)
                target = first[0].offset if first else await self.backend.end_offset(topic, p)
            elif to_offset == "latest":
                target = await self.backend.end_offset(topic, p)
            elif isinstance(to_offset, Mapping):
                if p not in to_offset:
                    continue
                target = int(to_offset[p])
            else:
                target = int(to_offset)  # type: ignore[arg-type]
            await self.backend.seek(topic, group, p, target)
            positions[p] = target
        return positions

    async def topics(self) -> list[TopicInfo]:
        out = []
        for name in await self.backend.list_topics():
            out.append(
                TopicInfo(
                    name=name,
                    partitions=await self.partitions(name, create=False),
                    messages=await self.backend.message_count(name),
                    groups=await self.backend.list_groups(name),
                )
            )
        return out

    async def lag(self, topic: str, group: str | None = None) -> list[GroupLag]:
        """Unacknowledged messages per partition for ``group`` (or every group)."""
        await self.partitions(topic, create=False)
        groups = [group] if group else await self.backend.list_groups(topic)
        return [
            GroupLag(
                topic,
                g,
                await self.backend.lag(topic, g),
                await self.backend.owners(topic, g),
            )
            for g in groups
        ]

    async def dead_letters(self, topic: str, limit: int = 100) -> list[Message]:
        """Messages in ``<topic>.dlq`` not yet replayed, oldest first."""
        dlq = topic + DLQ_SUFFIX
        if await self.backend.partition_count(dlq) is None:
            return []
        await self.backend.create_group(dlq, REPLAY_GROUP, "earliest")
        start = await self.backend.position(dlq, REPLAY_GROUP, 0)
        return await self.backend.read(dlq, 0, start, limit)

    async def dead_letter_depth(self, topic: str) -> int:
        dlq = topic + DLQ_SUFFIX
        if await self.backend.partition_count(dlq) is None:
            return 0
        await self.backend.create_group(dlq, REPLAY_GROUP, "earliest")
        return sum((await self.backend.lag(dlq, REPLAY_GROUP)).values())

    async def replay_dead_letters(self, topic: str, limit: int | None = None) -> int:
        """Publish dead letters back to ``topic`` (original key and headers,
        attempts starting afresh), oldest first; returns how many. A crash
        midway may publish one batch twice, never lose one."""
        dlq = topic + DLQ_SUFFIX
        if await self.backend.partition_count(dlq) is None:
            return 0
        await self.backend.create_group(dlq, REPLAY_GROUP, "earliest")
        member = f"replay-{time.time_ns()}"
        if not await self.backend.acquire(dlq, REPLAY_GROUP, 0, member, 60.0):
            raise GroupActive(f"dead letters of {topic!r} are being replayed elsewhere")
        replayed = 0
        try:
            while limit is None or replayed < limit:
                want = 500 if limit is None else min(500, limit - replayed)
                batch = await self.backend.fetch(dlq, REPLAY_GROUP, 0, member, want, 0.0)
                if not batch:
                    break
                await self.publish_batch(
                    topic,
                    [
                        OutgoingMessage(
                            m.payload,
                            m.key,
                            {k: v for k, v in m.headers.items() if not k.startswith("dlq-")},
                        )
                        for m in batch
                    ],
                )
                await self.backend.ack(dlq, REPLAY_GROUP, 0, member, batch)
                await self.backend.renew(dlq, REPLAY_GROUP, 0, member, 60.0)
                replayed += len(batch)
        finally:
            await self.backend.release(dlq, REPLAY_GROUP, 0, member)
        return replayed
