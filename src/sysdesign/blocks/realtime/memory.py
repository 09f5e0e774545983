"""``MemoryRealtime``: the realtime contract inside one process.

Publishing delivers to every subscription of this instance at once, before
``publish`` returns; other processes (and other instances) hear nothing.
The embedded default: one process serving the API is all it needs.
"""

from __future__ import annotations

from sysdesign.blocks.realtime.base import (
    Realtime,
    Subscription,
    check_channel,
    check_message,
)


class MemoryRealtime(Realtime):
    name = "memory"

    async def publish(self, channel: str, message: bytes) -> None:
        self._fanout.deliver(check_channel(channel), check_message(message))

    async def _attach(self, sub: Subscription) -> None:
        self._fanout.add(sub)

    async def _detach(self, sub: Subscription) -> None:
        self._fanout.remove(sub)
