"""What ``sysdesign bench locks`` drives: our locks on each backend, and the anchors.

Every subject is an async context manager that connects, yields a ``Subject``
(``acquire()`` waits until the lock of one name is granted and returns what
``release`` needs) and closes everything on the way out:

- ``ours``: ``LockService.acquire``/``release`` on the store a URL names, or
  ``Redlock`` for ``redlock://`` URLs;
- ``redis_py_lock``: redis-py's own ``redis.asyncio.lock.Lock`` (SET NX PX to
  take it, a Lua script to give it back, polling every ``REDIS_PY_SLEEP``
  seconds while taken: its defaults), one ``Lock`` object per acquisition
  because a ``Lock`` keeps its token per thread, and every task shares one;
- ``etcd_lock_api``: etcd's own lock service through the v3 JSON gateway
  (``/v3/lock/lock`` waits on the server until granted, in key-creation
  order), with a fresh lease per acquisition as ours has a fresh ticket.

``redis_servers`` starts the three throwaway redis-server processes that
Redlock runs over; ``cleanup_*`` delete what a run left on a shared server.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import importlib.util
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from sysdesign.benchmarks import BenchmarkError
from sysdesign.benchmarks.server import LOOPBACK, free_port
from sysdesign.blocks.lock import open_locks
from sysdesign.platform.redisurl import split_options

TTL_SECONDS = 10.0  # far longer than any hold here: no lease lapses mid-run
WAIT_SECONDS = 60.0  # a grant that takes longer than this is a failure, not a figure
REDIS_PY_SLEEP = 0.1  # redis-py Lock's default pause between attempts while taken


@dataclass(frozen=True, slots=True)
class Subject:
    """One lock name on one implementation."""

    acquire: Callable[[], Awaitable[Any]]
    release: Callable[[Any], Awaitable[Any]]


def with_option(url: str, name: str, value: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{name}={value}"


def redlock_module_missing() -> str | None:
    """Why Redlock cannot be measured here, or ``None`` when it can."""
    if importlib.util.find_spec("sysdesign.blocks.lock.redlock") is None:
        return "sysdesign.blocks.lock.redlock is not there yet"
    if shutil.which("redis-server") is None:
        return "no redis-server on PATH to run Redlock's three servers"
    return None


@contextlib.asynccontextmanager
async def ours(url: str, name: str) -> AsyncIterator[Subject]:
    """Our lock ``name`` on the backend ``url`` names (``redlock://``: Redlock)."""
    service = open_locks(url, owner="bench")
    try:
        await service.connect()

        async def acquire() -> Any:
            return await service.acquire(name, TTL_SECONDS, wait=WAIT_SECONDS)

        yield Subject(acquire, service.release)
    finally:
        await service.close()


def plain_redis_url(url: str) -> str:
    """``url`` without the options only our stores read (prefix, socket_timeout)."""
    plain, _, _ = split_options(url, what="Redis URL", prefix="", timeout=5.0)
    return plain


@contextlib.asynccontextmanager
async def redis_py_lock(url: str, name: str) -> AsyncIterator[Subject]:
    """redis-py's built-in asyncio ``Lock`` on ``name``, as its documentation
    uses it: ``acquire()`` blocking, then ``release()``."""
    from redis.asyncio import Redis

    client = Redis.from_url(plain_redis_url(url), socket_timeout=5.0)
    try:

        async def acquire() -> Any:
            lock = client.lock(
                name, timeout=TTL_SECONDS, sleep=REDIS_PY_SLEEP, blocking_timeout=WAIT_SECONDS
            )
            if not await lock.acquire():
                raise BenchmarkError(f"redis-py Lock {name!r} not granted in {WAIT_SECONDS:g} s")
            return lock

        async def release(lock: Any) -> None:
            await lock.release()

        await client.ping()
        yield Subject(acquire, release)
    finally:
        await client.aclose()


class EtcdGateway:
    """The four gateway calls of etcd's lock API, on the first endpoint of a URL."""

    def __init__(self, url: str) -> None:
        host = urlsplit(url).netloc.split(",")[0]
        self.base = f"http://{host if ':' in host else host + ':2379'}"
        # trust_env=False: no proxy from the environment between us and etcd.
        self.http = httpx.AsyncClient(timeout=WAIT_SECONDS, trust_env=False)

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.http.post(self.base + path, content=orjson.dumps(body))
        data: dict[str, Any] = orjson.loads(response.content) if response.content else {}
        if response.status_code != 200 or "error" in data:
            message = data.get("message") or data.get("error") or response.text[:200]
            raise BenchmarkError(
                f"etcd {path} at {self.base}: HTTP {response.status_code} {message}"
            )
        return data

    async def version(self) -> str | None:
        data = await self.call("/v3/maintenance/status", {})
        return data.get("version")

    async def aclose(self) -> None:
        await self.http.aclose()


@contextlib.asynccontextmanager
async def etcd_lock_api(url: str, name: str) -> AsyncIterator[Subject]:
    """etcd's lock service: lease grant, ``/v3/lock/lock`` with the lease (waits
    on the server, answers the owner key), ``/v3/lock/unlock`` with the key,
    lease revoke."""
    gateway = EtcdGateway(url)
    encoded = base64.b64encode(name.encode()).decode("ascii")
    try:

        async def acquire() -> tuple[str, str]:
            lease = await gateway.call("/v3/lease/grant", {"TTL": str(int(TTL_SECONDS))})
            held = await gateway.call("/v3/lock/lock", {"name": encoded, "lease": lease["ID"]})
            return str(lease["ID"]), str(held["key"])

        async def release(held: tuple[str, str]) -> None:
            lease_id, key = held
            await gateway.call("/v3/lock/unlock", {"key": key})
            await gateway.call("/v3/lease/revoke", {"ID": lease_id})

        yield Subject(acquire, release)
    finally:
        await gateway.aclose()


# --- servers and cleanup ----------------------------------------------------------------


@contextlib.contextmanager
def redis_servers(count: int = 3) -> Iterator[list[int]]:
    """``count`` throwaway redis-server processes on free loopback ports, no
    persistence; stopped on exit. Yields their ports."""
    from sysdesign.blocks.cache.anchors import serve

    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for i in range(count):
            port = free_port()
            command = ["redis-server", "--bind", LOOPBACK, "--port", str(port)]
            command += ["--save", "", "--appendonly", "no"]
            stack.enter_context(serve(f"redis-server {i + 1}", command, port, None))
            ports.append(port)
        yield ports


async def redis_version(url: str) -> str | None:
    from redis.asyncio import Redis

    client = Redis.from_url(plain_redis_url(url), socket_timeout=5.0)
    try:
        info = await client.info("server")
        return str(info.get("redis_version")) or None
    finally:
        await client.aclose()


async def cleanup_redis(url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (ours and redis-py's)."""
    from redis.asyncio import Redis

    client = Redis.from_url(plain_redis_url(url), socket_timeout=5.0)
    try:
        pattern = re.sub(r"([\\*?\[\]])", r"\\\1", prefix) + "*"
        keys = [key async for key in client.scan_iter(match=pattern, count=1000)]
        if keys:
            await client.unlink(*keys)
    finally:
        await client.aclose()


async def cleanup_etcd(url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (ours and etcd's lock keys)."""
    gateway = EtcdGateway(url)
    try:
        start = prefix.encode()
        end = start[:-1] + bytes([start[-1] + 1])
        body = {
            "key": base64.b64encode(start).decode(),
            "range_end": base64.b64encode(end).decode(),
        }
        await gateway.call("/v3/kv/deleterange", body)
    finally:
        await gateway.aclose()


async def _postgres(url: str) -> Any:
    import asyncpg

    parts = urlsplit(url)
    dsn = parts._replace(scheme=parts.scheme.removesuffix("+asyncpg"), query="").geturl()
    return await asyncpg.connect(dsn, timeout=5.0)


async def postgres_version(url: str) -> str | None:
    conn = await _postgres(url)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


async def cleanup_postgres(url: str, prefix: str) -> None:
    """Delete the per-name token counters our runs left (their tickets are
    already gone: each was released)."""
    conn = await _postgres(url)
    try:
        await conn.execute("DELETE FROM lock_names WHERE starts_with(name, $1)", prefix)
    finally:
        await conn.close()


async def _etcd_version(url: str) -> str | None:
    gateway = EtcdGateway(url)
    try:
        return await gateway.version()
    finally:
        await gateway.aclose()


async def server_versions(urls: dict[str, str | None]) -> dict[str, str | None]:
    """The version of each server a URL is given for (an unreachable one is left out)."""
    found: dict[str, str | None] = {}
    probes: dict[str, Callable[[str], Awaitable[str | None]]] = {
        "postgres": postgres_version,
        "redis": redis_version,
        "etcd": _etcd_version,
    }
    for name, probe in probes.items():
        url = urls.get(name)
        if url:
            with contextlib.suppress(Exception):  # its backend is reported as skipped
                found[name] = await probe(url)
    return found
