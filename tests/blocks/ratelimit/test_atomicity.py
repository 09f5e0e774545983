"""Atomic decisions: 200 concurrent hits on one key admit exactly the limit;
``hit_many`` is all-or-nothing; ``hit_batch`` answers each request in order."""

from __future__ import annotations

import asyncio
import math

import pytest

from sysdesign.blocks.ratelimit import Algorithm, Decision, Hit, Limit, RateLimitStore
from sysdesign.platform.clock import ManualClock
from tests.blocks.ratelimit.conftest import align

A = Algorithm
CONCURRENT = 200


async def storm(store: RateLimitStore, hit: Hit, times: int = CONCURRENT) -> list[Decision]:
    return list(await asyncio.gather(*(store.hit(hit) for _ in range(times))))


def admitted(decisions: list[Decision]) -> int:
    return sum(d.allowed for d in decisions)


@pytest.mark.parametrize("algorithm", [A.SLIDING_LOG, A.TOKEN_BUCKET, A.GCRA, A.FIXED_WINDOW])
async def test_concurrent_hits_admit_exactly_the_limit(
    store: RateLimitStore, algorithm: Algorithm
) -> None:
    decisions = await storm(store, Hit(algorithm, "hot", Limit(37, 3600.0)))
    assert admitted(decisions) == 37
    # Each admitted one saw a distinct remaining count: no two read the same state.
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(37))


async def test_concurrent_hits_on_a_sliding_window_stay_within_its_bound(
    store: RateLimitStore, clock: ManualClock
) -> None:
    limit = Limit(40, 10.0)
    align(clock, 10.0, offset=9.999)
    assert admitted(await storm(store, Hit(A.SLIDING_WINDOW, "hot", limit))) == 40
    clock.advance(2.501)  # offset 2.5 s: the previous 40 weigh 30
    late = admitted(await storm(store, Hit(A.SLIDING_WINDOW, "hot", limit)))
    assert late == 10
    # All 50 lie in one true window of 10 s: within n + floor(n * (p - 2) / p).
    assert 40 + late <= 40 + math.floor(40 * (10_000 - 2) / 10_000)


async def test_concurrency_admits_exactly_n_in_flight_and_a_release_frees_one(
    store: RateLimitStore,
) -> None:
    hit = Hit(A.CONCURRENCY, "hot", Limit(20, 60.0))
    first = await storm(store, hit)
    held = [d.token for d in first if d.allowed]
    assert len(held) == 20 and len(set(held)) == 20
    await store.release("hot", held[0] or "")
    second = await storm(store, hit)
    assert admitted(second) == 1


@pytest.mark.parametrize("algorithm", list(Algorithm))
async def test_hit_many_consumes_nothing_when_a_later_limit_refuses(
    store: RateLimitStore, algorithm: Algorithm
) -> None:
    roomy = Hit(algorithm, "user", Limit(10, 60.0))
    tight = Hit(A.FIXED_WINDOW, "ip", Limit(1, 60.0))
    first = await store.hit_many([roomy, tight])
    assert [d.allowed for d in first] == [True, True]
    assert first[0].remaining == 9

    second = await store.hit_many([roomy, tight])
    assert [d.allowed for d in second] == [True, False]
    # The first limit would have passed; it reports its state, untouched.
    assert second[0].remaining == 9 and second[0].token is None
    assert second[1].remaining == 0 and second[1].retry_after > 0

    [alone] = await store.hit_many([roomy])
    assert alone.allowed and alone.remaining == 8


@pytest.mark.parametrize("algorithm", list(Algorithm))
async def test_hit_many_decides_repeated_keys_against_each_other(
    store: RateLimitStore, algorithm: Algorithm
) -> None:
    hit = Hit(algorithm, "k", Limit(3, 60.0))
    assert [d.allowed for d in await store.hit_many([hit, hit])] == [True, True]
    # One left: the second of these would overflow, so neither counts.
    assert [d.allowed for d in await store.hit_many([hit, hit])] == [True, False]
    assert (await store.hit(hit)).remaining == 0


async def test_hit_many_of_nothing_is_nothing(store: RateLimitStore) -> None:
    assert await store.hit_many([]) == []


async def test_concurrent_requests_of_two_limits_never_overspend_either(
    store: RateLimitStore,
) -> None:
    per_user = Hit(A.TOKEN_BUCKET, "user", Limit(30, 3600.0))
    per_ip = Hit(A.SLIDING_LOG, "ip", Limit(25, 3600.0))
    results = await asyncio.gather(*(store.hit_many([per_user, per_ip]) for _ in range(CONCURRENT)))
    assert sum(all(d.allowed for d in r) for r in results) == 25
    # The five left on the user's bucket were never spent by refused requests.
    assert (await store.hit(per_user)).remaining == 4


async def test_hit_batch_answers_each_request_all_or_nothing_in_order(
    store: RateLimitStore,
) -> None:
    a = Hit(A.GCRA, "a", Limit(2, 60.0))
    b = Hit(A.CONCURRENCY, "b", Limit(1, 60.0))
    answers = await store.hit_batch([[a, b], [a], [], [a, b], [a]])
    assert [[d.allowed for d in r] for r in answers] == [
        [True, True],
        [True],
        [],
        [False, False],
        [False],
    ]
    assert answers[0][1].token is not None
    assert answers[3][1].token is None
