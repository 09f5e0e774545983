"""The rate-limiter benchmark runs end to end at a tiny size, in memory and, when
a Redis is configured, on Redis (its figures are not checked here: timings
belong to benchmarks, not tests)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from rich.console import Console

from sysdesign.benchmarks import BenchmarkError
from sysdesign.blocks.ratelimit import Algorithm
from sysdesign.blocks.ratelimit.anchors import COUNTERPARTS
from sysdesign.blocks.ratelimit.bench import run_ratelimit_bench
from tests.backends import service_url

ALGORITHMS = {a.value for a in Algorithm}
COMPARED = {a.value for a in COUNTERPARTS}


def check_measured(measured: dict[str, Any]) -> None:
    assert set(measured["algorithms"]) == ALGORITHMS
    for name, entry in measured["algorithms"].items():
        sides = [entry["ours"], entry["limits"]] if name in COMPARED else [entry["ours"]]
        assert ("ratio" in entry) == (name in COMPARED)
        for side in sides:
            assert side["median"] > 0
            assert len(side["rounds"]) == 1
            assert 0 < side["p50_us"] <= side["p99_us"]
            assert side["admitted"] == 1.0  # the limits are far above what a key receives


def run(tmp_path: Path, redis_url: str | None, prefix: str | None = None) -> dict[str, Any]:
    return run_ratelimit_bench(
        redis_url=redis_url,
        decisions=1000,
        redis_decisions=1000,
        rounds=1,
        out_dir=str(tmp_path / "results"),
        console=Console(quiet=True),
        key_prefix=prefix,
    )


def test_the_benchmark_writes_a_result_for_memory(tmp_path: Path) -> None:
    result = run(tmp_path, None)
    [path] = (tmp_path / "results").glob("ratelimiter-*.json")
    assert json.loads(path.read_text()) == result
    assert set(result["stores"]) == {"memory"}
    memory = result["stores"]["memory"]
    assert memory["concurrent"]["callers"] > 1 and memory["one_caller"]["callers"] == 1
    for measured in memory.values():
        check_measured(measured)
    assert set(result["goals"]) == {"memory_vs_limits", "memory_one_core"}
    assert all("met" in goal for goal in result["goals"].values())
    assert result["versions"]["limits"] and result["versions"]["redis"]


async def keys_under(redis_url: str, prefix: str) -> list[bytes]:
    client = Redis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.unlink(*keys)
        return keys
    finally:
        await client.aclose()


@pytest.mark.redis
def test_the_benchmark_measures_redis_and_leaves_no_keys(tmp_path: Path) -> None:
    redis_url = service_url("redis")
    prefix = f"tbench{uuid.uuid4().hex[:10]}"
    try:
        result = run(tmp_path, redis_url, prefix)
    finally:
        left = asyncio.run(keys_under(redis_url, prefix))
    assert left == []
    redis = result["stores"]["redis"]
    check_measured(redis["concurrent"])
    check_measured(redis["one_caller"])
    batches = redis["hit_batch"]
    assert batches["batch"] > 1 and set(batches["algorithms"]) == ALGORITHMS
    assert all(e["ours"]["median"] > 0 for e in batches["algorithms"].values())
    assert "met" in result["goals"]["redis_vs_limits"]
    assert len(list((tmp_path / "results").glob("ratelimiter-*.json"))) == 1


@pytest.mark.parametrize(
    ("decisions", "redis_decisions", "rounds"), [(999, 1000, 1), (1000, 10, 1), (1000, 1000, 0)]
)
def test_the_benchmark_refuses_sizes_too_small_to_measure(
    tmp_path: Path, decisions: int, redis_decisions: int, rounds: int
) -> None:
    with pytest.raises(BenchmarkError):
        run_ratelimit_bench(
            redis_url=None,
            decisions=decisions,
            redis_decisions=redis_decisions,
            rounds=rounds,
            out_dir=str(tmp_path),
            console=Console(quiet=True),
        )
    assert not list(tmp_path.iterdir())
