"""The cache benchmark: redis-benchmark's output is read right, the hit-ratio and
memory helpers measure what they say, and the whole benchmark runs end to end at
a tiny size when redis-server and redis-benchmark are installed (its figures are
not checked: timings belong to benchmarks, not tests)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from sysdesign.benchmarks import BenchmarkError
from sysdesign.blocks.cache import anchors, bench
from sysdesign.blocks.cache.anchors import BenchmarkLine, parse_csv
from sysdesign.blocks.cache.bench import run_cache_bench

REDIS_7_CSV = """\
"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
"SET","118063.76","0.267","0.064","0.223","0.511","0.855","2.799"
"GET","125470.52","0.253","0.080","0.231","0.415","0.711","3.631"
"""


def test_redis_7_csv_gives_rate_and_latencies() -> None:
    results = parse_csv(REDIS_7_CSV)
    assert set(results) == {"SET", "GET"}
    assert results["SET"] == BenchmarkLine("SET", 118063.76, 0.267, 0.223, 0.855, 2.799)
    assert results["GET"].p99_ms == 0.711


def test_redis_6_csv_without_header_gives_the_rate_only() -> None:
    results = parse_csv('"SET","81566.07"\n"GET","83612.04"\n')
    assert results["GET"] == BenchmarkLine("GET", 83612.04)
    assert results["SET"].p99_ms is None


def test_an_unreadable_line_is_an_error() -> None:
    with pytest.raises(BenchmarkError, match="unreadable"):
        parse_csv('"test","rps"\n"SET","fast"\n')


def test_the_command_pipelines_only_when_asked() -> None:
    plain = anchors.benchmark_command(7000, 1000, 50, 1)
    assert plain[:5] == ["redis-benchmark", "-h", "127.0.0.1", "-p", "7000"]
    assert "-P" not in plain and "--csv" in plain
    assert plain[plain.index("-r") + 1] == "50" and plain[plain.index("-c") + 1] == "50"
    piped = anchors.benchmark_command(7000, 1000, 50, 16)
    assert piped[-2:] == ["-P", "16"]


def test_keys_are_named_as_redis_benchmark_names_them() -> None:
    assert anchors.key_name(42) == b"key:000000000042"


def test_zipf_prefers_low_ranks_and_is_repeatable() -> None:
    sequence = bench.zipf_sequence(1000, 20_000, seed=1)
    assert sequence == bench.zipf_sequence(1000, 20_000, seed=1)
    assert all(0 <= i < 1000 for i in sequence)
    # Zipf(1): rank 1 is drawn about twice as often as rank 2, and ~1/H(1000) of the time.
    assert sequence.count(0) > 1.5 * sequence.count(1)
    assert 0.11 < sequence.count(0) / len(sequence) < 0.16


def test_hit_ratio_of_a_cache_that_holds_everything_counts_only_cold_misses() -> None:
    sequence = bench.zipf_sequence(100, 5000, seed=2)
    for policy in ("allkeys-lru", "allkeys-lfu"):
        assert bench.hit_ratio(policy, sequence, 100, 100) == 1 - len(set(sequence)) / 5000
        assert bench.hit_ratio(policy, sequence, 10, 100) < 1 - len(set(sequence)) / 5000


def test_the_static_best_holds_the_top_ranks() -> None:
    # Ranks 0 and 1 fit: 0 is hit twice after its first miss, 1 once; 5 never.
    assert bench.static_best([0, 1, 0, 5, 1, 0], 2) == 3 / 6


def test_the_benchmark_refuses_sizes_too_small_to_measure(tmp_path: Path) -> None:
    for sizes in ({"requests": 10}, {"rounds": 0}, {"keys": 10}):
        arguments = {
            "requests": 1000,
            "pipelined_requests": 1000,
            "rounds": 1,
            "keys": 1000,
            "zipf_requests": 1000,
            **sizes,
        }
        with pytest.raises(BenchmarkError):
            run_cache_bench(**arguments, out_dir=str(tmp_path), console=Console(quiet=True))
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("redis-benchmark") is None,
    reason="redis-server and redis-benchmark are not installed",
)
def test_the_benchmark_writes_a_result(tmp_path: Path) -> None:
    result = run_cache_bench(
        requests=1000,
        pipelined_requests=2000,
        rounds=1,
        keys=500,
        zipf_requests=2000,
        out_dir=str(tmp_path / "results"),
        console=Console(quiet=True),
    )
    [path] = (tmp_path / "results").glob("cache-*.json")
    assert json.loads(path.read_text()) == result
    assert set(result["throughput"]) == {"plain", "pipelined"}
    assert result["throughput"]["pipelined"]["pipeline"] == 16
    for measured in result["throughput"].values():
        assert set(measured["tests"]) == {"SET", "GET"}
        for entry in measured["tests"].values():
            for side in ("redis", "ours"):
                assert entry[side]["median"] > 0 and len(entry[side]["rounds"]) == 1
                assert 0 < entry[side]["p50_ms"] <= entry[side]["p99_ms"]
            assert entry["ratio"] > 0 and len(entry["round_ratios"]) == 1
    assert set(result["goals"]) == {"plain", "pipelined"}
    assert all("met" in goal for goal in result["goals"].values())
    memory = result["memory"]
    assert memory["keys"] == 500 and memory["redis_used_memory_per_key"] > 0
    hits = result["hit_ratio"]
    assert [c["share"] for c in hits["caches"]] == list(bench.CACHE_SHARES)
    for cache in hits["caches"]:
        assert 0 < cache["allkeys-lru"] < 1 and 0 < cache["allkeys-lfu"] < 1
        assert 0 < cache["static_best"] < 1
    assert result["versions"]["redis-server"] and result["versions"]["redis-benchmark"]
    movement = result["key_movement"]
    assert [row["nodes"] for row in movement["rings"]] == list(bench.RING_SIZES)
    assert movement["keys"] == 500


def test_key_movement_is_near_the_ideal_and_far_below_modulo_placement() -> None:
    movement = bench.measure_key_movement(20_000)
    for row in movement["rings"]:
        n = row["nodes"]
        assert row["add_one_ideal"] == round(1 / (n + 1), 4)
        assert row["add_one_moved"] == pytest.approx(row["add_one_ideal"], rel=0.25)
        assert row["remove_one_moved"] == pytest.approx(row["remove_one_ideal"], rel=0.25)
        assert row["modulo_add_one_moved"] > 2 * row["add_one_moved"]
        assert 1 <= row["largest_share_over_mean"] < 1.35
