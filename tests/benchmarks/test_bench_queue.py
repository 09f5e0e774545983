"""The queue benchmark runs end to end at a tiny size (its figures are not checked here:
timings belong to benchmarks, not tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from sysdesign.benchmarks import BenchmarkError
from sysdesign.blocks.queue.bench import run_queue_bench


def test_the_queue_benchmark_writes_a_result_for_each_backend(tmp_path: Path) -> None:
    result = run_queue_bench(
        sqlite_dir=tmp_path,
        redis_url=None,
        nats_url=None,
        messages=400,
        rounds=1,
        out_dir=str(tmp_path / "results"),
        console=Console(quiet=True),
    )
    [path] = (tmp_path / "results").glob("queue-*.json")
    assert json.loads(path.read_text()) == result
    assert set(result["backends"]) == {"memory", "sqlite"}
    for backend in result["backends"].values():
        for measure in ("publish", "publish_batch", "consume"):
            assert backend["ours"][measure]["median"] > 0
        assert 0 < backend["latency"]["p50_ms"] <= backend["latency"]["p99_ms"]
    assert "met" in result["backends"]["sqlite"]["goal"]
    assert not list(tmp_path.glob("bench-*.db*"))  # the benchmark's queue file is removed


def test_the_queue_benchmark_refuses_sizes_too_small_to_measure(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkError):
        run_queue_bench(
            sqlite_dir=tmp_path,
            redis_url=None,
            nats_url=None,
            messages=10,
            rounds=1,
            out_dir=str(tmp_path),
            console=Console(),
        )
