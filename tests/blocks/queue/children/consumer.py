"""A consumer process for fault tests: ``consumer.py QUEUE_URL DB_URL MARKER``.

Its visibility timeout is 3 s: a test that kills it waits that long for the lease.

It consumes topic ``work`` in group ``effects`` with the idempotent helper:
each message inserts one row into ``effects`` in the same transaction as its
inbox record. For the message whose payload is ``"hang"`` it commits, writes
MARKER and then hangs before acknowledging, so the test can SIGKILL it in the
window between the effect and the acknowledgement.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from sqlalchemy import text

from sysdesign.blocks.queue import Message, open_queue
from sysdesign.blocks.queue.idempotent import idempotent
from sysdesign.platform.clock import SystemClock
from sysdesign.platform.db import Database
from sysdesign.platform.ids import SnowflakeGenerator
from sysdesign.platform.uow import UnitOfWork


async def main(queue_url: str, db_url: str, marker: str) -> None:
    db = Database(db_url)
    ids = SnowflakeGenerator(7)
    clock = SystemClock()
    hang = asyncio.Event()

    async def effect(message: Message, uow: UnitOfWork) -> None:
        await uow.conn.execute(
            text("INSERT INTO effects (message) VALUES (:m)"), {"m": message.text()}
        )

    handler = idempotent("effects", lambda m: UnitOfWork(db, ids, clock), effect)

    async def handle(message: Message) -> None:
        await handler(message)
        if message.text() == "hang":
            await asyncio.to_thread(Path(marker).write_text, message.id)
            await hang.wait()  # never set: the test kills this process here

    queue = open_queue(queue_url)
    await queue.connect()
    async with queue.subscribe("work", "effects", handle, visibility_timeout=3, poll_wait=0.1):
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
