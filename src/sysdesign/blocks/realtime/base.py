"""The realtime contract: fan-out of small messages to whoever listens right now.

A message published on a channel reaches every subscription to that channel
that exists, anywhere, when it is published (on Redis: when the server
handles the PUBLISH; a subscription exists once it is entered): at most
once, never to a subscription made later, and in order for messages that
one task publishes one after the other. There is no history and no replay:
a subscriber that was not there (or whose process lost its connection to the
server meanwhile) does not get what it missed, so callers treat messages as
hints ("the inbox changed") and re-read their state from their store after
subscribing, and again when ``interruptions`` or ``dropped`` grows.

Each subscription buffers up to ``buffer`` messages (default 1,000) that its
reader has not taken yet; a reader that falls further behind loses the
OLDEST ones, counted in ``dropped``, so a slow reader costs bounded memory
and never slows the publisher or other subscribers.

Channel names are 1 to 200 characters without whitespace (``inbox:42``);
anything else raises ``ValueError``. Backends: ``memory://`` (this process
only) and ``redis://`` (every process on the server).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections import deque
from types import TracebackType
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

DEFAULT_BUFFER = 1000
MAX_CHANNEL_LENGTH = 200


class RealtimeError(Exception):
    """Base class of the realtime block's own errors."""


class RealtimeUnavailable(RealtimeError):
    """The server could not be reached: a publish was not made, or a
    subscription could not be confirmed."""


def check_channel(channel: str) -> str:
    """``channel`` if it is a valid name; ``ValueError`` saying why if not."""
    if not isinstance(channel, str):
        raise ValueError(f"a channel name is a str, not {type(channel).__name__}")
    if not 1 <= len(channel) <= MAX_CHANNEL_LENGTH:
        raise ValueError(
            f"a channel name has 1 to {MAX_CHANNEL_LENGTH} characters, not {len(channel)}"
        )
    if any(c.isspace() for c in channel):
        raise ValueError(f"a channel name has no whitespace: {channel!r}")
    return channel


def check_buffer(buffer: int) -> int:
    if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
        raise ValueError(f"buffer must be a whole number of messages >= 1, not {buffer!r}")
    return buffer


def split_buffer(url: str) -> tuple[str, int]:
    """``url`` without its ``buffer`` parameter, and that parameter (default
    ``DEFAULT_BUFFER``). ``ValueError`` when it is not a whole number >= 1."""
    parts = urlsplit(url)
    buffer, kept = DEFAULT_BUFFER, []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name != "buffer":
            kept.append((name, value))
            continue
        try:
            buffer = check_buffer(int(value))
        except ValueError:
            raise ValueError(
                f"buffer must be a whole number of messages >= 1, not {value!r}"
            ) from None
    return urlunsplit(parts._replace(query=urlencode(kept))), buffer


