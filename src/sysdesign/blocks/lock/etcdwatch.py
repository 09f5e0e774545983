"""Watches of the etcd gateway client: ``EtcdClient.watch`` returns an ``EtcdWatch``.

A watch is one streaming ``POST /v3/watch`` that etcd answers with one JSON
object per line: first "created", then batches of events. The stream moves
to another endpoint when its member fails, from the revision after the last
event delivered, so a caller sees every change once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import httpx
import orjson

from sysdesign.blocks.lock.etcdtypes import (
    UNAVAILABLE,
    Bytes,
    EtcdCompacted,
    EtcdError,
    EtcdUnavailable,
    KeyValue,
    _b64,
    _error,
    _revision,
    prefix_end,
)

if TYPE_CHECKING:
    from sysdesign.blocks.lock.etcdapi import EtcdClient


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: Literal["PUT", "DELETE"]
    kv: KeyValue  # for DELETE: only key and mod_revision (the deletion's revision)
    prev_kv: KeyValue | None
    revision: int  # the response header's revision


class EtcdWatch:
    """A watch: ``async with client.watch(key) as events: async for event in events``.

    Entering waits until etcd confirms the watch, so every change after that
    is seen; ``revision`` is then the first revision the watch reports. Plain
    ``async for`` works too (it starts on first use); call ``aclose()`` then.
    When an endpoint fails the watch reconnects to the next one from the
    revision after the last event, so no event is lost or repeated; it raises
    ``EtcdUnavailable`` when no endpoint takes it, ``EtcdCompacted`` when the
    revisions it needs were compacted. Cancelling the task that iterates, or
    leaving the ``async with``, closes the stream.
    """

    def __init__(
        self, client: EtcdClient, key: Bytes, prefix: bool, start: int | None, prev_kv: bool
    ) -> None:
        self._client = client
        self._body: dict[str, Any] = {"key": _b64(key), "prev_kv": prev_kv}
        if prefix:
            self._body["range_end"] = _b64(prefix_end(key))
        self.revision = start
        self._events = self._run()
        self._started = False

    async def start(self) -> int:
        """Wait until etcd has created the watch; the first revision it reports."""
        if not self._started:
            self._started = True
            await anext(self._events)  # the generator yields None once created
        assert self.revision is not None
        return self.revision

    async def __aenter__(self) -> EtcdWatch:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> EtcdWatch:
        return self

    async def __anext__(self) -> WatchEvent:
        await self.start()
        event = await anext(self._events)
        assert event is not None
        return event

    async def aclose(self) -> None:
        await self._events.aclose()

    async def _run(self) -> AsyncGenerator[WatchEvent | None, None]:
        client = self._client
        count = len(client.endpoints)
        failures: list[str] = []
        announced = False
        # No read timeout: a quiet key sends nothing. A dead member closes the socket,
        # and the client's "hasleader" header makes a member that loses its leader
        # cancel the watch instead of streaming nothing while the cluster moves on.
        timeout = httpx.Timeout(client.timeout_seconds, read=None)
        while len(failures) < count:
            endpoint = client.endpoints[client._current]
            body = dict(self._body)
            if self.revision is not None:
                body["start_revision"] = str(self.revision)
            try:
                async with client._http.stream(
                    "POST",
                    endpoint + "/v3/watch",
                    content=orjson.dumps({"create_request": body}),
                    timeout=timeout,
                ) as response:
                    if response.status_code != 200:
                        raise _error(response.status_code, (await response.aread()).decode())
                    async for line in response.aiter_lines():
                        if not line.strip():
                            continue
                        data = orjson.loads(line)
                        if "error" in data:
                            raise _error(200, line)
                        result = data.get("result", {})
                        if result.get("compact_revision"):
                            compacted = int(result["compact_revision"])
                            raise EtcdCompacted(
                                f"revision {self.revision} is compacted (up to {compacted})",
                                compacted,
                            )
                        if result.get("canceled"):
                            raise EtcdError(f"watch canceled: {result.get('cancel_reason', '')}")
                        if result.get("created"):
                            failures.clear()
                            if self.revision is None:
                                self.revision = _revision(result) + 1
                            if not announced:
                                announced = True
                                yield None
                            continue
                        for item in result.get("events", ()):
                            kv = KeyValue.from_json(item.get("kv", {}))
                            prev = item.get("prev_kv")
                            kind: Literal["PUT", "DELETE"] = item.get("type", "PUT")
                            prev_kv = KeyValue.from_json(prev) if prev else None
                            # Resume after this event if the stream breaks while the
                            # caller holds it: etcd keeps one revision's events together.
                            self.revision = kv.mod_revision + 1
                            yield WatchEvent(kind, kv, prev_kv, _revision(result))
                failures.append(f"{endpoint}: stream ended")
            except httpx.TransportError as exc:
                failures.append(f"{endpoint}: {exc!r}")
            except EtcdError as exc:
                if exc.code != UNAVAILABLE or isinstance(exc, EtcdCompacted):
                    raise
                failures.append(f"{endpoint}: {exc.message}")
            client._current = (client.endpoints.index(endpoint) + 1) % count
            await asyncio.sleep(0)  # let a cancellation in before the next attempt
        raise EtcdUnavailable("no etcd endpoint kept the watch: " + "; ".join(failures))
