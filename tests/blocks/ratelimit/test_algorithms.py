"""Each algorithm's exact behaviour on each store, moved by the manual clock:
bursts, refills, window boundaries, costs, and the numbers in every decision."""

from __future__ import annotations

import math

import pytest

from sysdesign.blocks.ratelimit import Algorithm, Decision, Hit, Limit, RateLimitStore
from sysdesign.platform.clock import ManualClock
from tests.blocks.ratelimit.conftest import align

A = Algorithm


async def take(
    store: RateLimitStore,
    algorithm: Algorithm,
    limit: Limit,
    times: int = 1,
    *,
    key: str = "k",
    cost: int = 1,
) -> list[Decision]:
    return [await store.hit(Hit(algorithm, key, limit, cost)) for _ in range(times)]


def allowed(decisions: list[Decision]) -> list[bool]:
    return [d.allowed for d in decisions]


# --- token bucket and GCRA: the same shape, two representations ------------------


@pytest.mark.parametrize("algorithm", [A.TOKEN_BUCKET, A.GCRA])
async def test_a_bucket_admits_its_burst_then_one_per_interval(
    store: RateLimitStore, clock: ManualClock, algorithm: Algorithm
) -> None:
    limit = Limit(10, 1.0, burst=5)  # a token every 100 ms, five at most
    burst = await take(store, algorithm, limit, 5)
    assert allowed(burst) == [True] * 5
    assert [d.remaining for d in burst] == [4, 3, 2, 1, 0]
    assert [d.reset_after for d in burst] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert all(d.retry_after == 0 and d.limit == 5 and d.token is None for d in burst)

    [refused] = await take(store, algorithm, limit)
    assert not refused.allowed
    assert refused.remaining == 0
    assert refused.retry_after == pytest.approx(0.1)
    assert refused.reset_after == pytest.approx(0.5)

    clock.advance(0.099)
    [early] = await take(store, algorithm, limit)
    assert not early.allowed and early.retry_after == pytest.approx(0.001)
    clock.advance(0.001)
    assert allowed(await take(store, algorithm, limit, 2)) == [True, False]

    clock.advance(0.25)  # two and a half tokens
    decisions = await take(store, algorithm, limit, 3)
    assert allowed(decisions) == [True, True, False]
    assert decisions[2].retry_after == pytest.approx(0.05)

    clock.advance(3600)  # refills up to the burst, no further
    assert allowed(await take(store, algorithm, limit, 6)) == [True] * 5 + [False]


@pytest.mark.parametrize("algorithm", [A.TOKEN_BUCKET, A.GCRA])
async def test_a_bucket_charges_the_cost_and_never_admits_more_than_its_capacity(
    store: RateLimitStore, clock: ManualClock, algorithm: Algorithm
) -> None:
    limit = Limit(10, 1.0, burst=5)
    [first] = await take(store, algorithm, limit, cost=3)
    assert first.allowed and first.remaining == 2
    assert first.reset_after == pytest.approx(0.3)

    [second] = await take(store, algorithm, limit, cost=3)
    assert not second.allowed and second.remaining == 2
    assert second.retry_after == pytest.approx(0.1)  # one more token is needed

    [third] = await take(store, algorithm, limit, cost=2)
    assert third.allowed and third.remaining == 0

    clock.advance(3600)
    [huge] = await take(store, algorithm, limit, cost=6)
    assert not huge.allowed
    assert huge.retry_after == math.inf  # waiting cannot help
    assert huge.remaining == 5 and huge.reset_after == 0  # and nothing was taken
    assert (await take(store, algorithm, limit, cost=5))[0].allowed


async def test_burst_defaults_to_requests(store: RateLimitStore, clock: ManualClock) -> None:
    limit = Limit(4, 2.0)
    assert allowed(await take(store, A.TOKEN_BUCKET, limit, 5)) == [True] * 4 + [False]
    clock.advance(0.5)
    assert allowed(await take(store, A.TOKEN_BUCKET, limit, 2)) == [True, False]


# --- fixed window ------------------------------------------------------------------


async def test_fixed_window_admits_twice_the_limit_across_a_boundary(
    store: RateLimitStore, clock: ManualClock
) -> None:
    limit = Limit(5, 60.0, burst=50)  # burst is for the buckets only
    align(clock, 60.0, offset=59.0)
    decisions = await take(store, A.FIXED_WINDOW, limit, 6)
    assert allowed(decisions) == [True] * 5 + [False]
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0]
    assert all(d.reset_after == pytest.approx(1.0) and d.limit == 5 for d in decisions)
    assert decisions[5].retry_after == pytest.approx(1.0)

    clock.advance(1.0)  # the next window: five more, ten within one second
    decisions = await take(store, A.FIXED_WINDOW, limit, 6)
    assert allowed(decisions) == [True] * 5 + [False]
    assert decisions[5].retry_after == pytest.approx(60.0)
    assert decisions[5].reset_after == pytest.approx(60.0)


