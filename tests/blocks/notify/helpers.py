"""Messages and a tiny HTTP receiver for the notify tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sysdesign.blocks.notify import Address, Channel, Outgoing, Priority, Rendered


def outgoing(
    channel: Channel,
    value: str,
    *,
    secret: str | None = None,
    rendered: Rendered | None = None,
    message_id: str = "1234567890",
    data: dict[str, Any] | None = None,
    attempt: int = 1,
) -> Outgoing:
    return Outgoing(
        message_id=message_id,
        channel=channel,
        address=Address(channel, value, secret),
        rendered=rendered or Rendered(body="Your order shipped.", subject="Order shipped"),
        recipient_id=42,
        template="order-shipped",
        category="orders",
        priority=Priority.NORMAL,
        data=data if data is not None else {"order": "A-1"},
        attempt=attempt,
    )


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


Handler = Callable[[Request], Awaitable[Reply]]


class HttpReceiver:
    """An HTTP/1.1 server on a free loopback port: one request per
    connection, answered by ``handler``, every request recorded. ``close``
    releases handlers waiting on ``release`` and waits for all of them."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.release = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> HttpReceiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            first, *lines = head.split("\r\n")
            method, target, _ = first.split(" ", 2)
            headers = {}
            for line in lines:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            request = Request(method, target, headers, body)
            self.requests.append(request)
            reply = await self.handler(request)
            out = [f"HTTP/1.1 {reply.status} X"]
            out += [f"{name}: {value}" for name, value in reply.headers.items()]
            out += [f"Content-Length: {len(reply.body)}", "Connection: close", "", ""]
            writer.write("\r\n".join(out).encode("latin-1") + reply.body)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self._tasks.discard(task)
