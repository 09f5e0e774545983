"""The lock benchmark runs end to end at a tiny size: memory and sqlite always,
Redis and etcd (with their anchors) when configured. Its figures are not
checked here: timings belong to benchmarks, not tests."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from sysdesign.benchmarks import BenchmarkError
from sysdesign.blocks.lock.anchors import Subject
from sysdesign.blocks.lock.bench import run_locks_bench
from sysdesign.blocks.lock.benchloops import contended, percentile, uncontended
from tests.backends import service_url

TASKS = 4


def run(tmp_path: Path, **urls: str | None) -> dict[str, Any]:
    return run_locks_bench(
        sqlite_dir=tmp_path,
        postgres_url=urls.get("postgres"),
        redis_url=urls.get("redis"),
        etcd_url=urls.get("etcd"),
        pairs=20,
        grants=20,
        server_pairs=10,
        server_grants=TASKS * 2,
        tasks=TASKS,
        rounds=1,
        out_dir=str(tmp_path / "results"),
        console=Console(quiet=True),
    )


def check_side(side: dict[str, Any]) -> None:
    unc, con = side["uncontended"], side["contended"]
    assert unc["pairs_per_s"] > 0 and len(unc["pairs_per_s_rounds"]) == 1
    assert 0 < unc["p50_us"] <= unc["p99_us"]
    assert con["grants_per_s"] > 0 and len(con["grants_per_s_rounds"]) == 1
    assert 0 < con["wait_p50_us"] <= con["wait_p99_us"]
    assert 1 / TASKS <= con["largest_task_share"] <= 1
    assert con["overlaps"] == 0  # mutual exclusion held in every contended run


def test_memory_and_sqlite_are_measured_and_the_result_is_written(tmp_path: Path) -> None:
    result = run(tmp_path)
    [path] = (tmp_path / "results").glob("locks-*.json")
    assert json.loads(path.read_text()) == result
    assert result["benchmark"] == "locks"
    assert result["parameters"]["tasks"] == TASKS and result["parameters"]["rounds"] == 1
    assert result["machine"]["cpu_count"] and result["versions"]["python"]
    backends = result["backends"]
    for name in ("memory", "sqlite"):
        check_side(backends[name]["ours"])
        assert "anchor" not in backends[name] and "ratio" not in backends[name]
    # Without URLs the server backends are listed as skipped, each with its reason.
    for name in ("postgres", "redis", "etcd"):
        assert backends[name]["skipped"]
    reason = backends["redis"]["skipped"]
    assert "SYSDESIGN_TEST_REDIS_URL" in reason or "not there yet" in reason
    # Redlock runs on the three redis-servers the benchmark starts, when it can.
    if "skipped" not in backends["redlock"]:
        check_side(backends["redlock"]["ours"])
    assert not list(tmp_path.glob("lockbench*.db*"))  # the sqlite file is removed


def test_bad_sizes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkError):
        run_locks_bench(
            sqlite_dir=tmp_path,
            postgres_url=None,
            redis_url=None,
            etcd_url=None,
            pairs=20,
            grants=2,
            server_pairs=20,
            server_grants=20,
            tasks=4,
            rounds=1,
            out_dir=str(tmp_path),
            console=Console(quiet=True),
        )


def test_an_unreachable_server_is_skipped_with_the_reason(tmp_path: Path) -> None:
    # Port 9 (discard) on loopback: nothing listens there.
    result = run(tmp_path, redis="redis://127.0.0.1:9/0?socket_timeout=1")
    redis = result["backends"]["redis"]
    assert "ours" not in redis and "did not answer" in redis["skipped"]
    check_side(result["backends"]["memory"]["ours"])


def check_with_anchor(entry: dict[str, Any], anchor: str) -> None:
    check_side(entry["ours"])
    check_side(entry["anchor"])
    assert entry["anchor"]["name"] == anchor
    assert set(entry["ratio"]) == {"uncontended_pairs_per_s", "contended_grants_per_s"}
    assert all(value > 0 for value in entry["ratio"].values())


@pytest.mark.redis
def test_redis_is_measured_beside_redis_py_lock(tmp_path: Path) -> None:
    result = run(tmp_path, redis=service_url("redis"))
    check_with_anchor(result["backends"]["redis"], "redis-py Lock")
    assert result["versions"]["servers"]["redis"]


def test_etcd_is_measured_beside_etcds_lock_api(tmp_path: Path) -> None:
    result = run(tmp_path, etcd=service_url("etcd"))
    entry = result["backends"]["etcd"]
    if "skipped" in entry and "not there yet" in entry["skipped"]:
        pytest.skip(entry["skipped"])
    check_with_anchor(entry, "etcd lock API")


# --- the helpers ----------------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1
    assert percentile([7.0], 99) == 7.0
    assert percentile([3, 1, 2], 50) == 2  # order of the input does not matter
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1], 101)


class CountingLock:
    """A plain asyncio lock behind the ``Subject`` shape, counting its calls."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.acquired = self.released = 0

    async def acquire(self) -> int:
        await self.lock.acquire()
        self.acquired += 1
        return self.acquired

    async def release(self, held: int) -> None:
        self.released += 1
        self.lock.release()


async def test_the_loops_grant_exactly_what_they_are_asked() -> None:
    lock = CountingLock()
    subject = Subject(lock.acquire, lock.release)
    measured = await uncontended(subject, 30)
    assert lock.acquired == lock.released == 30
    assert set(measured) == {"pairs_per_s", "p50_us", "p99_us"}
    measured = await contended(subject, 50, 8)
    assert lock.acquired == lock.released == 80
    assert measured["overlaps"] == 0
    assert 1 / 8 <= measured["largest_task_share"] <= 1


async def test_an_overlap_is_counted() -> None:
    async def acquire() -> None:
        return None  # grants everyone at once: not a lock at all

    async def release(held: None) -> None:
        return None

    measured = await contended(Subject(acquire, release), 20, 4)
    assert measured["overlaps"] > 0
