"""The Redis Streams backend: one stream per partition, native consumer groups.

Keys, all under the URL's ``prefix`` (default ``sysdesign``):

- ``{prefix}:topics``: HASH of topic -> partition count (HSETNX: the first count wins);
- ``{prefix}:q:{topic}:{p}``: the STREAM of partition ``p``; each entry holds
  ``payload``, ``ts`` (the record's timestamp), and ``key`` and ``headers``
  (JSON) when present;
- ``{prefix}:groups:{topic}``: SET of the topic's consumer groups, each a
  Redis consumer group on every partition stream;
- ``{prefix}:members:{topic}:{group}``: ZSET of live members scored by the
  expiry of their heartbeat, in Redis server milliseconds;
- ``{prefix}:lease:{topic}:{group}:{p}``: STRING naming the partition's
  holder, expiring with the lease (PX).

Delivery: ``acquire`` takes the lease and moves the group's whole pending
entries list for the partition to the new holder (XAUTOCLAIM, in the same
Lua script, so both happen at once). The holder's fetches then read that
pending history first, in stream order, and switch to new entries (``>``)
once it is exhausted. ``attempt`` is the entry's Redis delivery count: 1 when
read as new, raised by one each time a holder reads it again from its
history; claiming with JUSTID leaves it alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from sysdesign.blocks.queue.base import (
    Message,
    QueueBackend,
    QueueError,
    Record,
    StartPosition,
    UnknownTopic,
    encode_headers,
)
from sysdesign.platform.clock import Clock
from sysdesign.platform.errors import BackendUnavailable, ConfigurationError
from sysdesign.platform.redisurl import redact

# Offsets pack a stream entry id ``ms-seq`` into one int: ``ms << 20 | seq``.
# That keeps the ids' order, and round-trips exactly, while ``seq < 2**20``.
# Entries get their ids from ``*``: ``seq`` restarts at 0 each new millisecond
# and only grows while Redis reuses one (many appends within a millisecond, or
# until the server's clock catches up after stepping back). Passing 2**20 would
# take over a million appends to one partition in that time. Milliseconds need
# 42 bits until the year 2109, so offsets fit a signed 64-bit integer.
_SEQ_BITS = 20
_SEQ_MASK = (1 << _SEQ_BITS) - 1
# Read by the queue, not passed on; replies must stay bytes.
_QUERY_OPTIONS = ("prefix", "partitions", "decode_responses")

# KEYS: lease, stream. ARGV: member, ttl ms, group. The pending entries move
# to the new holder before the lease is set, so a failing XAUTOCLAIM (no such
# group) leaves the lease as it was. Returns -1 when another member holds it,
# else how many pending entries the holder now has.
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return -1 end
local cursor, claimed = '0-0', 0
repeat
  local reply = redis.call('XAUTOCLAIM', KEYS[2], ARGV[3], ARGV[1], 0, cursor,
                           'COUNT', 1000, 'JUSTID')
  cursor = reply[1]
  claimed = claimed + #reply[2]
until cursor == '0-0'
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return claimed
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: members. ARGV: member ('' only reads), ttl ms. Server time, so every
# process agrees on who has expired.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[1] ~= '' then redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1]) end
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""
# KEYS: stream. ARGV: exclusive start. Counts on the server: no entry crosses the network.
_COUNT = """
local n, start = 0, ARGV[1]
while true do
  local batch = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', 1000)
  n = n + #batch
  if #batch < 1000 then return n end
  start = '(' .. batch[#batch][1]
end
"""


def _offset(entry_id: bytes) -> int:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms) << _SEQ_BITS | int(seq)


def _entry_id(offset: int) -> str:
    return f"{offset >> _SEQ_BITS}-{offset & _SEQ_MASK}"


def _ms(seconds: float) -> int:
    return max(int(seconds * 1000), 1)


def _message(
    topic: str, partition: int, entry_id: bytes, flat: list[bytes] | None, attempt: int = 1
) -> Message:
    """A Message from an entry's fields as sent. ``append`` writes ``payload``
    and ``ts`` first, then ``key`` and ``headers`` when present: reading them by
    place rather than through a dict keeps fetch fast."""
    if not flat or flat[0] != b"payload" or flat[2] != b"ts":
        raise QueueError(f"stream entry {entry_id.decode()} is gone or not this queue's")
    key: str | None = None
    headers: dict[str, str] | None = None
    for n in range(4, len(flat), 2):
        if flat[n] == b"key":
            key = flat[n + 1].decode()
        elif flat[n] == b"headers":
            headers = orjson.loads(flat[n + 1])
    offset = _offset(entry_id)
    return Message(topic, partition, offset, key, flat[1], headers or {}, float(flat[3]), attempt)


def _entries(reply: Any) -> list[Any]:
    """The ``[id, fields]`` entries of a one-stream XREADGROUP reply as sent: a
    list of ``[stream, entries]`` (RESP2) or a map of stream to entries (RESP3)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return next(iter(reply.values()))
    return reply[0][1]


def _unparsed(response: Any, **options: Any) -> Any:
    return response


def _group_info(groups: list[dict[str, Any]], group: str) -> dict[str, Any]:
    wanted = group.encode()
    for info in groups:
        if info["name"] == wanted:
            return info
    raise QueueError(f"consumer group {group!r} is missing from a partition stream")


@dataclass(slots=True)
class _ReadState:
    """Where one holder's fetches stand in one partition, since it acquired it."""

    cursor: int = 0  # offset of the last entry returned to the holder
    pending: int | None = None  # entries left in its pending history; None: unknown


@dataclass(frozen=True, slots=True)
class _Scripts:
    acquire: AsyncScript
    renew: AsyncScript
    release: AsyncScript
    heartbeat: AsyncScript
    count_after: AsyncScript


class RedisQueueBackend(QueueBackend):
    """The queue on Redis Streams: one Redis server, 6.2 or later (XAUTOCLAIM,
    exclusive ranges); not a cluster, as one Lua script touches a lease and a stream.

    Leases and membership use Redis's own clock (PX, TIME), so processes on
    different hosts agree without synchronised clocks. ``fetch`` trusts its
    caller to hold the partition's lease, as ``Subscription`` does: it is not
    checked on the hot path.
    """

    name = "redis"
    durable = True

    def __init__(self, url: str, *, prefix: str = "sysdesign", clock: Clock | None = None) -> None:
        self._url = url
        self._prefix = prefix
        # Lease and membership time come from the server, so the clock is unused.
        self._clock = clock
        self._client: Redis | None = None
        self._scripts: _Scripts | None = None
        self._partitions: dict[str, int] = {}  # counts never change once set
        self._reads: dict[tuple[str, str, int, str], _ReadState] = {}
        self._topics_key = f"{prefix}:topics"

    @classmethod
    def from_url(cls, url: str, clock: Clock | None = None) -> RedisQueueBackend:
        """``redis://[user:password@]host:port/db?prefix=NAME``; other query
        parameters go to redis-py."""
        parts = urlsplit(url)
        prefix = "sysdesign"
        kept: list[tuple[str, str]] = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name == "prefix":
                prefix = value
            elif name not in _QUERY_OPTIONS:
                kept.append((name, value))
        if not prefix:
            raise ConfigurationError(f"queue URL: prefix must not be empty in {redact(url)}")
        return cls(urlunsplit(parts._replace(query=urlencode(kept))), prefix=prefix, clock=clock)

    # --- keys -------------------------------------------------------------------

    def _stream(self, topic: str, partition: int) -> str:
        return f"{self._prefix}:q:{topic}:{partition}"

    def _lease(self, topic: str, group: str, partition: int) -> str:
        return f"{self._prefix}:lease:{topic}:{group}:{partition}"

    def _members(self, topic: str, group: str) -> str:
        return f"{self._prefix}:members:{topic}:{group}"

    def _groups(self, topic: str) -> str:
        return f"{self._prefix}:groups:{topic}"

    @property
    def _r(self) -> Redis:
        if self._client is None:
            raise QueueError("the redis queue backend is not connected")
        return self._client

    @property
    def _lua(self) -> _Scripts:
        if self._scripts is None:
            raise QueueError("the redis queue backend is not connected")
        return self._scripts

    # --- lifecycle --------------------------------------------------------------

    async def connect(self) -> None:
        if self._client is not None:
            return
        try:
            client = Redis.from_url(self._url, socket_connect_timeout=5.0)
        except ValueError as exc:
            raise ConfigurationError(f"queue URL {redact(self._url)}: {exc}") from None
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            await client.aclose()
            reason = " ".join(str(exc).split()) or exc.__class__.__name__
            raise BackendUnavailable(
                f"cannot reach Redis at {redact(self._url)}: {reason}"
            ) from None
        self._client = client
        # Messages are built from stream entries as sent (see _message); this
        # client is the backend's own, so no other code sees these replies.
        for command in ("XREADGROUP", "XRANGE", "XREVRANGE"):
            client.set_response_callback(command, _unparsed)
        self._scripts = _Scripts(
            *(client.register_script(s) for s in (_ACQUIRE, _RENEW, _RELEASE, _HEARTBEAT, _COUNT))
        )

    async def close(self) -> None:
        client, self._client, self._scripts = self._client, None, None
        self._reads.clear()
        if client is not None:
            await client.aclose()

    async def ping(self) -> None:
        await self._r.ping()

    async def destroy(self) -> None:
        pattern = re.sub(r"([\\*?\[\]])", r"\\\1", self._prefix) + ":*"
        batch: list[bytes] = []
        async for key in self._r.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                await self._r.unlink(*batch)
                batch.clear()
        if batch:
            await self._r.unlink(*batch)
        self._partitions.clear()
        self._reads.clear()

    # --- topics and the log -----------------------------------------------------

    async def _count(self, topic: str) -> int:
        count = await self.partition_count(topic)
        if count is None:
            raise UnknownTopic(topic)
        return count

    async def create_topic(self, topic: str, partitions: int) -> int:
        pipe = self._r.pipeline(transaction=False)
        pipe.hsetnx(self._topics_key, topic, partitions)
        pipe.hget(self._topics_key, topic)
        _, stored = await pipe.execute()
        count = self._partitions[topic] = int(stored)
        return count

    async def partition_count(self, topic: str) -> int | None:
        count = self._partitions.get(topic)
        if count is None:
            stored = await self._r.hget(self._topics_key, topic)
            if stored is None:
                return None
            count = self._partitions[topic] = int(stored)
        return count

    async def list_topics(self) -> list[str]:
        return sorted(name.decode() for name in await self._r.hkeys(self._topics_key))

    async def message_count(self, topic: str) -> int:
        pipe = self._r.pipeline(transaction=False)
        for p in range(await self._count(topic)):
            pipe.xlen(self._stream(topic, p))
        return sum(await pipe.execute())

    async def append(self, topic: str, records: Sequence[Record]) -> list[int]:
        count = self._partitions.get(topic) or await self._count(topic)
        commands = []
        for r in records:
            if not 0 <= r.partition < count:
                raise ValueError(f"partition {r.partition} out of range for {topic!r}")
            fields: list[Any] = [b"payload", r.payload, b"ts", r.timestamp]
            if r.key is not None:
                fields += (b"key", r.key)
            headers = encode_headers(r.headers)
            if headers is not None:
                fields += (b"headers", headers)
            commands.append((b"XADD", self._stream(topic, r.partition), b"*", *fields))
        if len(commands) == 1:
            return [_offset(await self._r.execute_command(*commands[0]))]
        # One round trip for the batch; one connection keeps each partition's order.
        pipe = self._r.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return [_offset(entry_id) for entry_id in await pipe.execute()]

    async def read(self, topic: str, partition: int, start: int, limit: int) -> list[Message]:
        await self._count(topic)
        if limit < 1:
            return []
        found = await self._r.xrange(
            self._stream(topic, partition), _entry_id(max(start, 0)), "+", count=limit
        )
        return [_message(topic, partition, i, f) for i, f in found]

    async def offset_for_time(self, topic: str, partition: int, timestamp: float) -> int:
        # Entry ids carry the server's append time in milliseconds; rounding down
        # errs towards replaying one millisecond more rather than skipping any.
        ms = max(int(timestamp * 1000), 0)
        await self._count(topic)
        found = await self._r.xrange(self._stream(topic, partition), f"{ms}-0", "+", count=1)
        return _offset(found[0][0]) if found else await self.end_offset(topic, partition)

    async def end_offset(self, topic: str, partition: int) -> int:
        await self._count(topic)
        last = await self._r.xrevrange(self._stream(topic, partition), "+", "-", count=1)
        return _offset(last[0][0]) + 1 if last else 0

    # --- consumer groups --------------------------------------------------------

    async def create_group(self, topic: str, group: str, start: StartPosition) -> None:
        start_id = "$" if start == "latest" else "0"
        pipe = self._r.pipeline(transaction=False)
        for p in range(await self._count(topic)):
            pipe.xgroup_create(self._stream(topic, p), group, id=start_id, mkstream=True)
        pipe.sadd(self._groups(topic), group)
        for result in await pipe.execute(raise_on_error=False):
            # BUSYGROUP: the group exists on that partition already and keeps its place.
            if isinstance(result, Exception) and not str(result).startswith("BUSYGROUP"):
                raise result

    async def list_groups(self, topic: str) -> list[str]:
        await self._count(topic)
        return sorted(g.decode() for g in await self._r.smembers(self._groups(topic)))

    async def heartbeat(self, topic: str, group: str, member: str, ttl: float) -> list[str]:
        live = await self._lua.heartbeat(
            keys=[self._members(topic, group)], args=[member, _ms(ttl)]
        )
        return sorted(m.decode() for m in live)

    async def members(self, topic: str, group: str) -> list[str]:
        live = await self._lua.heartbeat(keys=[self._members(topic, group)], args=["", 0])
        return sorted(m.decode() for m in live)

    async def leave(self, topic: str, group: str, member: str) -> None:
        await self._r.zrem(self._members(topic, group), member)

    async def acquire(
        self, topic: str, group: str, partition: int, member: str, ttl: float
    ) -> bool:
        claimed = await self._lua.acquire(
            keys=[self._lease(topic, group, partition), self._stream(topic, partition)],
            args=[member, _ms(ttl), group],
        )
        if claimed < 0:
            return False
        # Delivery restarts at the first unacknowledged entry: the whole pending
        # history, now this member's, is read again before anything new.
        self._reads[(topic, group, partition, member)] = _ReadState(pending=int(claimed))
        return True

    async def renew(self, topic: str, group: str, partition: int, member: str, ttl: float) -> bool:
        lease = self._lease(topic, group, partition)
        return bool(await self._lua.renew(keys=[lease], args=[member, _ms(ttl)]))

    async def release(self, topic: str, group: str, partition: int, member: str) -> None:
        await self._lua.release(keys=[self._lease(topic, group, partition)], args=[member])
        self._reads.pop((topic, group, partition, member), None)

    async def owners(self, topic: str, group: str) -> dict[int, str]:
        leases = [self._lease(topic, group, p) for p in range(await self._count(topic))]
        holders = await self._r.mget(leases)
        return {p: h.decode() for p, h in enumerate(holders) if h is not None}

    async def fetch(
        self, topic: str, group: str, partition: int, member: str, limit: int, wait: float
    ) -> list[Message]:
        if limit < 1:
            return []
        state = self._reads.setdefault((topic, group, partition, member), _ReadState())
        if state.pending != 0:
            found = await self._fetch_history(topic, group, partition, member, limit, state)
            if found:
                return found
        # The hot path: one XREADGROUP for entries no holder has been given yet.
        block = _ms(wait) if wait > 0 else None
        stream = self._stream(topic, partition)
        try:
            reply = await self._r.xreadgroup(group, member, {stream: ">"}, count=limit, block=block)
        except BaseException:
            # The server may have delivered entries this call never returned:
            # they sit in the member's pending list, so read it again next time.
            state.pending = None
            raise
        entries = _entries(reply)
        if not entries:
            return []
        state.cursor = _offset(entries[-1][0])
        return [_message(topic, partition, i, f) for i, f in entries]

    async def _fetch_history(
        self, topic: str, group: str, partition: int, member: str, limit: int, state: _ReadState
    ) -> list[Message]:
        """The member's pending entries after its cursor, topped up with new
        entries when the history is known to be shorter than ``limit``."""
        stream = self._stream(topic, partition)
        want = limit if state.pending is None else min(state.pending, limit)
        top_up = 0 if state.pending is None else limit - want
        since = _entry_id(state.cursor)
        # A transaction, so the delivery counts read are those of the entries just read.
        pipe = self._r.pipeline(transaction=True)
        pipe.xreadgroup(group, member, {stream: since}, count=want)
        low = "-" if state.cursor == 0 else f"({since}"
        pipe.xpending_range(stream, group, low, "+", want, consumername=member)
        if top_up:
            pipe.xreadgroup(group, member, {stream: ">"}, count=top_up)
        try:
            replies = await pipe.execute()
        except BaseException:
            state.pending = None
            raise
        history = _entries(replies[0])
        counts = {p["message_id"]: p["times_delivered"] for p in replies[1]}
        # A history entry was delivered before this read, so it is at least a second attempt.
        found = [_message(topic, partition, i, f, counts.get(i, 2)) for i, f in history if f]
        gone = [i for i, f in history if not f]
        if gone:  # trimmed from the stream while pending: nothing left to deliver
            await self._r.xack(stream, group, *gone)
        if len(history) < want:
            state.pending = 0
        elif state.pending is not None:
            state.pending -= len(history)
        if top_up:
            found += [_message(topic, partition, i, f) for i, f in _entries(replies[2])]
        if found:
            state.cursor = found[-1].offset
        return found

    async def ack(
        self, topic: str, group: str, partition: int, member: str, messages: Sequence[Message]
    ) -> None:
        if messages:
            # Bytes, formatted here rather than by _entry_id: this is the hot path.
            ids = [b"%d-%d" % (m.offset >> _SEQ_BITS, m.offset & _SEQ_MASK) for m in messages]
            await self._r.xack(self._stream(topic, partition), group, *ids)

    async def seek(self, topic: str, group: str, partition: int, offset: int) -> None:
        # Recreating the group at the entry before ``offset`` clears its pending
        # list and sets where delivery resumes, atomically.
        stream = self._stream(topic, partition)
        pipe = self._r.pipeline(transaction=True)
        pipe.xgroup_destroy(stream, group)
        pipe.xgroup_create(stream, group, id=_entry_id(max(offset - 1, 0)), mkstream=True)
        pipe.sadd(self._groups(topic), group)
        await pipe.execute()
        for read in [k for k in self._reads if k[:3] == (topic, group, partition)]:
            del self._reads[read]

    async def position(self, topic: str, group: str, partition: int) -> int:
        stream = self._stream(topic, partition)
        pipe = self._r.pipeline(transaction=False)
        pipe.xpending(stream, group)
        pipe.xinfo_groups(stream)
        pipe.xrevrange(stream, "+", "-", count=1)
        summary, groups, last = await pipe.execute()
        if summary["pending"]:
            return _offset(summary["min"])
        end = _offset(last[0][0]) + 1 if last else 0
        delivered: bytes = _group_info(groups, group)["last-delivered-id"]
        if _offset(delivered) + 1 >= end:
            return end
        after = await self._r.xrange(stream, b"(" + delivered, "+", count=1)
        return _offset(after[0][0]) if after else end

    async def lag(self, topic: str, group: str) -> dict[int, int]:
        count = await self._count(topic)
        pipe = self._r.pipeline(transaction=False)
        pipe.sismember(self._groups(topic), group)
        for p in range(count):
            pipe.xinfo_groups(self._stream(topic, p))
        known, *infos = await pipe.execute(raise_on_error=False)
        if isinstance(known, Exception):
            raise known
        if not known:
            return {}
        out: dict[int, int] = {}
        for p, groups in enumerate(infos):
            if isinstance(groups, Exception):
                raise groups
            info = _group_info(groups, group)
            # Redis 7 counts undelivered entries itself, except after the group
            # was placed at an arbitrary id (seek): then count them on the server.
            behind = info.get("lag")
            if behind is None:
                behind = await self._lua.count_after(
                    keys=[self._stream(topic, p)], args=[b"(" + info["last-delivered-id"]]
                )
            out[p] = int(info["pending"]) + int(behind)
        return out
