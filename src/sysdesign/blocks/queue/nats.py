"""The NATS JetStream backend.

Layout, everything under the URL's ``prefix`` (default ``sysdesign``):

- one file-stored stream per topic, subjects ``<prefix>.<topic token>.<partition>``,
  its description holding the topic's name and partition count (the server's
  create is atomic, so the first count wins); offsets are stream sequences;
- one durable pull consumer per (group, partition), named
  ``<group token>_p<partition>_g<generation>``, acknowledging with
  ``AckPolicy.ALL``: one acknowledgement of a batch's last message stores the
  whole batch;
- one key-value bucket for what the log cannot hold: each topic's groups,
  each group's members and each partition's lease, all changed by
  compare-and-set on the key's revision.

JetStream redelivers what a consumer does not acknowledge after ``ack_wait``,
in no particular order. The contract wants delivery to restart at the
first unacknowledged message, in order, when a lease changes hands, so each
successful ``acquire`` (and ``seek``) creates the next generation of the
partition's consumer at that message and deletes the older ones; deleting a
consumer also ends the pull requests and acknowledgements of its previous
holder. ``attempt`` comes from a redelivery round stored with the lease,
as in the memory backend: what the old consumer had delivered and not had
acknowledged is a redelivery.

Consumers are looked up by name and asked for their info only when needed:
on older servers (seen on nats-server 2.9.10; 2.9.15 reworked how info
computes the pending count) an info request to a filtered consumer, also
made by CONSUMER.LIST, slows that consumer's deliveries down by orders of
magnitude for a long while. ``acquire`` asks only the consumer it replaces;
``lag`` and ``position`` must ask theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

import orjson
from nats.aio.client import Client

from sysdesign.blocks.queue.base import (
    Message,
    QueueBackend,
    QueueError,
    Record,
    StartPosition,
    UnknownTopic,
)
from sysdesign.blocks.queue.natsapi import (
    CAS_TRIES,
    JetStreamApi,
    JetStreamError,
    NoResponders,
    dial,
    offset_of,
    quiet_close,
    to_message,
)
from sysdesign.blocks.queue.natskv import KeyValue, Lease, key_for
from sysdesign.blocks.queue.natspull import Puller, Session
from sysdesign.blocks.queue.natsstreams import (
    TopicStreams,
    first_unacked,
    first_undelivered,
    stream_partitions,
)
from sysdesign.platform.clock import Clock, SystemClock
from sysdesign.platform.errors import BackendUnavailable, ConfigurationError

__all__ = ["JetStreamError", "NatsQueueBackend"]

_PREFIX = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_NOT_CONNECTED = "the NATS queue backend is not connected"


class NatsQueueBackend(QueueBackend):
    """The queue on NATS JetStream; see the module docstring for the layout.

    ``append`` pipelines a batch: every record is published before any
    acknowledgement is awaited. Records for one partition keep their order
    (and get increasing offsets) because one connection writes them in call
    order and the stream stores a connection's messages in arrival order.
    ``fetch`` and ``ack`` must come from the process whose ``acquire``
    succeeded: the holder's pull inbox and unacknowledged messages live in
    it. Everything else may be called from any process.
    """

    name = "nats"
    durable = True

    def __init__(
        self,
        servers: list[str],
        *,
        prefix: str = "sysdesign",
        clock: Clock | None = None,
        timeout: float = 5.0,
    ) -> None:
        if not _PREFIX.match(prefix):
            raise ConfigurationError(
                f"queue URL: prefix must be 1-64 of A-Z a-z 0-9 _ -, not {prefix!r}"
            )
        self.servers = servers
        self.prefix = prefix
        self._clock = clock or SystemClock()
        self._timeout = timeout
        self._bucket = f"{prefix}_queue"
        # One JetStream API, bucket and stream layout per connection.
        self._api: JetStreamApi | None = None
        self._kv: KeyValue | None = None
        self._topics: TopicStreams | None = None
        self._counts: dict[str, int] = {}
        self._sessions: dict[tuple[str, str, int], Session] = {}
        self._locks: dict[tuple[str, str, int], asyncio.Lock] = {}

    @classmethod
    def from_url(cls, url: str, clock: Clock | None = None) -> NatsQueueBackend:
        """``nats://[user:pass@]host:port[,host:port...]?prefix=NAME``, or ``tls://``."""
        parts = urlsplit(url)
        auth, _, hosts = parts.netloc.rpartition("@")
        auth = f"{auth}@" if auth else ""
        servers = [f"{parts.scheme}://{auth}{host}" for host in hosts.split(",") if host]
        prefix = dict(parse_qsl(parts.query)).get("prefix", "sysdesign")
        return cls(servers or [f"{parts.scheme}://127.0.0.1:4222"], prefix=prefix, clock=clock)

    # --- lifecycle --------------------------------------------------------------

    @property
    def api(self) -> JetStreamApi:
        if self._api is None:
            raise QueueError(_NOT_CONNECTED)
        return self._api

    @property
    def conn(self) -> Client:
        return self.api.conn

    @property
    def kv(self) -> KeyValue:
        if self._kv is None:
            raise QueueError(_NOT_CONNECTED)
        return self._kv

    @property
    def topics(self) -> TopicStreams:
        if self._topics is None:
            raise QueueError(_NOT_CONNECTED)
        return self._topics

    async def connect(self) -> None:
        if self._api is not None:
            return
        conn = await dial(self.servers, self._timeout)
        api = self._api = JetStreamApi(conn, self._timeout)
        self._kv = KeyValue(api, self._bucket)
        self._topics = TopicStreams(api, self.prefix)
        await api.open()
        try:
            await api.call("INFO")
        except (NoResponders, QueueError) as exc:
            self._api = self._kv = self._topics = None
            await quiet_close(conn)
            shown = ", ".join(s.rpartition("@")[2] for s in self.servers)
            raise BackendUnavailable(
                f"NATS at {shown} has no JetStream ({exc.__class__.__name__}): "
                "start nats-server with -js"
            ) from None

    async def close(self) -> None:
        api, self._api, self._kv, self._topics = self._api, None, None, None
        await self._drop_sessions()
        if api is not None:
            await quiet_close(api.conn)

    async def ping(self) -> None:
        await self.api.call("INFO")

    async def destroy(self) -> None:
        await self._drop_sessions()
        for stream in await self.topics.streams():
            await self.api.delete(f"STREAM.DELETE.{stream['config']['name']}")
        await self.kv.destroy()
        self._counts.clear()

    async def _drop_sessions(self) -> None:
        sessions = list(self._sessions.values())
        self._sessions.clear()
        for session in sessions:
            await session.puller.close()

    # --- topics and the log -----------------------------------------------------

    async def create_topic(self, topic: str, partitions: int) -> int:
        info = await self.topics.create(topic, partitions)
        count = self._counts[topic] = stream_partitions(info)
        return count

    async def partition_count(self, topic: str) -> int | None:
        if topic not in self._counts:
            try:
                info = await self.topics.info(topic)
            except UnknownTopic:
                return None
            self._counts[topic] = stream_partitions(info)
        return self._counts[topic]

    async def list_topics(self) -> list[str]:
        names = []
        for info in await self.topics.streams():
            with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
                names.append(orjson.loads(info["config"].get("description", ""))["topic"])
        return sorted(names)

    async def message_count(self, topic: str) -> int:
        return int((await self.topics.info(topic))["state"]["messages"])

    async def append(self, topic: str, records: Sequence[Record]) -> list[int]:
        return await self.topics.publish(topic, records)

    async def read(self, topic: str, partition: int, start: int, limit: int) -> list[Message]:
        start_at = {"deliver_policy": "by_start_sequence", "opt_start_seq": max(start, 1)}
        found = await self.topics.scan(topic, partition, start_at, limit)
        return [to_message(topic, partition, msg, 1) for msg in found]

    async def offset_for_time(self, topic: str, partition: int, timestamp: float) -> int:
        # JetStream's own append time, which the stream indexes; it matches the
        # publishers' timestamps as far as their clocks agree with the server's.
        when = datetime.fromtimestamp(max(timestamp, 0.0), UTC).isoformat()
        start_at = {"deliver_policy": "by_start_time", "opt_start_time": when}
        first = await self.topics.scan(topic, partition, start_at, 1)
        return offset_of(first[0]) if first else await self.end_offset(topic, partition)

    async def end_offset(self, topic: str, partition: int) -> int:
        return int((await self.topics.info(topic))["state"]["last_seq"]) + 1

    # --- consumer groups --------------------------------------------------------

    async def create_group(self, topic: str, group: str, start: StartPosition) -> None:
        key = key_for("g", topic)
        raw, _ = await self.kv.get(key)
        if raw and group in orjson.loads(raw):
            return
        count = await self.partition_count(topic)
        if count is None:
            raise UnknownTopic(topic)
        existing = await self.topics.consumers(topic, group)
        missing = [p for p in range(count) if p not in existing]
        if missing:
            first = 1
            if start == "latest":
                first = int((await self.topics.info(topic))["state"]["last_seq"]) + 1
            await asyncio.gather(
                *(self.topics.create_consumer(topic, group, p, 0, first) for p in missing)
            )

        def add(raw: bytes | None) -> tuple[bytes | None, None]:
            groups = set(orjson.loads(raw)) if raw else set()
            return (None if group in groups else orjson.dumps(sorted(groups | {group}))), None

        await self.kv.change(key, add)

    async def list_groups(self, topic: str) -> list[str]:
        raw, _ = await self.kv.get(key_for("g", topic))
        if raw is None and await self.partition_count(topic) is None:
            raise UnknownTopic(topic)
        return sorted(orjson.loads(raw)) if raw else []

    async def heartbeat(self, topic: str, group: str, member: str, ttl: float) -> list[str]:
        now = self._clock.time()

        def beat(raw: bytes | None) -> tuple[bytes, list[str]]:
            alive = {m: t for m, t in (orjson.loads(raw) if raw else {}).items() if t > now}
            alive[member] = now + ttl
            return orjson.dumps(alive), sorted(alive)

        return await self.kv.change(key_for("m", topic, group), beat)

    async def members(self, topic: str, group: str) -> list[str]:
        raw, _ = await self.kv.get(key_for("m", topic, group))
        now = self._clock.time()
        return sorted(m for m, t in (orjson.loads(raw) if raw else {}).items() if t > now)

    async def leave(self, topic: str, group: str, member: str) -> None:
        def drop(raw: bytes | None) -> tuple[bytes | None, None]:
            alive = orjson.loads(raw) if raw else {}
            return (orjson.dumps(alive) if alive.pop(member, None) is not None else None), None

        await self.kv.change(key_for("m", topic, group), drop)

    async def acquire(
        self, topic: str, group: str, partition: int, member: str, ttl: float
    ) -> bool:
        key = key_for("l", topic, group, partition)
        async with self._locks.setdefault((topic, group, partition), asyncio.Lock()):
            for _ in range(CAS_TRIES):
                raw, revision = await self.kv.get(key)
                lease, now = Lease.load(raw), self._clock.time()
                if lease.owner not in (None, member) and lease.expires > now:
                    return False
                old, info = await self.topics.current(topic, group, partition)
                acked, delivered = first_unacked(info), first_undelivered(info)
                if acked >= lease.below:
                    lease.rounds = 0  # what made the last round redeliveries is consumed
                if delivered > acked:
                    lease.below, lease.rounds = delivered, lease.rounds + 1
                lease.owner, lease.expires = member, now + ttl
                if await self.kv.put(key, lease.dump(), revision):
                    break
            else:
                return False
            # Delivery restarts at the first unacknowledged message: a new consumer there.
            name = await self.topics.replace_consumers(topic, group, partition, old, acked)
            puller = await Puller(self.conn, self.topics.stream(topic), name).open()
            session = Session(member, puller, acked, lease.rounds, lease.below)
            await self._install(topic, group, partition, session)
        return True

    async def _install(
        self, topic: str, group: str, partition: int, session: Session | None
    ) -> None:
        old = self._sessions.pop((topic, group, partition), None)
        if session is not None:
            self._sessions[(topic, group, partition)] = session
        if old is not None:
            await old.puller.close()

    async def renew(self, topic: str, group: str, partition: int, member: str, ttl: float) -> bool:
        now = self._clock.time()

        def extend(raw: bytes | None) -> tuple[bytes | None, bool]:
            lease = Lease.load(raw)
            if lease.owner != member or lease.expires <= now:
                return None, False
            lease.expires = now + ttl
            return lease.dump(), True

        return await self.kv.change(key_for("l", topic, group, partition), extend)

    async def release(self, topic: str, group: str, partition: int, member: str) -> None:
        def give_up(raw: bytes | None) -> tuple[bytes | None, None]:
            lease = Lease.load(raw)
            if lease.owner != member:
                return None, None
            lease.owner, lease.expires = None, 0.0
            return lease.dump(), None

        await self.kv.change(key_for("l", topic, group, partition), give_up)
        session = self._sessions.get((topic, group, partition))
        if session is not None and session.member == member:
            await self._install(topic, group, partition, None)

    async def owners(self, topic: str, group: str) -> dict[int, str]:
        count = await self.partition_count(topic)
        if count is None:
            raise UnknownTopic(topic)
        found = await asyncio.gather(
            *(self.kv.get(key_for("l", topic, group, p)) for p in range(count))
        )
        now, out = self._clock.time(), {}
        for partition, (raw, _) in enumerate(found):
            lease = Lease.load(raw)
            if lease.owner is not None and lease.expires > now:
                out[partition] = lease.owner
        return out

    async def fetch(
        self, topic: str, group: str, partition: int, member: str, limit: int, wait: float
    ) -> list[Message]:
        session = self._sessions.get((topic, group, partition))
        if session is None or session.member != member:
            raise QueueError(f"{member!r} has not acquired partition {partition} of {topic!r} here")
        if limit < 1:
            return []
        out = []
        for msg in await session.puller.pull(limit, max(wait, 0.0), self._timeout):
            offset = offset_of(msg)
            if offset < session.next_offset:
                continue  # JetStream redelivered it after ack_wait: this holder has it already
            session.next_offset = offset + 1
            session.unacked.append((offset, msg))
            out.append(to_message(topic, partition, msg, session.attempt(offset)))
        return out

    async def ack(
        self, topic: str, group: str, partition: int, member: str, messages: Sequence[Message]
    ) -> None:
        session = self._sessions.get((topic, group, partition))
        if session is None or not messages:
            return
        through, last = max(m.offset for m in messages), None
        while session.unacked and session.unacked[0][0] <= through:
            last = session.unacked.popleft()[1]
        if last is None:
            return  # acknowledged already
        # With AckPolicy.ALL this stores everything up to ``last``; the request returns
        # once the server has applied it. No responders: the consumer was replaced, and
        # its new holder is given these again.
        with contextlib.suppress(NoResponders):
            await self.api.request(last.reply, b"+ACK")

    async def seek(self, topic: str, group: str, partition: int, offset: int) -> None:
        async with self._locks.setdefault((topic, group, partition), asyncio.Lock()):
            old = (await self.topics.consumers(topic, group)).get(partition, [])
            await self.topics.replace_consumers(topic, group, partition, old, offset)

            def reset(raw: bytes | None) -> tuple[bytes | None, None]:
                if raw is None:
                    return None, None
                lease = Lease.load(raw)
                lease.rounds, lease.below = 0, 0
                return lease.dump(), None

            await self.kv.change(key_for("l", topic, group, partition), reset)
            await self._install(topic, group, partition, None)

    async def position(self, topic: str, group: str, partition: int) -> int:
        _, info = await self.topics.current(topic, group, partition)
        if info["num_pending"] + info["num_ack_pending"] > 0:
            # The first unacknowledged message: the partition's next one from the ack floor.
            found = await self.topics.next_offset(topic, partition, first_unacked(info))
            if found is not None:
                return found
        return await self.end_offset(topic, partition)

    async def lag(self, topic: str, group: str) -> dict[int, int]:
        consumers = await self.topics.consumers(topic, group)
        infos = await asyncio.gather(
            *(
                self.topics.current(topic, group, p, names[-1])
                for p, names in sorted(consumers.items())
            )
        )
        return {
            p: int(info["num_pending"]) + int(info["num_ack_pending"])
            for p, (_, info) in zip(sorted(consumers), infos, strict=True)
        }
