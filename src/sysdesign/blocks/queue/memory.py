"""The in-process backend: the whole contract in dictionaries, for tests.

Nothing survives the process. Offsets are dense per partition; the
per-group bookkeeping is the same as the sqlite backend's: an acknowledged
high-water mark, a delivered high-water mark, and a redelivery round that
raises ``attempt`` for what an earlier lease holder was given and did not
acknowledge.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from sysdesign.blocks.queue.base import Message, QueueBackend, Record, StartPosition, UnknownTopic
from sysdesign.platform.clock import Clock, SystemClock


@dataclass
class _Cursor:
    """One group's place in one partition; offsets are exclusive ends."""

    acked: int = 0  # every offset below is consumed
    delivered: int = 0  # every offset below has been given to some holder
    redeliver_below: int = 0  # offsets below this (and >= acked) are redeliveries
    rounds: int = 0  # redeliveries so far of the message at ``acked``
    owner: str | None = None
    expires: float = 0.0
    fetched: int = 0  # the current holder's read position

    def on_acquire(self) -> None:
        if self.delivered > self.acked:
            self.redeliver_below = self.delivered
            self.rounds += 1
        self.fetched = self.acked

    def attempt(self, offset: int) -> int:
        return 1 + self.rounds if offset < self.redeliver_below else 1

    def on_ack(self, through: int) -> None:
        if through > self.acked:
            self.acked = through
            if self.acked >= self.redeliver_below:
                self.rounds = 0
            self.delivered = max(self.delivered, self.acked)
            self.fetched = max(self.fetched, self.acked)


@dataclass
class _Topic:
    partitions: list[list[Message]]
    times: list[list[float]]
    groups: dict[str, list[_Cursor]] = field(default_factory=dict)
    members: dict[str, dict[str, float]] = field(default_factory=dict)


