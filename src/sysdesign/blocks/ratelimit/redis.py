"""``RedisRateLimitStore``: counters shared by every process through one Redis.

Keys, all under the URL's ``prefix`` (default ``sysdesign``): one per hit key
and algorithm, ``{prefix}:rl:{key}:{algorithm}`` (a STRING of integers for
the four scalar algorithms, a ZSET for ``sliding_log`` and ``concurrency``;
``lua/ratelimit.lua`` lists the layouts). The algorithm names end every key,
so no two (key, algorithm) pairs share one, and ``reset`` deletes all six.

Each ``hit_many`` is one EVALSHA of one script that decides every hit, then
applies them only if all passed: all-or-nothing and atomic on the server.
``now`` comes from the store's clock and travels in ARGV, so every process
must keep its clock in sync (NTP); TTLs are computed from it too and carry
a second of slack, so a key outlives its state by that much and clocks that
disagree by less than it never see a key vanish early. One Redis server (or
primary), not a cluster: one call touches the keys of several hit keys.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Sequence
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    BusyLoadingError,
    NoScriptError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)

from sysdesign.blocks.ratelimit.algorithms import capacity, decision, period_ms
from sysdesign.blocks.ratelimit.base import (
    Algorithm,
    Decision,
    Hit,
    RateLimitError,
    RateLimitStore,
    StoreUnavailable,
)
from sysdesign.platform.clock import Clock, SystemClock
from sysdesign.platform.errors import ConfigurationError

SCRIPT = files("sysdesign.blocks.ratelimit").joinpath("lua/ratelimit.lua").read_text("utf-8")
DEFAULT_TIMEOUT = 0.25  # seconds: a dead or stuck server is reported, not waited for
DEFAULT_CONNECTIONS = 64  # per store; ?max_connections= in the URL overrides it
_SLACK_MS = 1000
# No admitted hit holds more slots than its limit allows; bigger is not our token.
_MAX_TOKEN_COST = 1_000_000
# Errors that mean the server cannot answer now, as opposed to a wrong request.
_UNAVAILABLE = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    ReadOnlyError,
    OSError,
)
_UNAVAILABLE_REPLIES = ("OOM", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")
_READ_HERE = ("prefix", "decode_responses")


def _redact(url: str) -> str:
    """The URL without password or query, for messages."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username or ''}:***@{host}" if parts.password is not None else parts.netloc
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _token_cost(token: str) -> int | None:
    """The cost a concurrency token holds (its tokens end in ``:cost``), or
    None when it is not one of ours."""
    cost = token.rpartition(":")[2]
    return int(cost) if cost.isdigit() else None