async def test_fixed_window_costs(store: RateLimitStore, clock: ManualClock) -> None:
    limit = Limit(5, 10.0)
    align(clock, 10.0, offset=4.0)
    assert allowed(await take(store, A.FIXED_WINDOW, limit, cost=4)) == [True]
    [refused] = await take(store, A.FIXED_WINDOW, limit, cost=2)
    assert not refused.allowed and refused.remaining == 1
    assert refused.retry_after == pytest.approx(6.0)
    assert allowed(await take(store, A.FIXED_WINDOW, limit, cost=1)) == [True]
    [huge] = await take(store, A.FIXED_WINDOW, limit, key="other", cost=6)
    assert not huge.allowed and huge.retry_after == math.inf
    assert huge.remaining == 5 and huge.reset_after == 0


# --- sliding log -----------------------------------------------------------------


async def test_sliding_log_is_exact_over_any_window(
    store: RateLimitStore, clock: ManualClock
) -> None:
    limit = Limit(3, 10.0)
    for _ in range(3):
        assert allowed(await take(store, A.SLIDING_LOG, limit)) == [True]
        clock.advance(1.0)
    # Admitted at t0, t0+1, t0+2; now t0+3.
    [refused] = await take(store, A.SLIDING_LOG, limit)
    assert not refused.allowed and refused.remaining == 0
    assert refused.retry_after == pytest.approx(7.0)  # t0 leaves at t0+10
    assert refused.reset_after == pytest.approx(9.0)  # t0+2 leaves at t0+12

    clock.advance(6.999)
    [early] = await take(store, A.SLIDING_LOG, limit)
    assert not early.allowed and early.retry_after == pytest.approx(0.001)
    clock.advance(0.001)  # t0+10: exactly one has left
    decisions = await take(store, A.SLIDING_LOG, limit, 2)
    assert allowed(decisions) == [True, False]
    assert decisions[0].remaining == 0
    assert decisions[0].reset_after == pytest.approx(10.0)
    assert decisions[1].retry_after == pytest.approx(1.0)  # t0+1 leaves at t0+11


async def test_sliding_log_costs(store: RateLimitStore, clock: ManualClock) -> None:
    limit = Limit(5, 10.0)
    assert (await take(store, A.SLIDING_LOG, limit, cost=2))[0].allowed
    clock.advance(1.0)
    [second] = await take(store, A.SLIDING_LOG, limit, cost=2)
    assert second.allowed and second.remaining == 1
    clock.advance(1.0)
    [refused] = await take(store, A.SLIDING_LOG, limit, cost=2)
    assert not refused.allowed and refused.remaining == 1
    assert refused.retry_after == pytest.approx(8.0)  # one entry of the first hit must go
    clock.advance(8.0)
    [third] = await take(store, A.SLIDING_LOG, limit, cost=2)
    assert third.allowed and third.remaining == 1  # the first hit's two entries left together
    [huge] = await take(store, A.SLIDING_LOG, limit, key="other", cost=6)
    assert not huge.allowed and huge.retry_after == math.inf and huge.remaining == 5


# --- sliding window --------------------------------------------------------------


async def test_sliding_window_weighs_the_previous_window(
    store: RateLimitStore, clock: ManualClock
) -> None:
    limit = Limit(10, 10.0)
    align(clock, 10.0, offset=9.999)
    admitted_at: list[float] = []
    decisions = await take(store, A.SLIDING_WINDOW, limit, 11)
    assert allowed(decisions) == [True] * 10 + [False]
    admitted_at += [clock.time()] * 10

    clock.advance(0.001)  # offset 0 of the next window: the previous weighs in full
    [refused] = await take(store, A.SLIDING_WINDOW, limit)
    assert not refused.allowed and refused.remaining == 0
    assert refused.retry_after == pytest.approx(1.0)  # 10 * 9/10 + 1 <= 10 at offset 1 s
    assert refused.reset_after == pytest.approx(10.0)

    clock.advance(5.0)  # the previous ten weigh five: five more fit
    decisions = await take(store, A.SLIDING_WINDOW, limit, 6)
    assert allowed(decisions) == [True] * 5 + [False]
    assert decisions[4].remaining == 0
    assert decisions[4].reset_after == pytest.approx(15.0)  # end of the next window
    admitted_at += [clock.time()] * 5
    # The documented worst case: the ten admitted 5.001 s ago all lie in the
    # true window of 10 s ending now, which holds more than n, under the bound.
    in_true_window = sum(1 for t in admitted_at if t > clock.time() - 10.0)
    assert 10 < in_true_window <= 10 + math.floor(10 * (10_000 - 2) / 10_000)


