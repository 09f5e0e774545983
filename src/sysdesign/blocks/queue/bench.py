"""``sysdesign bench queue``: throughput and latency per backend, beside the raw client.

For every backend it measures, with 1 KiB payloads:

- publish: messages/s from concurrent publishers, one message per call;
- batch publish: messages/s in batches of 100;
- consume: messages/s for a consumer group draining a backlog (trivial handler);
- end-to-end latency p50/p99: publish to handler, one message at a time.

For Redis and NATS the same loops run on the raw client in the same run
(redis-py XADD / XREADGROUP+XACK; nats-py JetStream publish / pull fetch+ack),
and the result states our throughput as a ratio of theirs. Rounds alternate
ours and raw so drift on a shared machine hits both alike; the median of the
rounds is reported.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sysdesign.benchmarks import BenchmarkError
from sysdesign.benchmarks.machine import machine_info, package_versions
from sysdesign.benchmarks.results import median, utc_now, write_result
from sysdesign.blocks.queue import Message, OutgoingMessage, Queue, open_queue
from sysdesign.blocks.queue.raw import RAW_CLIENTS
from sysdesign.blocks.queue.raw import handle as raw_handle

PAYLOAD_BYTES = 1024
PARTITIONS = 8
PUBLISHERS = 32
BATCH = 100
LATENCY_SAMPLES = 500
GOAL_RATIO = 0.6
SQLITE_GOAL = 5000.0


async def _timed(n: int, run: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    await run()
    return n / (time.perf_counter() - start)


async def publish_rate(publish: Callable[[int], Awaitable[Any]], n: int) -> float:
    """Messages/s with ``PUBLISHERS`` tasks each awaiting one publish at a time."""
    counter = iter(range(n))

    async def publisher() -> None:
        for i in counter:
            await publish(i)

    return await _timed(n, lambda: _gather(publisher() for _ in range(PUBLISHERS)))


async def batch_rate(publish_batch: Callable[[int], Awaitable[Any]], n: int) -> float:
    """Messages/s publishing ``BATCH`` at a time from 4 tasks."""
    batches = iter(range(n // BATCH))

    async def publisher() -> None:
        for _ in batches:
            await publish_batch(BATCH)

    return await _timed(n // BATCH * BATCH, lambda: _gather(publisher() for _ in range(4)))


async def _gather(coros: Any) -> None:
    await asyncio.gather(*coros)


class OurQueue:
    """The measurements on a ``Queue``."""

    def __init__(self, url: str, payload: bytes) -> None:
        self.url = url
        self.payload = payload
        self.queue: Queue = open_queue(url)

    async def __aenter__(self) -> OurQueue:
        await self.queue.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.queue.backend.name != "sqlite":
            await self.queue.backend.destroy()
        await self.queue.close()

    async def fresh_topic(self) -> str:
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        await self.queue.create_topic(topic, PARTITIONS)
        return topic

    async def publish(self, n: int) -> float:
        topic = await self.fresh_topic()
        return await publish_rate(lambda i: self.queue.publish(topic, self.payload, key=str(i)), n)

    async def publish_batch(self, n: int) -> float:
        topic = await self.fresh_topic()
        keys = iter(range(n))
        return await batch_rate(
            lambda size: self.queue.publish_batch(
                topic, [OutgoingMessage(self.payload, str(next(keys))) for _ in range(size)]
            ),
            n,
        )

    async def consume(self, n: int) -> float:
        topic = await self.fresh_topic()
        for start in range(0, n, 1000):
            end = min(start + 1000, n)
            await self.queue.publish_batch(
                topic, [OutgoingMessage(self.payload, str(i)) for i in range(start, end)]
            )
        done = asyncio.Event()
        count = 0

        async def handle(message: Message) -> None:
            nonlocal count
            await raw_handle(message)
            count += 1
            if count >= n:
                done.set()

        start = time.perf_counter()
        sub = self.queue.subscribe(topic, "bench", handle, batch_size=500, poll_wait=0.2)
        async with sub:
            await asyncio.wait_for(done.wait(), 600)
            rate = n / (time.perf_counter() - start)
        return rate

    async def latency(self, samples: int) -> dict[str, float]:
        topic = await self.fresh_topic()
        arrived: dict[int, float] = {}
        got = asyncio.Event()

        async def handle(message: Message) -> None:
            arrived[int(message.headers["n"])] = time.perf_counter()
            got.set()

        sent: dict[int, float] = {}
        async with self.queue.subscribe(topic, "latency", handle, poll_wait=1.0):
            await asyncio.sleep(0.5)  # let the member take its partitions
            for i in range(samples):
                got.clear()
                sent[i] = time.perf_counter()
                await self.queue.publish(topic, self.payload, key=str(i), headers={"n": str(i)})
                await asyncio.wait_for(got.wait(), 30)
        millis = sorted((arrived[i] - sent[i]) * 1000 for i in sent)
        return {
            "p50_ms": round(statistics.median(millis), 3),
            "p99_ms": round(millis[int(len(millis) * 0.99) - 1], 3),
        }


def _backends(urls: dict[str, str | None]) -> list[tuple[str, str]]:
    return [(name, url) for name, url in urls.items() if url]


async def _measure(
    name: str, url: str, n: int, rounds: int, payload: bytes, console: Console
) -> dict[str, Any]:
    ours: dict[str, list[float]] = {"publish": [], "publish_batch": [], "consume": []}
    raw: dict[str, list[float]] = {"publish": [], "publish_batch": [], "consume": []}
    raw_factory = RAW_CLIENTS.get(name)
    for r in range(rounds):
        console.print(f"  {name}: round {r + 1}/{rounds}")
        async with OurQueue(url, payload) as subject:
            ours["publish"].append(await subject.publish(n))
            ours["publish_batch"].append(await subject.publish_batch(n))
            ours["consume"].append(await subject.consume(n))
        if raw_factory is not None:
            async with raw_factory(url, payload, PARTITIONS) as anchor:
                raw["publish"].append(await publish_rate(anchor.publish, n))
                raw["publish_batch"].append(await batch_rate(anchor.publish_batch, n))
                raw["consume"].append(await anchor.consume(n))
    async with OurQueue(url, payload) as subject:
        latency = await subject.latency(LATENCY_SAMPLES)
    result: dict[str, Any] = {
        "url": url.split("?")[0],
        "ours": {
            k: {"rounds": [round(v) for v in vs], "median": round(median(vs))}
            for k, vs in ours.items()
        },
        "latency": latency,
    }
    if raw_factory is not None:
        result["raw"] = {
            k: {"rounds": [round(v) for v in vs], "median": round(median(vs))}
            for k, vs in raw.items()
        }
        result["ratio"] = {
            k: round(median(ours[k]) / median(raw[k]), 3) for k in ours if median(raw[k]) > 0
        }
        result["goal"] = {
            "ratio_at_least": GOAL_RATIO,
            "met": all(v >= GOAL_RATIO for v in result["ratio"].values()),
        }
    if name == "sqlite":
        rate = result["ours"]["publish"]["median"]
        result["goal"] = {"durable_publish_per_s_at_least": SQLITE_GOAL, "met": rate >= SQLITE_GOAL}
    return result


def _report(result: dict[str, Any], path: Path, console: Console) -> None:
    table = Table(
        "backend",
        "publish/s",
        "batch/s",
        "consume/s",
        "p50 ms",
        "p99 ms",
        "vs raw (pub/batch/cons)",
    )
    for name, r in result["backends"].items():
        ratio = r.get("ratio")
        table.add_row(
            name,
            f"{r['ours']['publish']['median']:,}",
            f"{r['ours']['publish_batch']['median']:,}",
            f"{r['ours']['consume']['median']:,}",
            str(r["latency"]["p50_ms"]),
            str(r["latency"]["p99_ms"]),
            " / ".join(f"{ratio[k]:.2f}" for k in ("publish", "publish_batch", "consume"))
            if ratio
            else "-",
        )
    console.print(table)
    console.print(f"result: {path}")


def run_queue_bench(
    *,
    sqlite_dir: Path,
    redis_url: str | None,
    nats_url: str | None,
    messages: int,
    rounds: int,
    out_dir: str,
    console: Console,
) -> dict[str, Any]:
    if messages < BATCH * 4 or rounds < 1:
        raise BenchmarkError(f"messages must be at least {BATCH * 4} and rounds at least 1")
    payload = os.urandom(PAYLOAD_BYTES)
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    urls = {
        "memory": f"memory://?partitions={PARTITIONS}",
        "sqlite": f"sqlite:///{sqlite_dir}/bench-{prefix}.db",
        "redis": f"{redis_url}?prefix={prefix}" if redis_url else None,
        "nats": f"{nats_url}?prefix={prefix}" if nats_url else None,
    }
    moment = utc_now()

    async def run() -> dict[str, Any]:
        out = {}
        for name, url in _backends(urls):
            out[name] = await _measure(name, url, messages, rounds, payload, console)
        return out

    backends = asyncio.run(run())
    for file in sqlite_dir.glob(f"bench-{prefix}.db*"):
        file.unlink()
    result = {
        "benchmark": "queue",
        "description": "publish, batch publish and consume throughput and end-to-end latency"
        " per queue backend, beside the raw client loop on the same server",
        "timestamp": moment.isoformat().replace("+00:00", "Z"),
        "machine": machine_info(),
        "versions": package_versions(["redis", "hiredis", "nats-py"]),
        "parameters": {
            "messages": messages,
            "rounds": rounds,
            "payload_bytes": PAYLOAD_BYTES,
            "partitions": PARTITIONS,
            "publishers": PUBLISHERS,
            "batch": BATCH,
            "latency_samples": LATENCY_SAMPLES,
            "sqlite": "WAL, synchronous=FULL: every publish fsync'd before it returns",
        },
        "backends": backends,
    }
    path = write_result(out_dir, "queue", moment, result)
    _report(result, path, console)
    return result
