"""A publisher process for fault tests: ``publisher.py QUEUE_URL``.

Publishes to topic ``durable`` from 32 concurrent tasks forever, printing the
payload of every publish the backend acknowledged, one per line, flushed, so
a test that SIGKILLs it knows exactly what was acknowledged.
"""

from __future__ import annotations

import asyncio
import itertools
import sys

from sysdesign.blocks.queue import open_queue


async def main(queue_url: str) -> None:
    queue = open_queue(queue_url)
    await queue.connect()
    await queue.create_topic("durable", 4)
    counter = itertools.count()

    async def publish_forever() -> None:
        while True:
            n = next(counter)
            await queue.publish("durable", str(n), key=str(n % 16))
            sys.stdout.write(f"{n}\n")
            sys.stdout.flush()

    await asyncio.gather(*(publish_forever() for _ in range(32)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
