"""The servers under a ``Redlock``: its ``redlock://`` URL, a client and the
Lua scripts on each server, and one step sent to all of them at once.

A step never fails as a whole because one server did: a server that does not
answer within its timeout, or answers that it cannot serve now, gives a
``NoAnswer`` in its place, and the caller decides whether a majority answered.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import BusyLoadingError, ReadOnlyError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sysdesign.blocks.lock.base import LockError, LockUnavailable
from sysdesign.platform.errors import ConfigurationError
from sysdesign.platform.redisurl import fail_fast_pool, redact, split_options

DEFAULT_TIMEOUT = 0.1  # seconds per server: small against any sensible TTL
CONNECTIONS_PER_SERVER = 32
_LUA = files("sysdesign.blocks.lock").joinpath("lua")
SCRIPTS = {
    op: _LUA.joinpath(f"redlock_{op}.lua").read_text("utf-8")
    for op in ("acquire", "fence", "extend", "release")
}
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, BusyLoadingError, ReadOnlyError, OSError)
_UNAVAILABLE_REPLIES = ("OOM", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "LOADING")


@dataclass
class RedlockServer:
    label: str  # the URL without password, for messages
    client: Redis
    scripts: dict[str, AsyncScript]


@dataclass(frozen=True, slots=True)
class NoAnswer:
    """A server that did not answer one step, and why."""

    server: str
    reason: str


def server_urls(url: str) -> tuple[list[str], str, float]:
    """``(one redis:// URL per server, prefix, per-server timeout)`` from a
    ``redlock://`` URL. ``ConfigurationError`` for fewer than three servers,
    the same server twice, or a bad option."""
    plain, prefix, timeout = split_options(
        url, what="redlock URL", prefix="sysdesign", timeout=DEFAULT_TIMEOUT
    )
    parts = urlsplit(plain)
    if parts.scheme != "redlock":
        raise ConfigurationError(f"redlock URL must start with redlock://, not {redact(url)}")
    if not prefix:
        raise ConfigurationError(f"redlock URL: empty prefix in {redact(url)}")
    userinfo, at, hosts = parts.netloc.rpartition("@")
    query = f"?{parts.query}" if parts.query else ""
    urls, seen = [], set()
    for host in hosts.split(","):
        host = host.strip()
        try:
            where = urlsplit(f"redis://{host}")
            address = (where.hostname, where.port or 6379)
        except ValueError:
            address = (None, 0)
        if not host or address[0] is None:
            raise ConfigurationError(f"redlock URL: a bad host {host!r} in {redact(url)}")
        if address in seen:
            raise ConfigurationError(f"redlock URL: {host} is listed twice in {redact(url)}")
        seen.add(address)
        urls.append(f"redis://{userinfo}{at}{host}{parts.path}{query}")
    if len(urls) < 3:
        raise ConfigurationError(
            f"redlock URL: Redlock needs at least 3 independent servers, not {len(urls)}, "
            f"in {redact(url)}"
        )
    return urls, prefix, timeout


def open_server(url: str, timeout: float) -> RedlockServer:
    """A client for one server (not connected yet) with the scripts registered.
    ``ConfigurationError`` for a URL redis-py refuses."""
    try:
        pool = fail_fast_pool(url, timeout=timeout, max_connections=CONNECTIONS_PER_SERVER)
    except ValueError as exc:
        raise ConfigurationError(f"redlock server {redact(url)}: {exc}") from None
    client = Redis.from_pool(pool)
    scripts = {op: client.register_script(text) for op, text in SCRIPTS.items()}
    return RedlockServer(redact(url), client, scripts)


async def on_each(
    servers: Sequence[RedlockServer], call: Callable[[RedlockServer], Awaitable[Any]]
) -> list[Any]:
    """``call`` on every one of ``servers`` at once: each reply, in order, or
    ``NoAnswer`` for a server that did not answer within its timeout.
    ``LockError`` for an error reply that is not about availability."""

    async def one(server: RedlockServer) -> Any:
        try:
            return await call(server)
        except (RedisError, OSError) as exc:
            reason = " ".join(str(exc).split()) or exc.__class__.__name__
            if isinstance(exc, _UNAVAILABLE) or (
                isinstance(exc, ResponseError) and reason.startswith(_UNAVAILABLE_REPLIES)
            ):
                return NoAnswer(server.label, reason)
            return LockError(f"redis at {server.label} refused: {reason}")

    replies = await asyncio.gather(*(one(s) for s in servers))
    for reply in replies:
        if isinstance(reply, LockError):
            raise reply
    return replies


def answered(replies: Sequence[Any]) -> int:
    return sum(1 for r in replies if not isinstance(r, NoAnswer))


def unavailable(replies: Sequence[Any], quorum: int) -> LockUnavailable:
    """One line: how many servers answered, how many were needed, and why the rest did not."""
    failed = [r for r in replies if isinstance(r, NoAnswer)]
    reasons = "; ".join(f"{f.server}: {f.reason}" for f in failed)
    return LockUnavailable(
        f"redlock: {len(replies) - len(failed)} of {len(replies)} servers answered, "
        f"{quorum} needed ({reasons})"
    )


def granted(reply: Any) -> bool:
    """Whether an acquire script's reply says the server took the key."""
    return not isinstance(reply, NoAnswer) and int(reply) >= 0


def decoded(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def ms(seconds: float) -> int:
    """Seconds as whole milliseconds for PX/PEXPIRE, rounded up and at least 1."""
    return max(1, math.ceil(seconds * 1000))
