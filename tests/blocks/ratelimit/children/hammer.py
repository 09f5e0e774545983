"""One of several processes hitting shared keys:
``hammer.py STORE_URL NOW KEY LIMIT ATTEMPTS``.

Its clock stands still at NOW (seconds), so every process decides at the same
instant and no window moves. It connects, prints ``ready``, waits for a line
on stdin (so that all processes start together), then makes ATTEMPTS hits on
KEY under each algorithm of ``ALGORITHMS`` in turn (LIMIT per hour), from 16
concurrent tasks, and prints a JSON object of how many each admitted.
"""

from __future__ import annotations

import asyncio
import json
import sys

from sysdesign.blocks.ratelimit import Algorithm, Hit, Limit, open_store
from sysdesign.platform.clock import ManualClock

ALGORITHMS = (
    Algorithm.SLIDING_LOG,
    Algorithm.TOKEN_BUCKET,
    Algorithm.FIXED_WINDOW,
    Algorithm.GCRA,
)
TASKS = 16


async def main(url: str, now: str, key: str, limit: str, attempts: str) -> None:
    store = open_store(url, clock=ManualClock(start=float(now)))
    await store.connect()
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    hourly = Limit(int(limit), 3600.0)
    hits = [Hit(a, key, hourly) for _ in range(int(attempts)) for a in ALGORITHMS]
    admitted = {a.value: 0 for a in ALGORITHMS}

    async def worker(mine: list[Hit]) -> None:
        for hit in mine:
            if (await store.hit(hit)).allowed:
                admitted[hit.algorithm.value] += 1

    await asyncio.gather(*(worker(hits[i::TASKS]) for i in range(TASKS)))
    await store.close()
    print(json.dumps(admitted), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