class RedisRateLimitStore(RateLimitStore):
    """Shared counters on one Redis server (tested on Redis 7), deciding as
    ``MemoryRateLimitStore`` does, to the same numbers.

    Every method raises ``StoreUnavailable`` when the server cannot be
    reached, times out (``socket_timeout``, default 250 ms, which also bounds
    the wait for a free connection; no retries beyond one immediate
    reconnect), or is loading, read-only or out of memory; ``RateLimitError``
    for any other error reply; ``ValueError`` for a negative cost, before
    sending anything.
    """

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "sysdesign",
        timeout: float = DEFAULT_TIMEOUT,
        clock: Clock | None = None,
    ) -> None:
        self._url = url
        self._prefix = prefix
        self._timeout = timeout
        self._clock: Clock = clock or SystemClock()
        self._client: Redis | None = None
        self._sha = hashlib.sha1(SCRIPT.encode()).hexdigest()
        # Nonces and tokens: unique across processes by the random part.
        self._id = os.urandom(6).hex()
        self._sequence = itertools.count(1)

    @classmethod
    def from_url(cls, url: str, clock: Clock | None = None) -> RedisRateLimitStore:
        """``redis[s]://[user:password@]host:port/db?prefix=NAME&socket_timeout=SECONDS``;
        other query parameters go to redis-py."""
        parts = urlsplit(url)
        prefix = "sysdesign"
        timeout = DEFAULT_TIMEOUT
        kept: list[tuple[str, str]] = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name == "prefix":
                prefix = value
            elif name == "socket_timeout":
                try:
                    timeout = float(value)
                except ValueError:
                    timeout = -1.0
                if not 0 < timeout <= 60:
                    raise ConfigurationError(
                        f"rate-limit store URL: socket_timeout must be seconds in (0, 60], "
                        f"not {value!r}, in {_redact(url)}"
                    )
            elif name not in _READ_HERE:
                kept.append((name, value))
        if not prefix:
            raise ConfigurationError(f"rate-limit store URL: empty prefix in {_redact(url)}")
        url = urlunsplit(parts._replace(query=urlencode(kept)))
        return cls(url, prefix=prefix, timeout=timeout, clock=clock)

    def key(self, key: str, algorithm: Algorithm) -> str:
        """The Redis key holding ``key``'s state under ``algorithm``."""
        return f"{self._prefix}:rl:{key}:{algorithm.value}"

    # --- lifecycle --------------------------------------------------------------

    @property
    def _r(self) -> Redis:
        if self._client is None:
            raise RateLimitError("the redis rate-limit store is not connected")
        return self._client

    async def connect(self) -> None:
        """Build the client and load the script. Raises ``ConfigurationError``
        for a bad URL and ``StoreUnavailable`` when the server cannot be
        reached; the store is usable all the same and answers once it can."""
        if self._client is not None:
            return
        try:
            # Requests beyond the pool's connections wait for one, as long as
            # the socket timeout: a burst queues briefly instead of failing.
            pool = BlockingConnectionPool.from_url(
                self._url,
                max_connections=DEFAULT_CONNECTIONS,
                timeout=self._timeout,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                # One immediate retry replaces a pooled connection the server
                # closed (a restart); no backoff, so a dead server fails fast.
                retry=Retry(NoBackoff(), 1, (RedisConnectionError,)),
            )
        except ValueError as exc:
            raise ConfigurationError(f"rate-limit store URL {_redact(self._url)}: {exc}") from None
        self._client = Redis.from_pool(pool)
        await self._call(self._r.script_load, SCRIPT)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def ping(self) -> None:
        await self._call(self._r.ping)

    async def _call(self, method: Any, *args: Any) -> Any:
        try:
            return await method(*args)
        except (RedisError, OSError) as exc:
            raise self._translate(exc) from None

    def _translate(self, exc: RedisError | OSError) -> RateLimitError:
        reason = " ".join(str(exc).split()) or exc.__class__.__name__
        if isinstance(exc, _UNAVAILABLE) or (
            isinstance(exc, ResponseError) and reason.startswith(_UNAVAILABLE_REPLIES)
        ):
            return StoreUnavailable(f"redis at {_redact(self._url)} is unavailable: {reason}")
        return RateLimitError(f"redis at {_redact(self._url)} refused: {reason}")

    # --- deciding ---------------------------------------------------------------

    def _command(self, hits: Sequence[Hit]) -> tuple[list[Any], list[str | None]]:
        """The EVALSHA arguments for one request, and each hit's concurrency token."""
        now = round(self._clock.time() * 1000)
        keys: list[str] = []
        args: list[Any] = [now, f"{self._id}.{next(self._sequence)}", _SLACK_MS]
        tokens: list[str | None] = []
        for hit in hits:
            if hit.cost < 0:
                raise ValueError(f"a hit's cost must be >= 0, not {hit.cost}")
            algorithm, limit = hit.algorithm, hit.limit
            token = None
            if algorithm is Algorithm.CONCURRENCY:
                token = f"{self._id}.{next(self._sequence)}:{hit.cost}"
            keys.append(self.key(hit.key, algorithm))
            args += (
                algorithm.value,
                limit.requests,
                period_ms(limit),
                capacity(algorithm, limit),
                hit.cost,
                token or "",
            )
            tokens.append(token)
        return ["EVALSHA", self._sha, len(keys), *keys, *args], tokens

    @staticmethod
    def _decisions(
        hits: Sequence[Hit], reply: Sequence[int], tokens: list[str | None]
    ) -> list[Decision]:
        committed = all(reply[i] == 1 for i in range(0, len(reply), 4))
        out = []
        for i, (hit, token) in enumerate(zip(hits, tokens, strict=True)):
            allowed, remaining, reset, retry = reply[4 * i : 4 * i + 4]
            outcome = (allowed == 1, remaining, reset, retry)
            limit = capacity(hit.algorithm, hit.limit)
            out.append(decision(outcome, limit, hit.limit.requests, token, committed))
        return out

    async def hit_many(self, hits: Sequence[Hit]) -> list[Decision]:
        if not hits:
            return []
        command, tokens = self._command(hits)
        client = self._r
        try:
            try:
                reply = await client.execute_command(*command)
            except NoScriptError:
                # The server lost its scripts (restart, SCRIPT FLUSH): load and retry once.
                await client.script_load(SCRIPT)
                reply = await client.execute_command(*command)
        except (RedisError, OSError) as exc:
            raise self._translate(exc) from None
        return self._decisions(hits, reply, tokens)

    async def hit_batch(self, requests: Sequence[Sequence[Hit]]) -> list[list[Decision]]:
        """Every request in one pipelined round trip (plus one more, for the
        requests that meet an unloaded script). Should one request draw an
        error reply, that error is raised, and the others may have counted."""
        commands = [self._command(hits) if hits else ([], []) for hits in requests]
        replies: list[Any] = [[] for _ in requests]
        waiting = [i for i, hits in enumerate(requests) if hits]
        client = self._r
        try:
            for attempt in range(2):
                if not waiting:
                    break
                if attempt:
                    await client.script_load(SCRIPT)
                pipe = client.pipeline(transaction=False)
                for i in waiting:
                    pipe.execute_command(*commands[i][0])
                results = await pipe.execute(raise_on_error=False)
                for i, result in zip(waiting, results, strict=True):
                    replies[i] = result
                waiting = [i for i in waiting if isinstance(replies[i], NoScriptError)]
            for result in replies:
                if isinstance(result, (RedisError, OSError)):
                    raise result
        except (RedisError, OSError) as exc:
            raise self._translate(exc) from None
        return [
            self._decisions(hits, reply, tokens)
            for hits, reply, (_, tokens) in zip(requests, replies, commands, strict=True)
        ]

    # --- the rest of the contract -----------------------------------------------

    async def release(self, key: str, token: str) -> None:
        cost = _token_cost(token)
        if not cost or cost > _MAX_TOKEN_COST:
            return
        names = [f"{token}#{i}" for i in range(1, cost + 1)]
        await self._call(self._r.zrem, self.key(key, Algorithm.CONCURRENCY), *names)

    async def refund(self, key: str, cost: int = 1) -> None:
        if cost > 0:
            # The log's members are scored by admission time: the newest score highest.
            await self._call(self._r.zpopmax, self.key(key, Algorithm.SLIDING_LOG), cost)

    async def reset(self, key: str) -> None:
        await self._call(self._r.delete, *(self.key(key, a) for a in Algorithm))
