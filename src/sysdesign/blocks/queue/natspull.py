"""Pulling a NATS JetStream consumer's messages, and what one partition holder has pulled."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from sysdesign.blocks.queue.base import QueueError
from sysdesign.blocks.queue.natsapi import PENDING_LIMITS


class Puller:
    """Pull requests to one consumer through one inbox, one request at a time.

    Messages arrive in stream order on the inbox whichever request they
    answer, so one arriving after its ``pull`` stopped waiting is returned,
    in order, by the next ``pull``. A request ends when its batch is full or
    with a status: 404 nothing there, 408 expired (with ``no_wait`` and
    ``expires`` the server also ends it as soon as it has delivered some).
    """

    def __init__(self, conn: Client, stream: str, consumer: str) -> None:
        self._conn = conn
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = conn.new_inbox()
        self._buffer: deque[Msg] = deque()
        self._wake = asyncio.Event()
        self._requests = itertools.count(1)
        self._reply = ""
        self._want = 0
        self._ended = self._gone = False
        self._lock = asyncio.Lock()
        self._sub: Subscription | None = None

    async def open(self) -> Puller:
        self._sub = await self._conn.subscribe(
            f"{self._inbox}.*", cb=self._on_msg, **PENDING_LIMITS
        )
        return self

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        self._wake.set()
        if sub is not None and not self._conn.is_closed:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def _on_msg(self, msg: Msg) -> None:
        if msg.reply:  # a message; statuses have no reply subject
            self._buffer.append(msg)
            if len(self._buffer) >= self._want:
                self._wake.set()
        elif msg.subject == self._reply:
            # 503: no one serves the consumer any more (a newer generation replaced it).
            self._gone = (msg.headers or {}).get("Status") == "503"
            self._ended = True
            self._wake.set()

    async def pull(self, limit: int, wait: float, grace: float) -> list[Msg]:
        async with self._lock:
            if self._sub is None:
                raise QueueError("the partition was acquired again or released: fetch ended")
            if not self._buffer:
                # A plain no-wait request is served faster than one with ``expires``;
                # only when nothing is there does a request linger.
                await self._request(limit, 0.0, grace)
                if not self._buffer and not self._gone and wait > 0:
                    await self._request(limit, wait, grace)
                if self._gone and not self._buffer:
                    raise QueueError("the partition's consumer was replaced: its lease moved on")
            return [self._buffer.popleft() for _ in range(min(limit, len(self._buffer)))]

    async def _request(self, limit: int, wait: float, grace: float) -> None:
        self._reply = f"{self._inbox}.{next(self._requests)}"
        self._want, self._ended = limit, False
        self._wake.clear()
        body: dict[str, Any] = {"batch": limit, "no_wait": True}
        if wait > 0:
            body["expires"] = int(wait * 1e9)
        await self._conn.publish(self._next, orjson.dumps(body), reply=self._reply)
        # Past ``grace`` the server is unreachable: give up; late messages stay buffered.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait + grace):
                while not self._ended and len(self._buffer) < limit and self._sub:
                    await self._wake.wait()
                    self._wake.clear()


@dataclass
class Session:
    """What one holder of a partition has been given since its ``acquire``."""

    member: str
    puller: Puller
    next_offset: int  # anything below that JetStream delivers again is dropped
    rounds: int
    below: int
    unacked: deque[tuple[int, Msg]] = field(default_factory=deque)

    def attempt(self, offset: int) -> int:
        return 1 + self.rounds if offset < self.below else 1
