"""The cluster's view of one cache node: ``NodeCache``, ``Member``, and the
``sysdesign://`` URL.

``NodeCache`` is ``RedisCache`` with what the cluster needs of a node on
top; ``Member`` is a node as one client sees it (up or routed around, the
keys it must drop before it serves again).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sysdesign.blocks.cache.redis import RedisCache, _ms
from sysdesign.platform.errors import ConfigurationError

DEFAULT_PORT = 6380
DEFAULT_TIMEOUT = 0.25


class NodeCache(RedisCache):
    """One cache node, as ``RedisCache`` speaks to it, with what the cluster
    needs on top: compare-and-set as ``SET ... IFEQ`` (a node runs no Lua),
    an increment that also reports the TTL left, so replicas get the same
    expiry, and a flush for a node that missed too many writes."""

    name = "node"

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None = None
    ) -> bool:
        if expected is None:
            return await self.set(key, value, ttl, only_if_absent=True)
        ms = _ms(ttl)
        expiry = () if ms is None else ("PX", ms)
        reply = await self._call(
            self._r.execute_command, "SET", self.key(key), value, "IFEQ", expected, *expiry
        )
        return bool(reply)

    async def incr_with_ttl(
        self, key: str, amount: int, ttl: float | None
    ) -> tuple[int, float | None]:
        """``incr``, and the seconds the key has left (``None``: no expiry)."""
        ms = _ms(ttl)
        name = self.key(key)
        pipe = self._r.pipeline(transaction=True)
        if ms is not None:
            pipe.set(name, b"0", px=ms, nx=True)
        pipe.incrby(name, amount)
        pipe.pttl(name)
        *_, value, left = await self._call(pipe.execute)
        return value, (left / 1000 if left > 0 else None)

    async def flush(self) -> None:
        await self._call(self._r.flushdb)


@dataclass(eq=False)
class Member:
    """A node of the cluster as this client sees it."""

    address: str
    cache: NodeCache
    up: bool = True
    hints: dict[str, None] = field(default_factory=dict)  # ordered set of keys to drop
    flush_on_return: bool = False
    failures: int = 0


def parse_nodes(netloc: str, url: str) -> list[str]:
    """``host:port`` for each comma-separated node (port 6380 when absent)."""
    nodes: list[str] = []
    for part in netloc.split(","):
        try:
            parts = urlsplit(f"//{part.strip()}")
            host, port = parts.hostname, parts.port or DEFAULT_PORT
        except ValueError as exc:
            raise ConfigurationError(f"cache URL {url}: node {part!r}: {exc}") from None
        if not host:
            raise ConfigurationError(f"cache URL {url}: node {part!r} has no host")
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if address in nodes:
            raise ConfigurationError(f"cache URL {url}: node {address} is listed twice")
        nodes.append(address)
    return nodes


def parse_cluster_url(url: str) -> tuple[list[str], dict[str, Any]]:
    """The nodes and the ``ClusterCache`` options of ``sysdesign://h1:6380,h2:6381
    ?replicas=2&vnodes=160&prefix=&socket_timeout=0.25&retry_interval=1&hint_limit=100000``.
    ``ConfigurationError`` naming the bad part."""
    parts = urlsplit(url)
    options: dict[str, Any] = {}
    numbers = {
        "replicas": int,
        "vnodes": int,
        "hint_limit": int,
        "socket_timeout": float,
        "retry_interval": float,
    }
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "prefix":
            options["prefix"] = value
        elif name in numbers:
            try:
                number = numbers[name](value)
            except ValueError:
                number = -1
            if not number > 0:
                raise ConfigurationError(
                    f"cache URL {url}: {name} must be a positive number, not {value!r}"
                )
            options["timeout" if name == "socket_timeout" else name] = number
        else:
            raise ConfigurationError(
                f"cache URL {url}: unknown parameter {name!r}: sysdesign:// takes "
                "replicas, vnodes, prefix, socket_timeout, retry_interval and hint_limit"
            )
    return parse_nodes(parts.netloc, url), options
