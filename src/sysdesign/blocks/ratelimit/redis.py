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

Calls from concurrent tasks travel together: the script calls made in one
pass of the event loop go out as one pipeline (each still its own atomic
call), so a busy process pays one round trip, and redis-py's cost of one,
for many decisions. A lone call waits for nothing but the end of that pass.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
from collections.abc import Sequence
from importlib.resources import files
from typing import Any

from redis.asyncio import Redis
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
from sysdesign.platform.redisurl import fail_fast_pool, redact, split_options

SCRIPT = files("sysdesign.blocks.ratelimit").joinpath("lua/ratelimit.lua").read_text("utf-8")
DEFAULT_TIMEOUT = 0.25  # seconds: a dead or stuck server is reported, not waited for
DEFAULT_CONNECTIONS = 64  # per store; ?max_connections= in the URL overrides it
_SLACK_MS = 1000
# Script calls per pipeline: enough to share the round trip, few enough that
# several pipelines overlap instead of waiting on one another (measured with
# 32 callers: 8 or 32 per pipeline decide fewer per second).
_PIPELINE_CALLS = 16
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
        self._sha = hashlib.sha1(SCRIPT.encode()).hexdigest().encode()
        # Nonces and tokens: unique across processes by the random part.
        self._id = os.urandom(6).hex()
        self._sequence = itertools.count(1)
        # Script calls waiting for the next pipeline, and the pipelines in flight.
        self._waiting: list[tuple[list[Any], asyncio.Future[Any]]] | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    @classmethod
    def from_url(cls, url: str, clock: Clock | None = None) -> RedisRateLimitStore:
        """``redis[s]://[user:password@]host:port/db?prefix=NAME&socket_timeout=SECONDS``;
        other query parameters go to redis-py."""
        url, prefix, timeout = split_options(
            url, what="rate-limit store URL", prefix="sysdesign", timeout=DEFAULT_TIMEOUT
        )
        if not prefix:
            raise ConfigurationError(f"rate-limit store URL: empty prefix in {redact(url)}")
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
            pool = fail_fast_pool(
                self._url, timeout=self._timeout, max_connections=DEFAULT_CONNECTIONS
            )
        except ValueError as exc:
            raise ConfigurationError(f"rate-limit store URL {redact(self._url)}: {exc}") from None
        self._client = Redis.from_pool(pool)
        await self._call(self._r.script_load, SCRIPT)

    async def close(self) -> None:
        # Pipelines in flight end within the socket timeout: let them answer.
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
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
            return StoreUnavailable(f"redis at {redact(self._url)} is unavailable: {reason}")
        return RateLimitError(f"redis at {redact(self._url)} refused: {reason}")

    # --- deciding ---------------------------------------------------------------

    def _command(self, hits: Sequence[Hit]) -> tuple[list[Any], list[str | None]]:
        """The EVALSHA arguments for one request, and each hit's concurrency token.

        Few arguments, as bytes: redis-py checks and encodes each argument on
        its own, which is much of its cost per call."""
        now = round(self._clock.time() * 1000)
        keys: list[bytes] = []
        args = [f"{now} {_SLACK_MS} {self._id}.{next(self._sequence)}".encode()]
        tokens: list[str | None] = []
        prefix = self._prefix
        for hit in hits:
            cost = hit.cost
            if cost < 0:
                raise ValueError(f"a hit's cost must be >= 0, not {cost}")
            algorithm, limit = hit.algorithm, hit.limit
            name = algorithm.value
            n, p, c = limit.requests, period_ms(limit), capacity(algorithm, limit)
            token = None
            if algorithm is Algorithm.CONCURRENCY:
                token = f"{self._id}.{next(self._sequence)}:{cost}"
                args.append(f"{name} {n} {p} {c} {cost} {token}".encode())
            else:
                args.append(f"{name} {n} {p} {c} {cost}".encode())
            keys.append(f"{prefix}:rl:{hit.key}:{name}".encode())
            tokens.append(token)
        return [b"EVALSHA", self._sha, str(len(keys)).encode(), *keys, *args], tokens

    @staticmethod
    def _decisions(
        hits: Sequence[Hit], reply: Sequence[int], tokens: list[str | None]
    ) -> list[Decision]:
        if len(hits) == 1:  # most requests: the loop below, unrolled
            hit, (allowed, remaining, reset, retry) = hits[0], reply
            admitted = allowed == 1
            limit = capacity(hit.algorithm, hit.limit)
            outcome = (admitted, remaining, reset, retry)
            return [decision(outcome, limit, hit.limit.requests, tokens[0], admitted)]
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
        reply = await self._submit(self._r, command)
        return self._decisions(hits, reply, tokens)

    def _submit(self, client: Redis, command: list[Any]) -> asyncio.Future[Any]:
        """Queue one script call for the next pipeline; its reply (or its
        error, as ``RateLimitError``) arrives in the future returned."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        waiting = self._waiting
        if waiting is None or len(waiting) >= _PIPELINE_CALLS:
            # The task starts on the next pass of the loop, when every task
            # ready in this one has queued its call.
            waiting = self._waiting = []
            task = loop.create_task(self._flush(client, waiting))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
        waiting.append((command, future))
        return future

    async def _flush(
        self, client: Redis, batch: list[tuple[list[Any], asyncio.Future[Any]]]
    ) -> None:
        """Send ``batch`` as one pipeline and hand each caller its reply."""
        if self._waiting is batch:
            self._waiting = None
        try:
            replies = await self._pipeline(client, [command for command, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            # Every call in the pipeline shares its fate, each with its own exception.
            for _, future in batch:
                if not future.done():
                    future.set_exception(
                        self._translate(exc) if isinstance(exc, (RedisError, OSError)) else exc
                    )
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its caller was cancelled
                continue
            if isinstance(reply, (RedisError, OSError)):
                future.set_exception(self._translate(reply))
            else:
                future.set_result(reply)

    async def _pipeline(self, client: Redis, commands: list[list[Any]]) -> list[Any]:
        """Send the script calls in one round trip (plus one more for those that
        meet an unloaded script); the replies in order, an error reply in place."""
        if len(commands) == 1:
            try:
                return [await client.execute_command(*commands[0])]
            except NoScriptError:
                await client.script_load(SCRIPT)
                return [await client.execute_command(*commands[0])]
            except ResponseError as exc:
                return [exc]
        replies: list[Any] = [None] * len(commands)
        waiting = list(range(len(commands)))
        for attempt in range(2):
            if not waiting:
                break
            if attempt:
                # The server lost its scripts (restart, SCRIPT FLUSH): load and retry once.
                await client.script_load(SCRIPT)
            pipe = client.pipeline(transaction=False)
            for i in waiting:
                pipe.execute_command(*commands[i])
            results = await pipe.execute(raise_on_error=False)
            for i, result in zip(waiting, results, strict=True):
                replies[i] = result
            waiting = [i for i in waiting if isinstance(replies[i], NoScriptError)]
        return replies

    async def hit_batch(self, requests: Sequence[Sequence[Hit]]) -> list[list[Decision]]:
        """Every request in one pipelined round trip (plus one more, for the
        requests that meet an unloaded script). Should one request draw an
        error reply, that error is raised, and the others may have counted."""
        sent = [(hits, *self._command(hits)) for hits in requests if hits]
        client = self._r
        try:
            replies = await self._pipeline(client, [command for _, command, _ in sent])
        except (RedisError, OSError) as exc:
            raise self._translate(exc) from None
        for reply in replies:
            if isinstance(reply, (RedisError, OSError)):
                raise self._translate(reply)
        answers = iter(
            self._decisions(hits, reply, tokens)
            for (hits, _, tokens), reply in zip(sent, replies, strict=True)
        )
        return [next(answers) if hits else [] for hits in requests]

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