class MemoryQueueBackend(QueueBackend):
    name = "memory"
    durable = False

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._topics: dict[str, _Topic] = {}
        self._appended = asyncio.Event()

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def destroy(self) -> None:
        self._topics.clear()

    def _topic(self, topic: str) -> _Topic:
        try:
            return self._topics[topic]
        except KeyError:
            raise UnknownTopic(topic) from None

    # --- topics and the log -----------------------------------------------------

    async def create_topic(self, topic: str, partitions: int) -> int:
        existing = self._topics.get(topic)
        if existing is None:
            existing = self._topics[topic] = _Topic(
                [[] for _ in range(partitions)], [[] for _ in range(partitions)]
            )
        return len(existing.partitions)

    async def partition_count(self, topic: str) -> int | None:
        found = self._topics.get(topic)
        return None if found is None else len(found.partitions)

    async def list_topics(self) -> list[str]:
        return sorted(self._topics)

    async def message_count(self, topic: str) -> int:
        return sum(len(p) for p in self._topic(topic).partitions)

    async def append(self, topic: str, records: Sequence[Record]) -> list[int]:
        t = self._topic(topic)
        offsets = []
        for r in records:
            log = t.partitions[r.partition]
            offset = len(log)
            log.append(
                Message(topic, r.partition, offset, r.key, r.payload, dict(r.headers), r.timestamp)
            )
            t.times[r.partition].append(r.timestamp)
            offsets.append(offset)
        # Wake every waiting fetch; each checks its own partition.
        self._appended.set()
        self._appended = asyncio.Event()
        return offsets

    async def read(self, topic: str, partition: int, start: int, limit: int) -> list[Message]:
        log = self._topic(topic).partitions[partition]
        return log[max(start, 0) : max(start, 0) + limit]

    async def offset_for_time(self, topic: str, partition: int, timestamp: float) -> int:
        times = self._topic(topic).times[partition]
        # Timestamps come from wall clocks that may step back; scan rather than bisect
        # when they are out of order.
        if all(a <= b for a, b in itertools.pairwise(times)):
            return bisect.bisect_left(times, timestamp)
        return next((i for i, ts in enumerate(times) if ts >= timestamp), len(times))

    async def end_offset(self, topic: str, partition: int) -> int:
        return len(self._topic(topic).partitions[partition])

    # --- consumer groups --------------------------------------------------------

    async def create_group(self, topic: str, group: str, start: StartPosition) -> None:
        t = self._topic(topic)
        if group in t.groups:
            return
        cursors = []
        for log in t.partitions:
            at = len(log) if start == "latest" else 0
            cursors.append(_Cursor(acked=at, delivered=at, fetched=at))
        t.groups[group] = cursors

    async def list_groups(self, topic: str) -> list[str]:
        return sorted(self._topic(topic).groups)

    async def heartbeat(self, topic: str, group: str, member: str, ttl: float) -> list[str]:
        now = self._clock.monotonic()
        members = self._topic(topic).members.setdefault(group, {})
        members[member] = now + ttl
        for name, expires in list(members.items()):
            if expires <= now:
                del members[name]
        return sorted(members)

    async def members(self, topic: str, group: str) -> list[str]:
        now = self._clock.monotonic()
        found = self._topic(topic).members.get(group, {})
        return sorted(m for m, expires in found.items() if expires > now)

    async def leave(self, topic: str, group: str, member: str) -> None:
        self._topic(topic).members.get(group, {}).pop(member, None)

    def _cursor(self, topic: str, group: str, partition: int) -> _Cursor:
        return self._topic(topic).groups[group][partition]

    async def acquire(
        self, topic: str, group: str, partition: int, member: str, ttl: float
    ) -> bool:
        c = self._cursor(topic, group, partition)
        now = self._clock.monotonic()
        if c.owner not in (None, member) and c.expires > now:
            return False
        c.owner, c.expires = member, now + ttl
        c.on_acquire()
        return True

    async def renew(self, topic: str, group: str, partition: int, member: str, ttl: float) -> bool:
        c = self._cursor(topic, group, partition)
        now = self._clock.monotonic()
        if c.owner != member or c.expires <= now:
            return False
        c.expires = now + ttl
        return True

    async def release(self, topic: str, group: str, partition: int, member: str) -> None:
        c = self._cursor(topic, group, partition)
        if c.owner == member:
            c.owner, c.expires = None, 0.0

    async def owners(self, topic: str, group: str) -> dict[int, str]:
        now = self._clock.monotonic()
        cursors = self._topic(topic).groups.get(group, [])
        return {p: c.owner for p, c in enumerate(cursors) if c.owner and c.expires > now}

    async def fetch(
        self, topic: str, group: str, partition: int, member: str, limit: int, wait: float
    ) -> list[Message]:
        log = self._topic(topic).partitions[partition]
        c = self._cursor(topic, group, partition)
        if c.fetched >= len(log) and wait > 0:
            appended = self._appended
            try:
                await asyncio.wait_for(appended.wait(), wait)
            except TimeoutError:
                return []
        batch = log[c.fetched : c.fetched + limit]
        if not batch:
            return []
        c.fetched = batch[-1].offset + 1
        c.delivered = max(c.delivered, c.fetched)
        return [replace(m, attempt=c.attempt(m.offset)) for m in batch]

    async def ack(
        self, topic: str, group: str, partition: int, member: str, messages: Sequence[Message]
    ) -> None:
        if messages:
            self._cursor(topic, group, partition).on_ack(max(m.offset for m in messages) + 1)

    async def seek(self, topic: str, group: str, partition: int, offset: int) -> None:
        c = self._cursor(topic, group, partition)
        c.acked = c.delivered = c.fetched = max(offset, 0)
        c.redeliver_below, c.rounds = 0, 0

    async def position(self, topic: str, group: str, partition: int) -> int:
        return self._cursor(topic, group, partition).acked

    async def lag(self, topic: str, group: str) -> dict[int, int]:
        t = self._topic(topic)
        cursors = t.groups.get(group)
        if cursors is None:
            return {}
        return {p: max(len(t.partitions[p]) - c.acked, 0) for p, c in enumerate(cursors)}
