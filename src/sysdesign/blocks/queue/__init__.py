"""The ``queue`` block: a partitioned durable log with consumer groups.

``open_queue(url)`` picks the backend from the URL's scheme:

- ``memory://``: in-process, for tests;
- ``sqlite:///path/queue.db``: the embedded default, durable across restarts;
- ``redis://host:port/db``: Redis Streams (XADD, XREADGROUP, XAUTOCLAIM);
- ``nats://host:port``: NATS JetStream.

``?partitions=N`` sets the partition count of topics created on first use.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from sysdesign.blocks.queue.base import (
    DLQ_SUFFIX,
    EVENT_ID_HEADER,
    GroupActive,
    InvalidName,
    Message,
    QueueBackend,
    QueueError,
    UnknownTopic,
)
from sysdesign.blocks.queue.consumer import Backoff, Subscription, SubscriptionStats
from sysdesign.blocks.queue.queue import GroupLag, OutgoingMessage, Queue, TopicInfo
from sysdesign.platform.clock import Clock
from sysdesign.platform.errors import ConfigurationError

__all__ = [
    "DLQ_SUFFIX",
    "EVENT_ID_HEADER",
    "Backoff",
    "GroupActive",
    "GroupLag",
    "InvalidName",
    "Message",
    "OutgoingMessage",
    "Queue",
    "QueueBackend",
    "QueueError",
    "Subscription",
    "SubscriptionStats",
    "TopicInfo",
    "UnknownTopic",
    "open_queue",
]


def _backend(url: str, clock: Clock | None) -> QueueBackend:
    scheme = urlsplit(url).scheme.split("+")[0]
    if scheme == "memory":
        from sysdesign.blocks.queue.memory import MemoryQueueBackend

        return MemoryQueueBackend(clock)
    if scheme == "sqlite":
        from sysdesign.blocks.queue.sqlite import SqliteQueueBackend

        return SqliteQueueBackend.from_url(url, clock)
    if scheme in ("redis", "rediss"):
        try:
            from sysdesign.blocks.queue.redis import RedisQueueBackend
        except ImportError:
            raise ConfigurationError(
                "the redis queue backend needs redis-py: pip install 'sysdesign[redis]'"
            ) from None
        return RedisQueueBackend.from_url(url, clock)
    if scheme in ("nats", "tls"):
        try:
            from sysdesign.blocks.queue.nats import NatsQueueBackend
        except ImportError:
            raise ConfigurationError(
                "the nats queue backend needs nats-py: pip install 'sysdesign[nats]'"
            ) from None
        return NatsQueueBackend.from_url(url, clock)
    raise ConfigurationError(
        f"unsupported queue URL scheme {scheme!r}: use memory://, sqlite:///path, redis:// "
        "or nats://"
    )


def open_queue(url: str, *, clock: Clock | None = None) -> Queue:
    """A ``Queue`` on the backend named by ``url`` (not yet connected)."""
    query = dict(parse_qsl(urlsplit(url).query))
    try:
        partitions = int(query.get("partitions", 8))
    except ValueError:
        raise ConfigurationError(f"queue URL: partitions must be an integer in {url!r}") from None
    if not 1 <= partitions <= 1024:
        raise ConfigurationError("queue URL: partitions must be between 1 and 1024")
    return Queue(_backend(url, clock), clock=clock, default_partitions=partitions)
