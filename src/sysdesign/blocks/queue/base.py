"""The queue contract: a partitioned, durable log with consumer groups.

The model is Kafka's. A *topic* is split into a fixed number of
*partitions*; a message goes to the partition its key hashes to (no key:
spread round-robin), and within a partition messages keep the order they
were appended in. A *consumer group* reads every message of a topic once
(every group sees every message); inside a group each partition is held by
one member at a time under a lease, so messages with the same key reach the
group one after another, in order.

Delivery is at least once. A message counts as consumed when its
acknowledgement is stored; until then it is redelivered: to the next holder
of its partition when the holder dies (its lease lapses after the visibility
timeout) or gives the partition up. ``Message.attempt`` says how many times
the group has been given a message; a message whose handler keeps failing is
moved to the topic ``<topic>.dlq`` after the subscription's
``max_attempts``.

This module holds the data types and ``QueueBackend``, the primitives each
engine implements (memory, sqlite, Redis Streams, NATS JetStream). Users
work with ``Queue`` (``queue.py``), which builds partitioning, consumer
groups with leases, retries, dead letters and replay on these primitives
once for every backend.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

# Header carrying a stable id for deduplication: the outbox event id when the
# relay published the message. A message republished after a relay crash has
# a new position in the log but the same event id.
EVENT_ID_HEADER = "sysdesign-event-id"
DLQ_SUFFIX = ".dlq"

StartPosition = Literal["earliest", "latest"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")


class QueueError(Exception):
    """Base class of the queue's own errors."""


class InvalidName(QueueError, ValueError):
    """A topic or group name outside ``[A-Za-z0-9][A-Za-z0-9_.-]{0,199}``."""


class UnknownTopic(QueueError, LookupError):
    """The topic has never been created or published to."""

    def __init__(self, topic: str) -> None:
        super().__init__(topic)
        self.topic = topic

    def __str__(self) -> str:
        return f"no topic named {self.topic!r}"


class GroupActive(QueueError):
    """The group has live members; stop them before resetting its offsets."""


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidName(
            f"invalid {kind} name {name!r}: use 1-200 of A-Z a-z 0-9 _ . -, starting with a "
            "letter or digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class Record:
    """A message on its way into the log, its partition already chosen."""

    partition: int
    key: str | None
    payload: bytes
    headers: Mapping[str, str]
    timestamp: float


@dataclass(frozen=True, slots=True)
class Message:
    """A message read from the log.

    ``offset`` increases with every message appended to a partition (it need
    not grow by one: some engines number all partitions of a topic from one
    sequence). ``attempt`` is 1 the first time the group is given the message
    and grows with every redelivery and retry.
    """

    topic: str
    partition: int
    offset: int
    key: str | None
    payload: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    timestamp: float = 0.0
    attempt: int = 1

    @property
    def id(self) -> str:
        """``<partition>-<offset>``: unique within the topic."""
        return f"{self.partition}-{self.offset}"

    @property
    def dedupe_key(self) -> str:
        """What an idempotent consumer records: the event id when there is one
        (stable across a republish), else the message's place in the log."""
        return self.headers.get(EVENT_ID_HEADER) or f"{self.topic}/{self.id}"

    def json(self) -> Any:
        return orjson.loads(self.payload)

    def text(self) -> str:
        return self.payload.decode()


def encode_payload(payload: Any) -> bytes:
    """bytes as they are, str as UTF-8, anything else as JSON."""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, (bytearray, memoryview)):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode()
    return orjson.dumps(payload)


def encode_headers(headers: Mapping[str, str] | None) -> bytes | None:
    return orjson.dumps(dict(headers)) if headers else None


def decode_headers(raw: bytes | str | None) -> dict[str, str]:
    return orjson.loads(raw) if raw else {}


def check_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    if not headers:
        return {}
    out: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str) or not name:
            raise ValueError("headers must map non-empty str names to str values")
        out[name] = value
    return out


