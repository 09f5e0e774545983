"""``MemoryRateLimitStore``: the counters in this process's memory.

Decisions are atomic by construction: ``hit_many`` never awaits, so no other
task runs between reading a key's state and writing it back.

Memory is bounded by the keys that still limit someone. A key whose state
has fully reset (its bucket is full, its windows are over, its log and
slots have expired) means the same as no key, so it is dropped: when it is
next touched, and by a sweep of every key that runs after a number of
decisions proportional to the number of keys (so its cost per decision
stays constant). Nothing is ever evicted while it still counts.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from sysdesign.blocks.ratelimit.algorithms import (
    BUCKETS,
    SCALAR,
    Outcome,
    State,
    append_log,
    concurrency,
    decision,
    prune_log,
    seconds,
    sliding_log,
)
from sysdesign.blocks.ratelimit.base import Algorithm, Decision, Hit, RateLimitStore
from sysdesign.platform.clock import Clock, SystemClock

# The sweep runs after max(_SWEEP_MIN, 2 * keys) decisions.
_SWEEP_MIN = 4096
_LOG = Algorithm.SLIDING_LOG
_SLOTS = Algorithm.CONCURRENCY


def _decision_maker() -> Callable[..., Decision]:
    """Makes a ``Decision`` from its six fields, in order.

    A frozen dataclass's ``__init__`` sets each field through
    ``object.__setattr__`` by name, about a third of the cost of a decision
    here; setting the slots directly does the same in half the time. Should
    ``Decision`` change shape or gain a ``__post_init__``, its own constructor
    is used."""
    names = ("allowed", "limit", "remaining", "reset_after", "retry_after", "token")
    fields = tuple(f.name for f in dataclasses.fields(Decision))
    if fields != names or hasattr(Decision, "__post_init__"):
        return Decision
    a, b, c, d, e, f = (Decision.__dict__[name].__set__ for name in names)
    new = Decision.__new__

    def make(
        allowed: bool,
        limit: int,
        remaining: int,
        reset_after: float,
        retry_after: float,
        token: str | None,
    ) -> Decision:
        made = new(Decision)
        a(made, allowed)
        b(made, limit)
        c(made, remaining)
        d(made, reset_after)
        e(made, retry_after)
        f(made, token)
        return made

    return make


_make = _decision_maker()


class _Log(deque[int]):
    """A sliding log: admission times in ms, ascending, and the period it was
    last hit with, so that a sweep knows when it has expired."""

    __slots__ = ("period",)

    def __init__(self, period: int) -> None:
        super().__init__()
        self.period = period


class _Slots:
    """The concurrency slots of one key: ``token -> (expiry ms, cost)`` in the
    order taken, which is expiry order while the clock and the period hold."""

    __slots__ = ("held", "tokens")

    def __init__(self) -> None:
        self.held = 0
        self.tokens: dict[str, tuple[int, int]] = {}

    def prune(self, now: int) -> None:
        tokens = self.tokens
        while tokens:
            token = next(iter(tokens))
            expiry, cost = tokens[token]
            # In taking order: one taken under a shorter period (or after the
            # clock stepped back) waits for those before it, counting a little long.
            if expiry > now:
                return
            del tokens[token]
            self.held -= cost

    def latest(self) -> int:
        return next(reversed(self.tokens.values()))[0] if self.tokens else 0


def _numbers(hit: Hit) -> tuple[int, int, int]:
    """``(n, p, c)``: requests, period in ms, capacity."""
    if hit.cost < 0:
        raise ValueError(f"a hit's cost must be >= 0, not {hit.cost}")
    limit = hit.limit
    n = limit.requests
    p = round(limit.period * 1000) or 1
    c = (limit.burst or n) if hit.algorithm in BUCKETS else n
    return n, p, c


class MemoryRateLimitStore(RateLimitStore):
    """Counters in one process: exact, atomic, gone on restart.

    In a refused request, a hit that would have passed says ``allowed`` with
    its key's numbers untouched, and holds no token. Hits on the same key and
    algorithm within one request are decided one after the other. A cost of
    0 only reads. ``hit_many`` raises ``ValueError`` for a negative cost,
    before counting anything; it never raises ``StoreUnavailable``.
    """

    name = "memory"

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or SystemClock()
        self._scalars: dict[Algorithm, dict[str, State]] = {a: {} for a in SCALAR}
        self._logs: dict[str, _Log] = {}
        self._slots: dict[str, _Slots] = {}
        self._tokens = itertools.count(1)
        self._decisions = 0
        self._sweep_at = _SWEEP_MIN

    def __len__(self) -> int:
        """How many key states are held, across algorithms."""
        return sum(map(len, self._scalars.values())) + len(self._logs) + len(self._slots)

    # --- deciding ---------------------------------------------------------------

    async def hit(self, hit: Hit) -> Decision:
        # ``_now`` inlined: this is the path every single-limit request takes.
        now = round(self._clock.time() * 1000)
        self._decisions += 1
        if self._decisions >= self._sweep_at:
            self.sweep(now)
        return self._single(hit, now)

    async def hit_many(self, hits: Sequence[Hit]) -> list[Decision]:
        now = self._now()
        if len(hits) == 1:
            return [self._single(hits[0], now)]
        return self._request(hits, now) if hits else []

    def _now(self) -> int:
        now = round(self._clock.time() * 1000)
        self._decisions += 1
        if self._decisions >= self._sweep_at:
            self.sweep(now)
        return now

    def _scalar(self, algorithm: Algorithm, key: str, now: int) -> State | None:
        table = self._scalars[algorithm]
        state = table.get(key)
        if state is not None and state[0] <= now:
            del table[key]
            return None
        return state

    def _log(self, key: str, p: int, now: int) -> _Log | None:
        log = self._logs.get(key)
        if log is not None:
            log.period = p
            prune_log(log, p, now)
            if not log:
                del self._logs[key]
                return None
        return log

    def _slot(self, key: str, now: int) -> _Slots | None:
        slots = self._slots.get(key)
        if slots is not None:
            slots.prune(now)
            if not slots.tokens:
                del self._slots[key]
                return None
        return slots

    def _single(self, hit: Hit, now: int) -> Decision:
        """One hit, decided and applied at once: the fast path of ``hit``, with
        the helpers the other paths share inlined where that saves calls."""
        algorithm, key, cost, limit = hit.algorithm, hit.key, hit.cost, hit.limit
        if cost < 0:
            raise ValueError(f"a hit's cost must be >= 0, not {cost}")
        n = c = limit.requests
        p = round(limit.period * 1000) or 1
        token = None
        decide = SCALAR.get(algorithm)
        if decide is not None:
            if algorithm in BUCKETS:
                c = limit.burst or n
            table = self._scalars[algorithm]
            state = table.get(key)
            if state is not None and state[0] <= now:
                del table[key]
                state = None
            outcome, new = decide(state, n, p, c, cost, now)
            if outcome[0]:
                if new is not None:
                    table[key] = new
                elif state is not None:
                    del table[key]
        elif algorithm is _LOG:
            log = self._logs.get(key)
            if log is not None:
                log.period = p
                if not log or log[0] <= now - p:  # something to prune: ``_log``
                    prune_log(log, p, now)
                    if not log:
                        del self._logs[key]
                        log = None
            stored = len(log) if log is not None else 0
            if cost and stored + cost <= n:
                # Admitted: ``sliding_log`` and ``append_log`` in their common case.
                newest = log[-1] if log is not None and log[-1] > now else now
                outcome = (True, n - stored - cost, (newest + p - now) * n, 0)
                if log is not None and cost == 1 and log[-1] <= now:
                    log.append(now)
                else:
                    self._append(key, cost, p, now)
            else:
                outcome = sliding_log(log or (), 0, n, p, cost, now)
        else:
            slots = self._slot(key, now)
            if slots is None:
                outcome = concurrency((), 0, 0, 0, n, p, cost, now)
            else:
                outcome = concurrency(
                    slots.tokens.values(), slots.held, slots.latest(), 0, n, p, cost, now
                )
            if outcome[0]:
                token = self._take(key, cost, now + p)
        # ``algorithms.decision`` for a committed hit.
        allowed, remaining, reset, retry = outcome
        return _make(
            allowed, c, remaining, reset / (n * 1000), 0.0 if allowed else seconds(retry, n), token
        )

    def _request(self, hits: Sequence[Hit], now: int) -> list[Decision]:
        """Several hits, all-or-nothing: each is decided against the state the
        earlier hits of the request would leave; nothing is applied unless all pass."""
        numbers = [_numbers(hit) for hit in hits]
        staged: dict[tuple[Algorithm, str], Any] = {}
        outcomes: list[Outcome] = []
        for hit, (n, p, c) in zip(hits, numbers, strict=True):
            outcomes.append(self._staged(hit, hit.cost, n, p, c, now, staged))
        if all(outcome[0] for outcome in outcomes):
            for (algorithm, key), change in staged.items():
                if algorithm in SCALAR:  # its final state; logs and slots change per hit
                    if change is None:
                        self._scalars[algorithm].pop(key, None)
                    else:
                        self._scalars[algorithm][key] = change
            decisions = []
            for hit, outcome, (n, p, c) in zip(hits, outcomes, numbers, strict=True):
                token = None
                if hit.algorithm is _SLOTS:
                    token = self._take(hit.key, hit.cost, now + p)
                elif hit.algorithm is _LOG and hit.cost:
                    self._append(hit.key, hit.cost, p, now)
                decisions.append(decision(outcome, c, n, token))
            return decisions
        decisions = []
        for hit, outcome, (n, p, c) in zip(hits, outcomes, numbers, strict=True):
            if outcome[0]:
                # Nothing was consumed: report the untouched state.
                outcome = self._staged(hit, 0, n, p, c, now, {})
                decisions.append(decision(outcome, c, n, committed=False))
            else:
                decisions.append(decision(outcome, c, n))
        return decisions

    def _staged(
        self,
        hit: Hit,
        cost: int,
        n: int,
        p: int,
        c: int,
        now: int,
        staged: dict[tuple[Algorithm, str], Any],
    ) -> Outcome:
        """Decide ``hit`` at ``cost`` over the store as changed by ``staged``,
        and stage its change."""
        algorithm, key = hit.algorithm, hit.key
        ident = (algorithm, key)
        decide = SCALAR.get(algorithm)
        if decide is not None:
            state = staged[ident] if ident in staged else self._scalar(algorithm, key, now)
            outcome, new = decide(state, n, p, c, cost, now)
            if outcome[0]:
                staged[ident] = new
            return outcome
        pending = staged.get(ident, 0)
        if algorithm is _LOG:
            outcome = sliding_log(self._log(key, p, now) or (), pending, n, p, cost, now)
        else:
            slots = self._slot(key, now)
            if slots is None:
                outcome = concurrency((), 0, 0, pending, n, p, cost, now)
            else:
                outcome = concurrency(
                    slots.tokens.values(), slots.held, slots.latest(), pending, n, p, cost, now
                )
        if outcome[0]:
            staged[ident] = pending + cost
        return outcome

    def _append(self, key: str, cost: int, p: int, now: int) -> None:
        log = self._logs.get(key)
        if log is None:
            log = self._logs[key] = _Log(p)
        append_log(log, cost, now)

    def _take(self, key: str, cost: int, expiry: int) -> str:
        token = str(next(self._tokens))
        if cost:
            slots = self._slots.get(key)
            if slots is None:
                slots = self._slots[key] = _Slots()
            slots.tokens[token] = (expiry, cost)
            slots.held += cost
        return token

    # --- the rest of the contract -----------------------------------------------

    async def refund(self, key: str, cost: int = 1) -> None:
        log = self._logs.get(key)
        if log is None:
            return
        for _ in range(min(cost, len(log))):
            log.pop()
        if not log:
            del self._logs[key]

    async def release(self, key: str, token: str) -> None:
        slots = self._slots.get(key)
        if slots is None:
            return
        taken = slots.tokens.pop(token, None)
        if taken is not None:
            slots.held -= taken[1]
            if not slots.tokens:
                del self._slots[key]

    async def reset(self, key: str) -> None:
        for table in self._scalars.values():
            table.pop(key, None)
        self._logs.pop(key, None)
        self._slots.pop(key, None)

    def sweep(self, now: int | None = None) -> int:
        """Drop every key whose state has fully reset; returns how many.

        ``now`` is in milliseconds (default: the clock's). A log expires
        with its newest entry, under the period it was last hit with.
        """
        if now is None:
            now = round(self._clock.time() * 1000)
        dropped = 0
        for table in self._scalars.values():
            dead = [key for key, state in table.items() if state[0] <= now]
            for key in dead:
                del table[key]
            dropped += len(dead)
        for key, slots in list(self._slots.items()):
            slots.prune(now)
            if not slots.tokens:
                del self._slots[key]
                dropped += 1
        dead = [key for key, log in self._logs.items() if not log or log[-1] + log.period <= now]
        for key in dead:
            del self._logs[key]
        dropped += len(dead)
        self._decisions = 0
        self._sweep_at = max(_SWEEP_MIN, 2 * len(self))
        return dropped