async def test_sliding_window_can_refuse_below_the_limit_in_the_true_window(
    store: RateLimitStore, clock: ManualClock
) -> None:
    limit = Limit(10, 10.0)
    align(clock, 10.0)
    assert allowed(await take(store, A.SLIDING_WINDOW, limit, 10)) == [True] * 10
    clock.advance(12.5)  # those ten left the true window 2.5 s ago, yet weigh 7.5
    decisions = await take(store, A.SLIDING_WINDOW, limit, 3)
    assert allowed(decisions) == [True, True, False]
    # Refused with two in the true window: n - ceil(n * (p - e) / p) = 10 - 8.
    assert decisions[2].retry_after == pytest.approx(0.5)  # 10 * 7/10 + 3 <= 10 at 3 s


async def test_sliding_window_costs(store: RateLimitStore, clock: ManualClock) -> None:
    limit = Limit(4, 10.0)
    align(clock, 10.0, offset=1.0)
    assert (await take(store, A.SLIDING_WINDOW, limit, cost=3))[0].remaining == 1
    [refused] = await take(store, A.SLIDING_WINDOW, limit, cost=2)
    assert not refused.allowed and refused.remaining == 1
    # Next window, the three weigh 3 * (10 - e) / 10; 2 more fit at e = 10/3 s.
    assert refused.retry_after == pytest.approx(9.0 + 3.334)
    [huge] = await take(store, A.SLIDING_WINDOW, limit, key="other", cost=5)
    assert not huge.allowed and huge.retry_after == math.inf


# --- concurrency -----------------------------------------------------------------


async def test_concurrency_holds_n_in_flight_until_released_or_expired(
    store: RateLimitStore, clock: ManualClock
) -> None:
    limit = Limit(3, 30.0)
    held = await take(store, A.CONCURRENCY, limit, 3)
    assert allowed(held) == [True] * 3
    tokens = [d.token for d in held]
    assert all(tokens) and len(set(tokens)) == 3
    assert [d.remaining for d in held] == [2, 1, 0]

    [refused] = await take(store, A.CONCURRENCY, limit)
    assert not refused.allowed and refused.token is None
    assert refused.retry_after == pytest.approx(30.0)

    await store.release("k", held[0].token or "")
    [again] = await take(store, A.CONCURRENCY, limit)
    assert again.allowed and again.remaining == 0
    await store.release("k", held[0].token or "")  # twice: nothing more
    await store.release("k", "not-a-token")
    assert not (await take(store, A.CONCURRENCY, limit))[0].allowed

    clock.advance(10.0)
    [later] = await take(store, A.CONCURRENCY, limit)
    assert later.retry_after == pytest.approx(20.0)
    clock.advance(20.0)  # every slot has expired
    assert allowed(await take(store, A.CONCURRENCY, limit, 4)) == [True] * 3 + [False]


async def test_concurrency_costs(store: RateLimitStore, clock: ManualClock) -> None:
    limit = Limit(3, 30.0)
    [two] = await take(store, A.CONCURRENCY, limit, cost=2)
    assert two.allowed and two.remaining == 1
    assert not (await take(store, A.CONCURRENCY, limit, cost=2))[0].allowed
    await store.release("k", two.token or "")  # frees both
    assert (await take(store, A.CONCURRENCY, limit, cost=3))[0].allowed
    [huge] = await take(store, A.CONCURRENCY, limit, key="other", cost=4)
    assert not huge.allowed and huge.retry_after == math.inf and huge.remaining == 3


# --- across algorithms -----------------------------------------------------------


async def test_reset_forgets_every_algorithm(store: RateLimitStore, clock: ManualClock) -> None:
    limit = Limit(1, 60.0)
    for algorithm in Algorithm:
        assert allowed(await take(store, algorithm, limit, 2)) == [True, False]
    await store.reset("k")
    for algorithm in Algorithm:
        assert allowed(await take(store, algorithm, limit, 2)) == [True, False]


async def test_keys_and_algorithms_are_independent(store: RateLimitStore) -> None:
    limit = Limit(1, 60.0)
    for algorithm in Algorithm:
        for key in ("a", "b", "a:b"):
            assert (await take(store, algorithm, limit, key=key))[0].allowed


async def test_a_zero_cost_hit_peeks(store: RateLimitStore) -> None:
    limit = Limit(2, 60.0)
    for algorithm in Algorithm:
        [peek] = await take(store, algorithm, limit, cost=0)
        assert peek.allowed and peek.remaining == 2 and peek.reset_after == 0
        await take(store, algorithm, limit)
        [peek] = await take(store, algorithm, limit, cost=0)
        assert peek.allowed and peek.remaining == 1


async def test_a_negative_cost_is_rejected(store: RateLimitStore) -> None:
    with pytest.raises(ValueError, match="cost"):
        await store.hit(Hit(A.TOKEN_BUCKET, "k", Limit(1, 1.0), -1))
