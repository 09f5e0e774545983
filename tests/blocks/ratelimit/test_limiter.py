"""The limiter over a real Redis that stops mid-test: each rule's failure policy holds.
Also shadow rules and all-or-nothing decisions across rules."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from sysdesign.blocks.ratelimit import MemoryRateLimitStore, open_store
from sysdesign.blocks.ratelimit.limiter import RateLimiter
from sysdesign.blocks.ratelimit.rules import RequestInfo, load_rules
from sysdesign.platform.clock import ManualClock
from tests.redis_server import PrivateRedis

RULES = """
rules:
  - {name: fail-open, match: {path: /open}, descriptors: [ip], algorithm: fixed_window,
     limits: [2/minute], on_store_failure: open}
  - {name: fail-closed, match: {path: /closed}, descriptors: [ip], algorithm: gcra,
     limits: [2/minute], on_store_failure: closed}
  - {name: fail-local, match: {path: /local}, descriptors: [ip], algorithm: sliding_log,
     limits: [2/minute], on_store_failure: local}
"""


def request(path: str) -> RequestInfo:
    return RequestInfo(system="x", method="GET", path=path, ip="192.0.2.5")


async def test_each_rule_keeps_its_failure_policy_when_redis_stops(
    private_redis: PrivateRedis, clock: ManualClock
) -> None:
    store = open_store(private_redis.url, clock=clock)
    await store.connect()
    registry = CollectorRegistry()
    limiter = RateLimiter(
        store, load_rules(RULES), fallback=MemoryRateLimitStore(clock), registry=registry
    )
    try:
        for path in ("/open", "/closed", "/local"):
            verdicts = [await limiter.check(request(path)) for _ in range(3)]
            assert [v.allowed for v in verdicts] == [True, True, False]
            assert all(d.fallback is None for v in verdicts for d in v.decisions)

        await private_redis.kill()

        opened = [await limiter.check(request("/open")) for _ in range(5)]
        assert all(v.allowed for v in opened)
        assert {d.fallback for v in opened for d in v.decisions} == {"open"}

        closed = await limiter.check(request("/closed"))
        assert not closed.allowed
        assert closed.deciding is not None and closed.deciding.fallback == "closed"
        assert closed.headers()["Retry-After"] == "1"

        local = [await limiter.check(request("/local")) for _ in range(3)]
        assert [v.allowed for v in local] == [True, True, False]  # the per-process limit
        assert {d.fallback for v in local for d in v.decisions} == {"local"}

        assert limiter.counts[("fail-open", "store_failure")] == 5
        assert limiter.counts[("fail-closed", "store_failure")] == 1
        assert limiter.counts[("fail-local", "store_failure")] == 3
        failures = registry.get_sample_value(
            "ratelimit_decisions_total", {"rule": "fail-local", "outcome": "store_failure"}
        )
        assert failures == 3.0
    finally:
        await store.close()


async def test_shadow_rules_count_without_refusing_and_refusals_consume_nothing(
    clock: ManualClock,
) -> None:
    rules = load_rules(
        """
rules:
  - {name: small, descriptors: [ip], algorithm: sliding_log, limits: [2/minute]}
  - {name: large, descriptors: [ip], algorithm: sliding_log, limits: [3/minute]}
  - {name: tiny-shadow, descriptors: [ip], algorithm: sliding_log, limits: [1/minute],
     shadow: true}
"""
    )
    store = MemoryRateLimitStore(clock)
    limiter = RateLimiter(store, rules, fallback=MemoryRateLimitStore(clock))
    verdicts = [await limiter.check(request("/a")) for _ in range(4)]
    assert [v.allowed for v in verdicts] == [True, True, False, False]  # "small" decides
    assert limiter.counts[("tiny-shadow", "shadow_limited")] == 3  # and never refuses
    assert limiter.counts[("small", "limited")] == 2
    # Only admitted requests count as allowed; the refused ones consumed nothing
    # from "large", which still has one of its three left.
    assert limiter.counts[("large", "allowed")] == 2
    large = next(d for d in verdicts[-1].decisions if d.rule == "large")
    assert large.decision.allowed and large.decision.remaining == 1
