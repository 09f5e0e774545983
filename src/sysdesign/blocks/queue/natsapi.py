"""The wire level of the NATS JetStream queue backend.

Names as subject tokens, records as NATS headers and back, the errors the
JetStream API answers with, connecting, and ``JetStreamApi``: requests to the
API answered on one reply inbox. The layout these build is described in
``sysdesign.blocks.queue.nats``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import re
from typing import Any
from urllib.parse import quote, unquote

import nats.errors
import orjson
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg

from sysdesign.blocks.queue.base import Message, QueueError, Record
from sysdesign.platform.errors import BackendUnavailable

log = structlog.get_logger("sysdesign.queue.nats")

KEY_HEADER = "Sysdesign-Key"
TIME_HEADER = "Sysdesign-Time"
# User headers NATS cannot carry as they are (odd names, line breaks, edge spaces,
# names the server would act on) travel JSON-encoded in this one.
EXTRA_HEADER = "Sysdesign-Headers"
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_RESERVED = ("sysdesign-", "nats-", "status", "description")
_KEY_SAFE = "!\"#$&'()*+,/:;<=>?@[\\]^`{|}~"
_MAX_TOKEN = 120  # stream and consumer names become file names on the server
PENDING_LIMITS = {"pending_msgs_limit": 512 * 1024, "pending_bytes_limit": 256 * 1024 * 1024}
CAS_TRIES = 50
STREAM_NOT_FOUND = 10059
STREAM_NAME_IN_USE = 10058
WRONG_LAST_SEQUENCE = 10071


def escape(name: str) -> str:
    # "_" escapes itself and ".", so the mapping is reversible: two names never collide.
    return name.replace("_", "__").replace(".", "_d")


def token(name: str) -> str:
    """A name as a subject token and file name: escaped, or hashed when long
    ("_h" never starts an escaped name, so the two forms cannot collide)."""
    escaped = escape(name)
    if len(escaped) <= _MAX_TOKEN:
        return escaped
    return "_h" + hashlib.sha256(name.encode()).hexdigest()[:40]


def encode_headers(record: Record) -> dict[str, str]:
    out = {TIME_HEADER: repr(record.timestamp)}
    if record.key is not None:
        out[KEY_HEADER] = quote(record.key, safe=_KEY_SAFE)
    extra: dict[str, str] = {}
    for name, value in record.headers.items():
        # nats-py strips values and rewrites line breaks, so only these travel as they are.
        plain = value.isprintable() and value == value.strip()
        if plain and _HEADER_NAME.fullmatch(name) and not name.lower().startswith(_RESERVED):
            out[name] = value
        else:
            extra[name] = value
    if extra:
        out[EXTRA_HEADER] = orjson.dumps(extra).decode()
    return out


def offset_of(msg: Msg) -> int:
    # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>,
    # with <domain>.<account hash> after ACK on newer servers.
    tokens = msg.reply.split(".")
    return int(tokens[5] if len(tokens) == 9 else tokens[7])


def to_message(topic: str, partition: int, msg: Msg, attempt: int) -> Message:
    """The record ``encode_headers`` sent, as the message at its stream sequence."""
    headers = msg.headers or {}
    key = headers.pop(KEY_HEADER, None)
    stamp = headers.pop(TIME_HEADER, None)
    extra = headers.pop(EXTRA_HEADER, None)
    if extra:
        headers.update(orjson.loads(extra))
    return Message(
        topic=topic,
        partition=partition,
        offset=offset_of(msg),
        key=None if key is None else unquote(key),
        payload=msg.data,
        headers=headers,
        timestamp=float(stamp) if stamp else 0.0,
        attempt=attempt,
    )


class JetStreamError(QueueError):
    """An error the JetStream API answered with."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"JetStream: {error.get('description')} (error {error.get('err_code')})")
        self.code = int(error.get("code", 0))
        self.err_code = int(error.get("err_code", 0))


class NoResponders(Exception):
    """Nobody listens on the subject: no stream, consumer or JetStream there."""