class Subscription:
    """Messages of one channel for one reader, from the moment it is entered
    until it is left::

        async with realtime.subscribe("inbox:42") as sub:
            async for message in sub:  # bytes
                ...

    Entering registers it (on Redis: once the server confirmed it; raises
    ``RealtimeUnavailable`` if it cannot within the socket timeout); leaving,
    or ``close()``, unregisters it. Iteration ends when the subscription or
    its ``Realtime`` is closed. A subscription is entered once.
    """

    def __init__(self, hub: Realtime, channel: str, buffer: int = DEFAULT_BUFFER) -> None:
        self.hub = hub
        self.channel = check_channel(channel)
        self.dropped = 0  # messages lost to a full buffer
        # Times the backend lost its server connection while this was subscribed:
        # it re-subscribes by itself, but what was published meanwhile is lost.
        self.interruptions = 0
        self._buffer: deque[bytes] = deque()
        self._limit = check_buffer(buffer)
        self._ready = asyncio.Event()
        self._entered = False
        self._closed = False

    def __repr__(self) -> str:
        return f"<Subscription {self.channel!r} pending={len(self._buffer)}>"

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> int:
        """Messages received and not yet taken."""
        return len(self._buffer)

    async def __aenter__(self) -> Subscription:
        if self._entered:
            raise RuntimeError("a subscription is entered once; call subscribe() again")
        self._entered = True
        await self.hub._attach(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop receiving; messages already buffered can still be read."""
        if self._closed:
            return
        self._end()
        await self.hub._detach(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> bytes:
        message = await self.get()
        if message is None:
            raise StopAsyncIteration
        return message

    async def get(self, timeout: float | None = None) -> bytes | None:
        """The next message, waiting up to ``timeout`` seconds (``None``:
        until one comes); ``None`` on timeout, or once the subscription is
        closed and its buffer empty."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self._buffer:
            if self._closed:
                return None
            self._ready.clear()
            if deadline is None:
                await self._ready.wait()
                continue
            left = deadline - loop.time()
            if left <= 0:
                return None
            try:
                async with asyncio.timeout(left):
                    await self._ready.wait()
            except TimeoutError:
                return None
        return self._buffer.popleft()

    # --- for backends ------------------------------------------------------------

    def _deliver(self, message: bytes) -> None:
        if self._closed:
            return
        if len(self._buffer) >= self._limit:
            self._buffer.popleft()
            self.dropped += 1
            self.hub.dropped += 1
        self._buffer.append(message)
        self._ready.set()

    def _end(self) -> None:
        self._closed = True
        self._ready.set()


class Fanout:
    """The subscriptions of one process by channel: what both backends
    deliver to. Delivery is synchronous, so a message reaches exactly the
    subscriptions registered when it is delivered."""

    def __init__(self) -> None:
        self.channels: dict[str, set[Subscription]] = {}

    def add(self, sub: Subscription) -> bool:
        """Register ``sub``; ``True`` if it is its channel's first."""
        subs = self.channels.setdefault(sub.channel, set())
        subs.add(sub)
        return len(subs) == 1

    def remove(self, sub: Subscription) -> bool:
        """Unregister ``sub``; ``True`` if its channel has no subscription left."""
        subs = self.channels.get(sub.channel)
        if subs is None or sub not in subs:
            return False
        subs.discard(sub)
        if subs:
            return False
        del self.channels[sub.channel]
        return True

    def deliver(self, channel: str, message: bytes) -> int:
        subs = self.channels.get(channel, ())
        for sub in subs:
            sub._deliver(message)
        return len(subs)

    def end_all(self) -> None:
        for subs in self.channels.values():
            for sub in subs:
                sub._end()
        self.channels.clear()


class Realtime(ABC):
    """Publish bytes to a channel; subscribe to a channel's messages (see the
    module's docstring for what is and is not guaranteed).

    ``publish`` raises ``RealtimeUnavailable`` when the server cannot take
    it, and ``RealtimeError`` before ``connect`` on a remote backend; both
    raise ``ValueError`` for a bad channel name or a message that is not
    bytes. ``dropped`` counts messages lost to full buffers, over every
    subscription since start."""

    name: str = "?"

    def __init__(self, *, buffer: int = DEFAULT_BUFFER) -> None:
        self.buffer = check_buffer(buffer)
        self.dropped = 0
        self._fanout = Fanout()

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        """Ends every subscription (their iterators stop) and releases the
        connections; the instance can be connected again."""
        self._fanout.end_all()

    async def ping(self) -> None:
        return None

    @abstractmethod
    async def publish(self, channel: str, message: bytes) -> None:
        """Send ``message`` to the current subscriptions of ``channel``."""

    def subscribe(self, channel: str) -> Subscription:
        """A subscription to ``channel``, registered when entered."""
        return Subscription(self, channel, self.buffer)

    @property
    def subscriptions(self) -> int:
        """How many subscriptions this instance holds now, on every channel."""
        return sum(len(subs) for subs in self._fanout.channels.values())

    @abstractmethod
    async def _attach(self, sub: Subscription) -> None:
        """Register ``sub``: from when this returns, it receives what is published."""

    @abstractmethod
    async def _detach(self, sub: Subscription) -> None:
        """Unregister ``sub`` (already ended); no error if it was not registered."""


def check_message(message: bytes) -> bytes:
    if not isinstance(message, bytes | bytearray | memoryview):
        raise ValueError(f"a message is bytes, not {type(message).__name__}")
    return bytes(message)