class QueueBackend(ABC):
    """The primitives an engine provides. ``Queue`` calls them; users do not.

    Names reaching a backend are already checked by ``check_name``. A
    backend that cannot reach its server raises ``BackendUnavailable`` from
    ``connect``. Every method may be called from many tasks at once.
    """

    #: the URL scheme, for messages and benchmark results
    name: str = "?"
    #: whether an appended message survives the process (and, for servers, their restart)
    durable: bool = True

    # --- lifecycle --------------------------------------------------------------

    @abstractmethod
    async def connect(self) -> None:
        """Open connections and create the engine's own schema."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ping(self) -> None:
        """Raise if the engine does not answer."""

    @abstractmethod
    async def destroy(self) -> None:
        """Delete every topic, group, member and lease in this backend's
        namespace (its URL's ``prefix``); for tests and for starting over."""

    # --- topics and the log -----------------------------------------------------

    @abstractmethod
    async def create_topic(self, topic: str, partitions: int) -> int:
        """Create the topic if it is new; return its partition count, which
        never changes once set (the existing count wins)."""

    @abstractmethod
    async def partition_count(self, topic: str) -> int | None:
        """The topic's partition count, or ``None`` if it does not exist."""

    @abstractmethod
    async def list_topics(self) -> list[str]: ...

    @abstractmethod
    async def message_count(self, topic: str) -> int:
        """Messages retained in the topic, over all partitions."""

    @abstractmethod
    async def append(self, topic: str, records: Sequence[Record]) -> list[int]:
        """Append records to an existing topic; return their offsets, in order.

        When this returns, the records are stored as durably as the engine
        stores anything (fsync'd for sqlite); records for one partition keep
        their order in the list.
        """

    @abstractmethod
    async def read(self, topic: str, partition: int, start: int, limit: int) -> list[Message]:
        """Up to ``limit`` messages at offsets ``>= start``, in order; no group state."""

    @abstractmethod
    async def offset_for_time(self, topic: str, partition: int, timestamp: float) -> int:
        """The offset of the first message appended at or after ``timestamp``
        (seconds since the epoch), or ``end_offset`` if there is none."""

    @abstractmethod
    async def end_offset(self, topic: str, partition: int) -> int:
        """An offset greater than every offset in the partition so far."""

    # --- consumer groups --------------------------------------------------------

    @abstractmethod
    async def create_group(self, topic: str, group: str, start: StartPosition) -> None:
        """Create the group if it is new, reading from the partitions' first
        retained message (``earliest``) or from messages appended after now."""

    @abstractmethod
    async def list_groups(self, topic: str) -> list[str]: ...

    @abstractmethod
    async def heartbeat(self, topic: str, group: str, member: str, ttl: float) -> list[str]:
        """Record ``member`` as alive for ``ttl`` seconds; return every live
        member of the group, sorted."""

    @abstractmethod
    async def members(self, topic: str, group: str) -> list[str]:
        """The group's live members, sorted."""

    @abstractmethod
    async def leave(self, topic: str, group: str, member: str) -> None: ...

    @abstractmethod
    async def acquire(
        self, topic: str, group: str, partition: int, member: str, ttl: float
    ) -> bool:
        """Take the partition's lease for ``ttl`` seconds if it is free, has
        lapsed, or is already ``member``'s. On success the group's delivery in
        the partition restarts at its first unacknowledged message: what an
        earlier holder was given and did not acknowledge is given again, with
        a higher ``attempt``."""

    @abstractmethod
    async def renew(self, topic: str, group: str, partition: int, member: str, ttl: float) -> bool:
        """Extend ``member``'s lease; ``False`` if it has lapsed or moved on."""

    @abstractmethod
    async def release(self, topic: str, group: str, partition: int, member: str) -> None:
        """Give the lease up at once if ``member`` holds it; otherwise do nothing."""

    @abstractmethod
    async def owners(self, topic: str, group: str) -> dict[int, str]:
        """Partitions whose lease is held and unexpired, with their holder."""

    @abstractmethod
    async def fetch(
        self, topic: str, group: str, partition: int, member: str, limit: int, wait: float
    ) -> list[Message]:
        """The group's next messages in the partition, in offset order, after
        those already fetched since ``member`` acquired it; wait up to
        ``wait`` seconds for at least one. ``attempt`` is filled in."""

    @abstractmethod
    async def ack(
        self, topic: str, group: str, partition: int, member: str, messages: Sequence[Message]
    ) -> None:
        """Store that the group has consumed ``messages`` (one partition's,
        in offset order). Acknowledging twice is harmless."""

    @abstractmethod
    async def seek(self, topic: str, group: str, partition: int, offset: int) -> None:
        """Make ``offset`` the group's next message in the partition: earlier
        messages count as consumed, later ones as not yet delivered. Only
        called while no member holds the partition."""

    @abstractmethod
    async def position(self, topic: str, group: str, partition: int) -> int:
        """The offset of the group's first unacknowledged message in the
        partition, or ``end_offset`` when it has consumed everything."""

    @abstractmethod
    async def lag(self, topic: str, group: str) -> dict[int, int]:
        """Per partition, messages the group has not yet acknowledged."""
