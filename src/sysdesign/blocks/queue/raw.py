"""The anchors of ``sysdesign bench queue``: the raw client loops, written the
way a user of redis-py or nats-py would write them without this block.

Consuming calls the same trivial async handler once per message that the
``Queue`` consumer calls, so both sides do the same work per message.

Each measures on its own keys/stream under the URL's ``prefix`` and deletes
them afterwards. Payloads carry only the bytes (no key, headers or timestamp
fields): the plainest use of each engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit


def _split(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    prefix = dict(parse_qsl(parts.query)).get("prefix", "bench")
    return urlunsplit(parts._replace(query="")), prefix


def _share(n: int, partition: int, partitions: int) -> int:
    """How many of messages ``0..n-1`` went to ``partition`` (message i goes to i mod P):
    each drain stops as soon as its own stream is empty, as the subject's consumer does."""
    return len(range(partition, n, partitions))


async def handle(message: object) -> None:
    """The benchmark's handler: does nothing, on both sides."""


class RawRedis:
    def __init__(self, url: str, payload: bytes, partitions: int) -> None:
        self.url, self.prefix = _split(url)
        self.payload = payload
        self.partitions = partitions
        self.round = 0

    async def __aenter__(self) -> RawRedis:
        import redis.asyncio as aioredis

        self.client: Any = aioredis.from_url(self.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        keys = [k async for k in self.client.scan_iter(match=f"{self.prefix}:raw:*", count=1000)]
        if keys:
            await self.client.delete(*keys)
        await self.client.aclose()

    def _stream(self, i: int) -> str:
        return f"{self.prefix}:raw:{self.round}:{i % self.partitions}"

    async def publish(self, i: int) -> None:
        await self.client.xadd(self._stream(i), {"payload": self.payload})

    async def publish_batch(self, size: int) -> None:
        await self.publish_batch_range(0, size)

    async def consume(self, n: int) -> float:
        self.round += 1
        for start in range(0, n, 1000):
            await self.publish_batch_range(start, min(start + 1000, n))
        streams = [self._stream(p) for p in range(self.partitions)]
        for stream in streams:
            await self.client.xgroup_create(stream, "g", id="0", mkstream=True)

        async def drain(p: int) -> None:
            stream, remaining = streams[p], _share(n, p, self.partitions)
            while remaining > 0:
                reply = await self.client.xreadgroup("g", "c", {stream: ">"}, count=500, block=200)
                if not reply:
                    continue
                ids = []
                for entry_id, fields in reply[0][1]:
                    await handle(fields)
                    ids.append(entry_id)
                await self.client.xack(stream, "g", *ids)
                remaining -= len(ids)

        start = time.perf_counter()
        await asyncio.gather(*(drain(p) for p in range(self.partitions)))
        return n / (time.perf_counter() - start)

    async def publish_batch_range(self, start: int, end: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        for i in range(start, end):
            pipe.xadd(self._stream(i), {"payload": self.payload})
        await pipe.execute()


class RawNats:
    def __init__(self, url: str, payload: bytes, partitions: int) -> None:
        self.url, self.prefix = _split(url)
        self.payload = payload
        self.partitions = partitions
        self.round = 0

    async def __aenter__(self) -> RawNats:
        import nats

        self.nc: Any = await nats.connect(self.url, connect_timeout=5, max_reconnect_attempts=1)
        self.js: Any = self.nc.jetstream()
        await self._stream()
        return self

    async def _stream(self) -> None:
        await self.js.add_stream(
            name=f"{self.prefix}_RAW{self.round}", subjects=[f"{self.prefix}.raw{self.round}.*"]
        )

    async def __aexit__(self, *exc: object) -> None:
        for r in range(self.round + 1):
            with contextlib.suppress(Exception):  # already gone is fine
                await self.js.delete_stream(f"{self.prefix}_RAW{r}")
        await self.nc.close()

    def _subject(self, i: int) -> str:
        return f"{self.prefix}.raw{self.round}.{i % self.partitions}"

    async def publish(self, i: int) -> None:
        await self.js.publish(self._subject(i), self.payload)

    async def publish_batch(self, size: int) -> None:
        await asyncio.gather(
            *(self.js.publish(self._subject(i), self.payload) for i in range(size))
        )

    async def consume(self, n: int) -> float:
        self.round += 1
        await self._stream()
        for start in range(0, n, 1000):
            await asyncio.gather(
                *(
                    self.js.publish(self._subject(i), self.payload)
                    for i in range(start, min(start + 1000, n))
                )
            )

        async def drain(p: int) -> None:
            remaining = _share(n, p, self.partitions)
            sub = await self.js.pull_subscribe(self._subject(p), durable=f"g{p}")
            while remaining > 0:
                try:
                    msgs = await sub.fetch(500, timeout=0.2)
                except TimeoutError:
                    continue
                for msg in msgs:
                    await handle(msg)
                    await msg.ack()
                remaining -= len(msgs)

        start = time.perf_counter()
        await asyncio.gather(*(drain(p) for p in range(self.partitions)))
        return n / (time.perf_counter() - start)


RAW_CLIENTS: dict[str, Any] = {"redis": RawRedis, "nats": RawNats}
