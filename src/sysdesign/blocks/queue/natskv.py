"""The NATS queue backend's key-value bookkeeping: what the log cannot hold.

Each topic's groups, each group's members and each partition's lease live
in one JetStream key-value bucket, and every change is a compare-and-set on
the key's revision, so concurrent writers in any process never lose one
another's updates.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import orjson
from nats.aio.msg import Msg

from sysdesign.blocks.queue.base import QueueError
from sysdesign.blocks.queue.natsapi import (
    CAS_TRIES,
    STREAM_NAME_IN_USE,
    WRONG_LAST_SEQUENCE,
    JetStreamApi,
    JetStreamError,
    NoResponders,
    token,
)

T = TypeVar("T")


def key_for(kind: str, topic: str, group: str = "", partition: int | None = None) -> str:
    """The key of a topic's (``kind`` "g"), a group's ("m") or a partition's ("l") entry."""
    parts = [kind, token(topic)] + ([token(group)] if group else [])
    return ".".join(parts + ([str(partition)] if partition is not None else []))


@dataclass(slots=True)
class Lease:
    """A partition's lease as the bucket stores it."""

    owner: str | None = None
    expires: float = 0.0  # wall-clock seconds: leases are compared across processes
    rounds: int = 0  # redeliveries so far of the first unacknowledged message
    below: int = 0  # unacknowledged offsets below this are redeliveries

    @classmethod
    def load(cls, raw: bytes | None) -> Lease:
        return cls(**orjson.loads(raw)) if raw else cls()

    def dump(self) -> bytes:
        return orjson.dumps(self)


class KeyValue:
    """One key-value bucket, ``KV_<bucket>``, reached through one ``JetStreamApi``.

    The bucket is created on first use and again if it is deleted under us.
    Values are read with direct gets and written only if the key is still at
    the revision read.
    """

    def __init__(self, api: JetStreamApi, bucket: str) -> None:
        self._api = api
        self._bucket = bucket
        self._ready = False
        self._lock = asyncio.Lock()

    async def _setup(self) -> None:
        # Created on first use, so that connecting (to ``destroy``, say) leaves nothing behind.
        async with self._lock:
            if self._ready:
                return
            bucket = self._bucket
            config = {
                "name": f"KV_{bucket}",
                "subjects": [f"$KV.{bucket}.>"],
                "max_msgs_per_subject": 1,
                "discard": "new",
                "allow_direct": True,
                "allow_rollup_hdrs": True,
                "deny_delete": True,
                "storage": "file",
                "num_replicas": 1,
            }
            try:
                await self._api.call(f"STREAM.CREATE.KV_{bucket}", config)
            except JetStreamError as exc:
                if exc.err_code != STREAM_NAME_IN_USE:
                    raise
            self._ready = True

    async def _request(
        self, subject: str, payload: bytes = b"", headers: dict[str, str] | None = None
    ) -> Msg:
        for _ in range(2):
            if not self._ready:
                await self._setup()
            try:
                return await self._api.request(subject, payload, headers)
            except NoResponders:
                self._ready = False  # deleted under us (``destroy`` elsewhere): make it again
        raise QueueError(f"the queue's key-value bucket KV_{self._bucket} is unavailable")

    async def get(self, key: str) -> tuple[bytes | None, int]:
        """The key's value and revision; ``(None, 0)`` when it is absent."""
        bucket = self._bucket
        msg = await self._request(f"$JS.API.DIRECT.GET.KV_{bucket}.$KV.{bucket}.{key}")
        headers = msg.headers or {}
        if "Status" in headers:  # 404: no such key
            return None, 0
        return msg.data, int(headers["Nats-Sequence"])

    async def put(self, key: str, value: bytes, revision: int) -> bool:
        """Write ``value`` if the key is still at ``revision`` (0: absent)."""
        expect = {"Nats-Expected-Last-Subject-Sequence": str(revision)}
        msg = await self._request(f"$KV.{self._bucket}.{key}", value, expect)
        error = orjson.loads(msg.data).get("error")
        if error and int(error.get("err_code", 0)) == WRONG_LAST_SEQUENCE:
            return False
        if error:
            raise JetStreamError(error)
        return True

    async def change(self, key: str, change: Callable[[bytes | None], tuple[bytes | None, T]]) -> T:
        """Read-modify-write under compare-and-set; ``change`` returns the new
        value (``None``: leave it) and the result."""
        for _ in range(CAS_TRIES):
            raw, revision = await self.get(key)
            value, result = change(raw)
            if value is None or await self.put(key, value, revision):
                return result
            await asyncio.sleep(random.uniform(0, 0.005))  # let the other writer through
        raise QueueError(f"gave up updating {key!r}: too many concurrent writers")

    async def destroy(self) -> None:
        """Delete the bucket; the next use creates it again."""
        await self._api.delete(f"STREAM.DELETE.KV_{self._bucket}")
        self._ready = False