async def dial(servers: list[str], timeout: float) -> Client:
    """A connected client that rides out server restarts once up; ``BackendUnavailable``
    when no server answers within ``timeout`` or every one has refused twice."""
    shown = ", ".join(s.rpartition("@")[2] for s in servers)
    conn, up = Client(), False
    errors: list[Exception] = []
    give_up = asyncio.get_running_loop().create_future()

    async def on_error(exc: Exception) -> None:
        if up:
            log.warning("queue.nats_error", error=f"{exc.__class__.__name__}: {exc}")
            return
        errors.append(exc)
        # nats-py keeps retrying a server that refuses: two tries each is enough.
        if len(errors) >= 2 * len(servers) and not give_up.done():
            give_up.set_result(None)

    attempt = asyncio.ensure_future(
        conn.connect(
            servers=servers,
            name="sysdesign-queue",
            connect_timeout=max(int(timeout / 2), 1),
            reconnect_time_wait=1,
            max_reconnect_attempts=-1,  # once up, ride out server restarts
            error_cb=on_error,
            skip_subject_validation=True,  # every subject here is built valid
        )
    )
    await asyncio.wait({attempt, give_up}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    failure = attempt.exception() if attempt.done() else (errors or [TimeoutError()])[-1]
    if failure is not None:
        attempt.cancel()
        await asyncio.gather(attempt, return_exceptions=True)
        await quiet_close(conn)
        raise BackendUnavailable(
            f"cannot reach NATS at {shown}: {failure.__class__.__name__}: {failure}"
        )
    up = True
    return conn


async def quiet_close(conn: Client) -> None:
    with contextlib.suppress(TimeoutError, OSError, nats.errors.Error):
        await asyncio.wait_for(conn.close(), 2.0)


class JetStreamApi:
    """Requests over one connection, every answer arriving on one reply inbox.

    Each request waits at most ``timeout`` (``QueueError`` past it) and fails
    with ``NoResponders`` when nobody serves its subject. A cancelled request
    stops waiting at once and leaves nothing behind.
    """

    def __init__(self, conn: Client, timeout: float) -> None:
        self.conn = conn
        self.timeout = timeout
        self._reply_prefix = conn.new_inbox() + "."
        self._replies: dict[str, asyncio.Future[Msg]] = {}
        self._tokens = itertools.count()

    async def open(self) -> JetStreamApi:
        """Start listening on the reply inbox; requests need it."""
        await self.conn.subscribe(self._reply_prefix + "*", cb=self._on_reply, **PENDING_LIMITS)
        return self

    async def _on_reply(self, msg: Msg) -> None:
        future = self._replies.pop(msg.subject[len(self._reply_prefix) :], None)
        if future is not None and not future.done():
            future.set_result(msg)

    def expect(self) -> tuple[str, asyncio.Future[Msg]]:
        """A reply subject and the future its answer resolves."""
        token = str(next(self._tokens))
        future = self._replies[token] = asyncio.get_running_loop().create_future()
        return self._reply_prefix + token, future

    async def answers(
        self, subject: str, expected: list[tuple[str, asyncio.Future[Msg]]], timeout: float
    ) -> list[Msg]:
        """The answers to ``expected``, in order; they are forgotten whatever happens."""
        # asyncio.timeout, not nats-py's request: on Python 3.11 its wait_for swallows a
        # cancellation that arrives with the answer, and a cancelled consumer never stops.
        try:
            async with asyncio.timeout(timeout):
                answers = [await future for _, future in expected]
        except TimeoutError:
            raise QueueError(f"NATS did not answer on {subject} within {timeout:g}s") from None
        finally:
            self.forget(expected)
        for msg in answers:
            if not msg.data and (msg.headers or {}).get("Status") == "503":
                raise NoResponders(subject)
        return answers

    def forget(self, expected: list[tuple[str, asyncio.Future[Msg]]]) -> None:
        for reply, future in expected:
            self._replies.pop(reply[len(self._reply_prefix) :], None)
            future.cancel()

    async def request(
        self, subject: str, payload: bytes = b"", headers: dict[str, str] | None = None
    ) -> Msg:
        expected = [self.expect()]
        try:
            await self.conn.publish(subject, payload, reply=expected[0][0], headers=headers)
        except BaseException:
            self.forget(expected)
            raise
        return (await self.answers(subject, expected, self.timeout))[0]

    async def call(self, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """The answer of ``$JS.API.<subject>``; ``JetStreamError`` when it is an error."""
        payload = b"" if body is None else orjson.dumps(body)
        response: dict[str, Any] = orjson.loads(
            (await self.request(f"$JS.API.{subject}", payload)).data
        )
        if "error" in response:
            raise JetStreamError(response["error"])
        return response

    async def delete(self, subject: str) -> None:
        """Call a ``*.DELETE`` subject; what is gone already is no error."""
        try:
            await self.call(subject)
        except JetStreamError as exc:
            if exc.code != 404:
                raise
