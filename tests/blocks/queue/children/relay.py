"""A relay process that dies at the worst moment: ``relay.py QUEUE_URL DB_URL``.

It publishes the pending outbox rows and is killed with SIGKILL after the
publish and before its transaction marking the rows published commits.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

from sysdesign.blocks.queue import open_queue
from sysdesign.blocks.queue.relay import OutboxRelay
from sysdesign.platform import outbox
from sysdesign.platform.db import ShardRouter


async def die(*args: Any, **kwargs: Any) -> int:
    os.kill(os.getpid(), signal.SIGKILL)
    return 0


async def main(queue_url: str, db_url: str) -> None:
    queue = open_queue(queue_url)
    await queue.connect()
    outbox.mark_published = die  # type: ignore[assignment]
    await OutboxRelay(ShardRouter.from_urls([db_url]), queue).run_once()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:3]))
