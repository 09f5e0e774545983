"""Property: whatever the sequence of waits and costs, the memory store's token
bucket and sliding log never admit more than their bound over any window."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from sysdesign.blocks.ratelimit import Algorithm, Hit, Limit, MemoryRateLimitStore
from sysdesign.platform.clock import ManualClock

# (milliseconds to wait, cost): waits often zero, so bursts are common.
steps = st.lists(
    st.tuples(st.one_of(st.just(0), st.integers(0, 3000)), st.integers(0, 4)),
    min_size=1,
    max_size=80,
)
limits = st.tuples(st.integers(1, 8), st.integers(1, 4000), st.integers(1, 8))


def run(
    algorithm: Algorithm, limit: Limit, sequence: list[tuple[int, int]]
) -> list[tuple[int, int, bool]]:
    """Each step as ``(ms, cost, admitted)``, times as the store saw them."""

    async def scenario() -> list[tuple[int, int, bool]]:
        clock = ManualClock(start=1000.0)
        store = MemoryRateLimitStore(clock)
        out = []
        for wait, cost in sequence:
            clock.advance(wait / 1000)
            decision = await store.hit(Hit(algorithm, "k", limit, cost))
            out.append((round(clock.time() * 1000), cost, decision.allowed))
        return out

    return asyncio.run(scenario())


@settings(max_examples=150, deadline=None)
@given(limits, steps)
def test_token_bucket_never_exceeds_burst_plus_refill(
    shape: tuple[int, int, int], sequence: list[tuple[int, int]]
) -> None:
    n, p, burst = shape
    events = run(Algorithm.TOKEN_BUCKET, Limit(n, p / 1000, burst), sequence)
    admitted = [(t, cost) for t, cost, ok in events if ok]
    for i, (start, _) in enumerate(admitted):
        total = 0
        for end, cost in admitted[i:]:
            total += cost
            # Over [start, end]: at most burst + n * (end - start) / p.
            assert total * p <= burst * p + n * (end - start)


@settings(max_examples=150, deadline=None)
@given(limits, steps)
def test_sliding_log_never_exceeds_the_limit_and_refuses_only_when_full(
    shape: tuple[int, int, int], sequence: list[tuple[int, int]]
) -> None:
    n, p, _ = shape
    events = run(Algorithm.SLIDING_LOG, Limit(n, p / 1000), sequence)
    for i, (now, cost, ok) in enumerate(events):
        # What was admitted in the window (now - p, now] before this step.
        before = sum(c for t, c, a in events[:i] if a and t > now - p)
        if ok:
            assert before + cost <= n
        else:
            assert before + cost > n  # exact: it refuses only what would overflow
