"""The arithmetic of each algorithm: small pure functions over one key's state.

Units. Time is whole milliseconds: ``now`` is ``round(seconds * 1000)`` and a
limit is ``n`` requests per ``p`` ms (``period_ms``), so a period resolves to
the millisecond. Waiting times come back in *ticks* of ``1/n`` ms. Every
quantity is then an integer and every comparison exact: no float rounding
can admit one request too many, or refuse one that lands exactly on a
refill or a window boundary. The Redis script (``lua/ratelimit.lua``) does
the same integer arithmetic, so both stores give the same answers. Products
stay below 2**53 (exact in the script's doubles) while ``capacity * p``
does, which holds for, say, a million requests per day.

An ``Outcome`` is ``(allowed, remaining, reset, retry)``: ``remaining`` what
could still be admitted now, ``reset`` the ticks until the key is back to its
full allowance, ``retry`` the ticks until a request of the same cost could be
admitted (0 when this one was; ``NEVER`` when its cost exceeds the capacity,
as waiting cannot help). Plain tuples, as the memory store makes one per
decision and must be fast.

Scalar states are tuples whose first item is the millisecond from which the
state means the same as no state at all (the bucket is full again, the
windows are over), so a store can drop a key lazily or in a sweep without
knowing the limit. ``None`` is the state of a key with nothing counted. A
function returns the new state when the hit is admitted and the old one
when it is refused.

Accuracy and memory, per key:

- ``token_bucket``: exact. ``(expires, level, last)``: the level is tokens
  times ``p`` (a token refills every ``p/n`` ms), refilled lazily from the
  time of the last update. Over any interval of ``t`` ms it admits at most
  ``capacity + n * t / p``.
- ``gcra``: exact and the same shape as ``token_bucket`` (one is the other's
  dual), keeping one number: the theoretical arrival time ``tat``, in ticks.
  A hit of cost ``k`` is admitted when ``tat + k * p - now * n`` stays
  within ``capacity * p``; requests are spaced ``p/n`` ms apart once the
  burst is spent.
- ``fixed_window``: ``(end, count)`` for the current window, windows
  aligned to multiples of ``p`` since the epoch. Cheapest, and up to twice
  the limit over a span of ``p`` across a boundary: ``n`` just before it,
  ``n`` just after.
- ``sliding_log``: exact over any ``p`` ms: an entry admitted at ``t``
  counts while ``now < t + p``. One timestamp per admitted request (``cost``
  entries for a hit of cost ``cost``), so up to ``n`` per key.
- ``sliding_window``: ``(expires, window, current, previous)``: two
  counters of aligned windows. The estimate at offset ``e`` into the
  current window is ``previous * (p - e) / p + current``: it assumes the
  previous window's hits were spread evenly over it. When they were not,
  the count in a true window of ``p`` ms ending now can be off either way.
  Worst case over: ``n`` hits at the very end of one window, then, at
  offset ``e`` into the next, up to ``floor(n * e / p)`` more are admitted,
  so a true window holds up to ``n + floor(n * (p - 2) / p)``, always fewer
  than ``2n``. Worst case under: ``n`` hits at the very start of one window
  still weigh ``n * (p - e) / p`` at offset ``e`` into the next, though they
  have left the true window, so a key can be refused with as few as
  ``n - ceil(n * (p - e) / p)`` requests in its true window. With hits
  spread evenly the estimate is exact.
- ``concurrency``: exact count of slots held. One entry per request in
  flight (``token -> (expiry, cost)``), each released by its holder or
  expiring ``p`` ms after it was taken. ``retry`` is when the slots needed
  expire at the latest; a release can free them sooner.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from itertools import repeat
from typing import Any

from sysdesign.blocks.ratelimit.base import Algorithm, Decision, Limit

Outcome = tuple[bool, int, int, int]
# ``(expires, level, last)``, ``(expires, tat)``, ``(end, count)``,
# ``(expires, window, current, previous)``: see the module docstring.
State = tuple[int, ...]

NEVER = -1
BUCKETS = frozenset({Algorithm.TOKEN_BUCKET, Algorithm.GCRA})


def period_ms(limit: Limit) -> int:
    """The limit's period in whole milliseconds, at least 1."""
    return max(1, round(limit.period * 1000))


def capacity(algorithm: Algorithm, limit: Limit) -> int:
    """How much the key may hold at once: ``burst`` for the buckets, else ``requests``."""
    return limit.capacity if algorithm in BUCKETS else limit.requests


def seconds(ticks: int, n: int) -> float:
    """Ticks of ``1/n`` ms as seconds; ``NEVER`` is ``math.inf``."""
    return math.inf if ticks == NEVER else ticks / (n * 1000)


