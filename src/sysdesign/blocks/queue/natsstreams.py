"""The NATS queue backend's topic streams and the generations of their group consumers.

Stream, subject and consumer names follow the layout described in
``sysdesign.blocks.queue.nats``. Consumers are found by name
(``CONSUMER.NAMES``) and asked for their info only when a caller needs it,
for the reason that module gives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson
from nats.aio.msg import Msg

from sysdesign.blocks.queue.base import QueueError, Record, UnknownTopic
from sysdesign.blocks.queue.natsapi import (
    CAS_TRIES,
    STREAM_NAME_IN_USE,
    STREAM_NOT_FOUND,
    JetStreamApi,
    JetStreamError,
    NoResponders,
    encode_headers,
    escape,
    token,
)
from sysdesign.blocks.queue.natspull import Puller

_ACK_WAIT_NS = 12 * 3600 * 10**9  # leases decide visibility; JetStream must not redeliver
_EPHEMERAL_TTL_NS = 30 * 10**9


def first_unacked(info: dict[str, Any]) -> int:
    """The first offset the consumer has not had acknowledged."""
    start = int(info["config"].get("opt_start_seq", 0))
    return max(int(info["ack_floor"]["stream_seq"]) + 1, start)


def first_undelivered(info: dict[str, Any]) -> int:
    """The first offset the consumer has not delivered."""
    return max(int(info["delivered"]["stream_seq"]) + 1, first_unacked(info))


def stream_partitions(info: dict[str, Any]) -> int:
    """A topic's partition count, from its stream's info."""
    return int(orjson.loads(info["config"]["description"])["partitions"])


class TopicStreams:
    """The streams of the topics under one prefix, and their consumers.

    A partition's consumers are named ``<group token>_p<partition>_g<generation>``;
    the newest generation is the one in use.
    """

    def __init__(self, api: JetStreamApi, prefix: str) -> None:
        self._api = api
        self._prefix = prefix

    def stream(self, topic: str) -> str:
        return f"{escape(self._prefix)}_t{token(topic)}"

    def subject(self, topic: str, partition: int) -> str:
        return f"{self._prefix}.{token(topic)}.{partition}"

    async def call(
        self, topic: str, subject: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """``JetStreamApi.call``, with ``UnknownTopic`` when the topic's stream is missing."""
        try:
            return await self._api.call(subject, body)
        except JetStreamError as exc:
            if exc.err_code == STREAM_NOT_FOUND:
                raise UnknownTopic(topic) from None
            raise

    async def create(self, topic: str, count: int) -> dict[str, Any]:
        """The info of the topic's stream, created with ``count`` partitions unless
        it exists already: the server's create is atomic, so the first count wins."""
        stream = self.stream(topic)
        config = {
            "name": stream,
            "description": orjson.dumps({"topic": topic, "partitions": count}).decode(),
            "subjects": [f"{self._prefix}.{token(topic)}.*"],
            "retention": "limits",
            "storage": "file",
            "discard": "old",
            "num_replicas": 1,
        }
        try:
            return await self._api.call(f"STREAM.CREATE.{stream}", config)
        except JetStreamError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:
                raise
            return await self.info(topic)  # someone else created it first: theirs wins

    async def publish(self, topic: str, records: Sequence[Record]) -> list[int]:
        """The records' offsets, in the order given; ``UnknownTopic`` when the
        topic has no stream."""
        api = self._api
        base, publish = f"{self._prefix}.{token(topic)}.", api.conn.publish
        expected = [api.expect() for _ in records]
        try:
            for record, (reply, _) in zip(records, expected, strict=True):
                await publish(
                    base + str(record.partition),
                    record.payload,
                    reply=reply,
                    headers=encode_headers(record),
                )
        except BaseException:
            api.forget(expected)
            raise
        # Every record is out before the first acknowledgement is awaited.
        try:
            acks = await api.answers(base, expected, api.timeout + len(records) / 1000)
        except NoResponders:
            raise UnknownTopic(topic) from None
        offsets = []
        for ack in acks:
            response = orjson.loads(ack.data)
            if "error" in response:
                raise JetStreamError(response["error"])
            offsets.append(int(response["seq"]))
        return offsets

    async def next_offset(self, topic: str, partition: int, start: int) -> int | None:
        """The offset of the partition's first message at or after ``start``, if any."""
        body = {"seq": start, "next_by_subj": self.subject(topic, partition)}
        try:
            found = await self._api.call(f"STREAM.MSG.GET.{self.stream(topic)}", body)
            return int(found["message"]["seq"])
        except JetStreamError as exc:
            if exc.code != 404 or exc.err_code == STREAM_NOT_FOUND:
                raise
        return None

    async def info(self, topic: str) -> dict[str, Any]:
        return await self.call(topic, f"STREAM.INFO.{self.stream(topic)}")

    async def streams(self) -> list[dict[str, Any]]:
        """The info of every stream under the prefix."""
        found: list[dict[str, Any]] = []
        while True:
            page = await self._api.call(
                "STREAM.LIST", {"subject": f"{self._prefix}.>", "offset": len(found)}
            )
            found.extend(page.get("streams") or [])
            if not page.get("streams") or len(found) >= page.get("total", 0):
                return found

    async def consumers(self, topic: str, group: str) -> dict[int, list[str]]:
        """The names of the group's consumers by partition, oldest generation first."""
        stream, head = self.stream(topic), token(group) + "_p"
        found: dict[int, list[tuple[int, str]]] = {}
        seen = 0
        while True:
            page = await self.call(topic, f"CONSUMER.NAMES.{stream}", {"offset": seen})
            names = page.get("consumers") or []
            seen += len(names)
            for name in names:
                partition, _, gen = name.removeprefix(head).partition("_g")
                if name.startswith(head) and partition.isdigit() and gen.isdigit():
                    found.setdefault(int(partition), []).append((int(gen), name))
            if not names or seen >= page.get("total", 0):
                return {p: [n for _, n in sorted(gens)] for p, gens in found.items()}

    async def current(
        self, topic: str, group: str, partition: int, name: str | None = None
    ) -> tuple[list[str], dict[str, Any]]:
        """The partition's consumers and the info of the newest, which a racing
        ``acquire`` may replace between the two requests: then look again."""
        for _ in range(CAS_TRIES):
            names = [name] if name else (await self.consumers(topic, group)).get(partition)
            if not names:
                raise QueueError(f"group {group!r} of {topic!r} does not exist")
            try:
                return names, await self._api.call(
                    f"CONSUMER.INFO.{self.stream(topic)}.{names[-1]}"
                )
            except JetStreamError as exc:
                if exc.code != 404:
                    raise
                name = None
        raise QueueError(f"partition {partition} of {topic!r} keeps changing consumers")

    async def create_consumer(
        self, topic: str, group: str, partition: int, gen: int, start: int
    ) -> str:
        stream, subject = self.stream(topic), self.subject(topic, partition)
        name = f"{token(group)}_p{partition}_g{gen}"
        config = {
            "name": name,
            "durable_name": name,
            "description": f"group {group} partition {partition}",
            "deliver_policy": "by_start_sequence",
            "opt_start_seq": max(start, 1),
            "ack_policy": "all",
            "ack_wait": _ACK_WAIT_NS,
            "max_deliver": -1,
            "max_ack_pending": -1,
            "filter_subject": subject,
        }
        body = {"stream_name": stream, "config": config}
        try:
            await self._api.call(f"CONSUMER.CREATE.{stream}.{name}.{subject}", body)
        except JetStreamError:
            # A concurrent create_group made it first, maybe at another start: keep theirs.
            if name not in (await self.consumers(topic, group)).get(partition, []):
                raise
        return name

    async def replace_consumers(
        self, topic: str, group: str, partition: int, old: list[str], start: int
    ) -> str:
        """Create the partition's next consumer generation at ``start``; drop the older ones."""
        gen = int(old[-1].rpartition("_g")[2]) + 1 if old else 0
        name = await self.create_consumer(topic, group, partition, gen, start)
        stream = self.stream(topic)
        await asyncio.gather(*(self._api.delete(f"CONSUMER.DELETE.{stream}.{n}") for n in old))
        return name

    async def scan(
        self, topic: str, partition: int, start: dict[str, Any], limit: int
    ) -> list[Msg]:
        """Up to ``limit`` of the partition's messages through a throwaway consumer."""
        stream = self.stream(topic)
        config = {
            **start,
            "ack_policy": "none",
            "filter_subject": self.subject(topic, partition),
            "inactive_threshold": _EPHEMERAL_TTL_NS,
            "mem_storage": True,
            "num_replicas": 1,
        }
        body = {"stream_name": stream, "config": config}
        name = (await self.call(topic, f"CONSUMER.CREATE.{stream}", body))["name"]
        puller = await Puller(self._api.conn, stream, name).open()
        try:
            return await puller.pull(limit, 0.0, self._api.timeout) if limit > 0 else []
        finally:
            await puller.close()
            await self._api.delete(f"CONSUMER.DELETE.{stream}.{name}")
