"""A lock client in its own process, for the multi-process tests.

``python -m tests.blocks.lock.worker count URL NAME COUNTER_FILE TASKS``: TASKS
concurrent holders each increment the number in COUNTER_FILE once, read and
write apart, inside the lock. ``... hold URL NAME TTL``: take the lock, print
``held <token>``, and keep it without renewing until killed.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from sysdesign.blocks.lock import open_locks


def _read(counter: Path) -> int:
    return int(counter.read_text() or "0")


def _write(counter: Path, value: int) -> None:
    counter.write_text(str(value))


async def count(url: str, name: str, counter: Path, tasks: int) -> None:
    locks = open_locks(url)
    await locks.connect()

    async def one() -> None:
        async with locks.hold(name, ttl=30):
            value = _read(counter)
            await asyncio.sleep(0.002)  # a window for a second writer, if the lock let one in
            _write(counter, value + 1)

    try:
        await asyncio.gather(*(one() for _ in range(tasks)))
    finally:
        await locks.close()


async def hold(url: str, name: str, ttl: float) -> None:
    locks = open_locks(url)
    await locks.connect()
    lease = await locks.acquire(name, ttl=ttl)
    print(f"held {lease.token}", flush=True)
    await asyncio.Event().wait()


def main(argv: list[str]) -> None:
    if argv[0] == "count":
        asyncio.run(count(argv[1], argv[2], Path(argv[3]), int(argv[4])))
    elif argv[0] == "hold":
        asyncio.run(hold(argv[1], argv[2], float(argv[3])))
    else:
        raise SystemExit(f"unknown command {argv[0]!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