def decision(
    outcome: Outcome, limit: int, n: int, token: str | None = None, committed: bool = True
) -> Decision:
    """The ``Decision`` for an outcome. ``committed`` is false for a hit that
    passed in a request that another limit refused: it reports the untouched
    state (``outcome`` was computed with cost 0) and holds no token."""
    allowed, remaining, reset, retry = outcome
    return Decision(
        allowed,
        limit,
        remaining,
        reset / (n * 1000),
        0.0 if allowed else seconds(retry, n),
        token if committed else None,
    )


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def token_bucket(
    state: State | None, n: int, p: int, c: int, cost: int, now: int
) -> tuple[Outcome, State | None]:
    full = c * p
    if state is None:
        level, last = full, now
    else:
        _, level, last = state
        if now > last:
            # A clock that stepped back refills nothing until it catches up.
            level = min(full, level + (now - last) * n)
            last = now
    need = cost * p
    if need <= level:
        level -= need
        missing = full - level
        new = (last + _ceil_div(missing, n), level, last) if missing else None
        return (True, level // p, missing, 0), new
    retry = NEVER if cost > c else need - level
    return (False, level // p, full - level, retry), state


def gcra(
    state: State | None, n: int, p: int, c: int, cost: int, now: int
) -> tuple[Outcome, State | None]:
    now_ticks = now * n
    # How far the theoretical arrival time lies ahead of now: the bucket's debt.
    debt = max(state[1] - now_ticks, 0) if state is not None else 0
    room = c * p
    after = debt + cost * p
    if after <= room:
        new = (now + _ceil_div(after, n), now_ticks + after) if after else None
        return (True, (room - after) // p, after, 0), new
    retry = NEVER if cost > c else after - room
    return (False, (room - debt) // p, debt, retry), state


def fixed_window(
    state: State | None, n: int, p: int, c: int, cost: int, now: int
) -> tuple[Outcome, State | None]:
    # ``now < end`` also keeps the count when the clock steps back a window.
    if state is not None and now < state[0]:
        end, count = state
    else:
        end, count = (now // p + 1) * p, 0
    left = (end - now) * n
    if count + cost <= n:
        count += cost
        return (True, n - count, left if count else 0, 0), ((end, count) if count else None)
    retry = NEVER if cost > n else left
    return (False, n - count, left if count else 0, retry), state


def sliding_window(
    state: State | None, n: int, p: int, c: int, cost: int, now: int
) -> tuple[Outcome, State | None]:
    window, offset = divmod(now, p)
    current = previous = 0
    if state is not None:
        _, stored, cur, prev = state
        if stored >= window:  # this window (or a later one, if the clock stepped back)
            current, previous = cur, prev
        elif stored == window - 1:
            previous = cur
    full = n * p
    # The estimate times p: previous * (p - offset) / p + current, kept whole.
    weighted = previous * (p - offset) + current * p
    need = cost * p
    allowed = weighted + need <= full
    if allowed:
        current += cost
        weighted += need
    if current:
        reset = ((window + 2) * p - now) * n
    elif previous:
        reset = ((window + 1) * p - now) * n
    else:
        reset = 0
    remaining = max(full - weighted, 0) // p
    if allowed:
        new = (now + reset // n, window, current, previous) if reset else None
        return (True, remaining, reset, 0), new
    return (False, remaining, reset, _sliding_retry(n, p, current, previous, cost, offset)), state


def _sliding_retry(n: int, p: int, current: int, previous: int, cost: int, offset: int) -> int:
    """Ticks until ``cost`` fits, if nothing else is admitted meanwhile."""
    if cost > n:
        return NEVER
    slack = (n - current - cost) * p
    if slack >= 0 and previous:
        # Later in this window: previous * (p - e) <= slack.
        at = p - slack // previous
        if at < p:
            return (at - offset) * n
    # In the next window the current count becomes the previous one.
    at = p - ((n - cost) * p) // current if current else 0
    return (p - offset + max(at, 0)) * n


def prune_log(log: deque[int], p: int, now: int) -> None:
    """Drop the entries of a sliding log that have left the window."""
    horizon = now - p
    while log and log[0] <= horizon:
        log.popleft()


def sliding_log(log: Sequence[int], pending: int, n: int, p: int, cost: int, now: int) -> Outcome:
    """Decide on a pruned, ascending log plus ``pending`` entries at ``now``
    (admitted earlier in the same request, not yet appended)."""
    stored = len(log)
    count = stored + pending
    allowed = count + cost <= n
    if allowed:
        count += cost
    reset = 0
    if count:
        newest = now if count > stored else log[-1]
        if stored and log[-1] > newest:
            newest = log[-1]
        reset = (newest + p - now) * n
    if allowed:
        return (True, n - count, reset, 0)
    if cost > n:
        return (False, n - count, reset, NEVER)
    # The request fits once the k oldest entries have left the window.
    k = count + cost - n
    oldest = log[k - 1] if k <= stored else now
    return (False, n - count, reset, (oldest + p - now) * n)


def append_log(log: deque[int], cost: int, now: int) -> None:
    if log and log[-1] > now:
        # The clock stepped back: keep the log in order so pruning stays exact.
        log.extend(repeat(now, cost))
        ordered = sorted(log)
        log.clear()
        log.extend(ordered)
    else:
        log.extend(repeat(now, cost))


def concurrency(
    slots: Iterable[tuple[int, int]],
    held: int,
    latest: int,
    pending: int,
    n: int,
    p: int,
    cost: int,
    now: int,
) -> Outcome:
    """Decide on the unexpired ``slots`` (``(expiry, cost)`` in expiry order)
    holding ``held`` in all, the latest expiring at ``latest``, plus
    ``pending`` taken earlier in the same request (expiring at ``now + p``)."""
    count = held + pending
    allowed = count + cost <= n
    if allowed:
        count += cost
    reset = 0
    if count:
        last = now + p if count > held else latest
        reset = (max(last, latest) - now) * n
    if allowed:
        return (True, n - count, reset, 0)
    if cost > n:
        return (False, n - count, reset, NEVER)
    expiry = _kth_expiry(slots, count + cost - n, held, now + p)
    return (False, n - count, reset, (expiry - now) * n)


def _kth_expiry(slots: Iterable[tuple[int, int]], k: int, held: int, pending_expiry: int) -> int:
    """When the ``k``-th earliest slot expires: a held one, else a pending one."""
    if k <= held:
        freed = 0
        for expiry, slot_cost in slots:
            freed += slot_cost
            if freed >= k:
                return expiry
    return pending_expiry


SCALAR: dict[Algorithm, Any] = {
    Algorithm.TOKEN_BUCKET: token_bucket,
    Algorithm.GCRA: gcra,
    Algorithm.FIXED_WINDOW: fixed_window,
    Algorithm.SLIDING_WINDOW: sliding_window,
}
