"""The rate-limit contract: algorithms, limits, decisions, and the store that decides.

A *limit* says how much a *key* may do: ``requests`` per ``period`` seconds,
with an optional ``burst`` for the bucket algorithms. The store applies one of
six *algorithms* to a key and answers with a ``Decision``. Each algorithm
trades accuracy for memory differently:

============== ======================================= ==================================
algorithm      accuracy                                memory per key
============== ======================================= ==================================
token_bucket   exact; bursts up to ``burst`` then a    two numbers (tokens, last refill)
               steady ``requests/period``
gcra           exact, same shape as token_bucket,      one number (theoretical arrival
               spacing requests evenly                 time)
fixed_window   up to 2x the limit across a window      one counter per window
               boundary (N at the end of one window,
               N at the start of the next)
sliding_log    exact over any window of ``period``     one timestamp per admitted request
               seconds                                 (up to ``requests``)
sliding_window approximate: weights the previous       two counters
               window's count by its overlap; can
               admit more or fewer than the limit in a
               true window (bounded error documented
               in ``algorithms``)
concurrency    exact count of requests in flight,      one entry per request in flight
               each released by the holder or after
               ``period`` seconds if it never is
============== ======================================= ==================================

Every decision on one store is atomic: concurrent hits on one key never
admit more than the algorithm allows. ``hit_many`` decides several limits
for one request at once and is all-or-nothing: if any limit refuses, none
is consumed.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class Algorithm(StrEnum):
    TOKEN_BUCKET = "token_bucket"
    GCRA = "gcra"
    FIXED_WINDOW = "fixed_window"
    SLIDING_LOG = "sliding_log"
    SLIDING_WINDOW = "sliding_window"
    CONCURRENCY = "concurrency"


class RateLimitError(Exception):
    """Base class of the block's own errors."""


class StoreUnavailable(RateLimitError):
    """The store could not decide (its server is down or timed out); the
    caller applies the rule's failure policy."""


@dataclass(frozen=True, slots=True)
class Limit:
    """``requests`` per ``period`` seconds; ``burst`` (bucket algorithms only)
    is how many may come at once, default ``requests``."""

    requests: int
    period: float
    burst: int | None = None

    def __post_init__(self) -> None:
        if self.requests < 1:
            raise ValueError("a limit needs requests >= 1")
        if self.period <= 0:
            raise ValueError("a limit needs a period > 0 seconds")
        if self.burst is not None and self.burst < 1:
            raise ValueError("burst must be >= 1")

    @property
    def capacity(self) -> int:
        return self.burst if self.burst is not None else self.requests


@dataclass(frozen=True, slots=True)
class Hit:
    """One limit to decide for a request."""

    algorithm: Algorithm
    key: str
    limit: Limit
    cost: int = 1


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer for one limit.

    ``remaining``: what could still be admitted now (after this hit, when it
    was admitted). ``reset_after``: seconds until the key is back to its full
    allowance. ``retry_after``: seconds until a request of the same cost could
    be admitted (0 when this one was). ``token``: for ``concurrency``, what to
    pass to ``release`` when the request finishes.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    retry_after: float
    token: str | None = None


class RateLimitStore(ABC):
    """Where counters live: ``memory`` (one process) or ``redis`` (shared).

    ``now`` comes from the store's injected clock (``Clock.time()``), so every
    process sharing a Redis store must keep its clock in sync (NTP); tests
    move a ``ManualClock`` instead of sleeping.
    """

    name: str = "?"

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    @abstractmethod
    async def hit_many(self, hits: Sequence[Hit]) -> list[Decision]:
        """Decide every hit of one request atomically, all-or-nothing: when any
        is refused none is consumed, and each refused one says so. Raises
        ``StoreUnavailable`` when the store cannot answer."""

    async def hit(self, hit: Hit) -> Decision:
        return (await self.hit_many([hit]))[0]

    async def hit_batch(self, requests: Sequence[Sequence[Hit]]) -> list[list[Decision]]:
        """Decide many independent requests (each all-or-nothing) in one round
        trip where the store allows (Redis pipelines them); answers in order."""
        return [await self.hit_many(hits) for hits in requests]

    @abstractmethod
    async def refund(self, key: str, cost: int = 1) -> None:
        """Take back the ``cost`` most recent admissions of ``key``'s sliding log:
        for limits that count failures, where an attempt is counted before the
        check it guards and given back when it succeeds. Does nothing for an
        empty or expired log."""

    @abstractmethod
    async def release(self, key: str, token: str) -> None:
        """End a ``concurrency`` request admitted with ``token``; releasing twice,
        or after the slot expired, does nothing."""

    @abstractmethod
    async def reset(self, key: str) -> None:
        """Forget everything counted for ``key`` under every algorithm."""


async def hit_many_or_fallback(
    store: RateLimitStore, fallback: RateLimitStore, hits: Sequence[Hit]
) -> list[Decision]:
    """``store.hit_many(hits)``, or the same on ``fallback`` (a per-process
    store) while ``store`` is unavailable."""
    try:
        return await store.hit_many(hits)
    except StoreUnavailable:
        return await fallback.hit_many(hits)


async def hit_batch_or_fallback(
    store: RateLimitStore, fallback: RateLimitStore, requests: Sequence[Sequence[Hit]]
) -> list[list[Decision]]:
    """``store.hit_batch(requests)``, or the same on ``fallback`` while ``store``
    is unavailable."""
    try:
        return await store.hit_batch(requests)
    except StoreUnavailable:
        return await fallback.hit_batch(requests)


def retry_after_seconds(refused: Sequence[Decision]) -> int:
    """Whole seconds until every refused limit could admit again (at least 1),
    for a ``Retry-After`` header."""
    waits = [math.ceil(d.retry_after) for d in refused if math.isfinite(d.retry_after)]
    return max(1, max(waits, default=1))
