"""``sysdesign bench cache``: our cache node beside redis-server, under redis-benchmark.

Three measurements, each against an anchor in the same run:

- **Throughput.** ``sysdesign cache-node`` and redis-server run side by side,
  both pinned to the server CPU, and redis-benchmark (pinned to the other CPU)
  loads each in turn: ``-t set,get -c 50 -d 100 -r <keys>``, once one request
  at a time per client and once pipelined ``-P 16``. Both servers first get the
  same ``keys`` keys, named as redis-benchmark names them, so every GET hits.
  Rounds alternate which server goes first; medians of ops/s and of p99 are
  reported, with ours / redis-server per test. Goals: 0.50 without pipelining,
  0.25 with it.
- **Memory per key.** While loading those keys: our node's resident memory
  grown per key, beside redis-server's ``used_memory`` grown per key (its
  allocator's count, what Redis reports) and its resident memory grown per key.
- **Hit ratio.** The memory keyspace itself, in this process: a read-through
  cache (GET, then SET on a miss) under a Zipf(1.0) key sequence over
  ``keys`` keys, with room for 1% and for 10% of them, once per eviction
  policy on the same sequence, beside a cache that holds the most popular
  keys from the start (the best any policy can do on this sequence but for
  luck, since popularity does not change).
- **Key movement.** The consistent-hash ring of the cluster client on
  ``keys`` keys: the share that changes owner when a node joins or leaves a
  ring of 3 to 10 nodes, beside the ideal (1/(N+1) and 1/N) and beside
  ``hash % N`` placement, and the largest node's share over the mean.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from contextlib import ExitStack
from itertools import accumulate
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sysdesign.benchmarks import BenchmarkError
from sysdesign.benchmarks.cpus import CpuPlan, plan_cpus
from sysdesign.benchmarks.machine import machine_info, package_versions
from sysdesign.benchmarks.results import median, utc_now, write_result
from sysdesign.benchmarks.server import rss_bytes
from sysdesign.blocks.cache.anchors import (
    CLIENTS,
    TESTS,
    VALUE_BYTES,
    BenchmarkLine,
    Server,
    benchmark_command,
    cache_node,
    key_name,
    load_keys,
    redis_server,
    run_benchmark,
    serve,
    tool_version,
    used_memory,
)
from sysdesign.blocks.cache.ring import DEFAULT_VNODES, HashRing, moved_fraction, ring_hash
from sysdesign.blocks.cache.store import POLICIES, MemoryStore, entry_cost

PIPELINE = 16
GOALS = {"plain": 0.50, "pipelined": 0.25}
ZIPF_EXPONENT = 1.0
CACHE_SHARES = (0.01, 0.10)  # room for this share of the keys, in the hit-ratio runs
SEED = 20260101
MIN_REQUESTS = 1000
MIN_KEYS = 100
INSTALL_HINT = "redis-server and redis-benchmark are needed: apt-get install redis-server"


def measure_memory(redis: Server, ours: Server, keys: int) -> dict[str, Any]:
    """Load the same keys into both; bytes per key that each grew by."""

    def rss(server: Server) -> int:
        found = rss_bytes(server.process.pid)
        if found is None:
            raise BenchmarkError("resident memory needs /proc")
        return found

    before = {"redis_rss": rss(redis), "redis_used": used_memory(redis.port), "ours": rss(ours)}
    load_keys(redis.port, keys)
    load_keys(ours.port, keys)
    time.sleep(0.5)  # let both settle (Redis frees its query buffers lazily)
    redis_used = (used_memory(redis.port) - before["redis_used"]) / keys
    redis_rss = (rss(redis) - before["redis_rss"]) / keys
    ours_rss = (rss(ours) - before["ours"]) / keys
    return {
        "keys": keys,
        "key_bytes": len(key_name(0)),
        "value_bytes": VALUE_BYTES,
        "ours_rss_per_key": round(ours_rss, 1),
        "redis_used_memory_per_key": round(redis_used, 1),
        "redis_rss_per_key": round(redis_rss, 1),
        "ratio_to_used_memory": round(ours_rss / redis_used, 2),
        "ratio_to_rss": round(ours_rss / redis_rss, 2) if redis_rss > 0 else None,
    }


# --- hit ratio under Zipf -----------------------------------------------------------


def zipf_sequence(keys: int, requests: int, seed: int = SEED) -> list[int]:
    """``requests`` key indexes, index i drawn with probability ∝ 1 / (i + 1)^s."""
    weights = accumulate(1 / (i + 1) ** ZIPF_EXPONENT for i in range(keys))
    return random.Random(seed).choices(range(keys), cum_weights=list(weights), k=requests)


def hit_ratio(policy: str, sequence: list[int], capacity: int, keys: int) -> float:
    """Hits / requests of a read-through cache with room for ``capacity`` keys."""
    names = [key_name(i).decode() for i in range(keys)]
    value = b"x" * VALUE_BYTES
    store = MemoryStore(capacity * entry_cost(names[0], value), policy)
    get, put, hits = store.get, store.set, 0
    for i in sequence:
        if get(names[i], 0.0) is None:
            put(names[i], value, 0.0)
        else:
            hits += 1
    return hits / len(sequence)


def static_best(sequence: list[int], capacity: int) -> float:
    """The hit ratio of a cache that holds the ``capacity`` most popular keys
    from the start (each still missed once): the mark a policy can approach
    when popularity does not change, as here."""
    hot = [i for i in sequence if i < capacity]
    return (len(hot) - len(set(hot))) / len(sequence)


def measure_hit_ratios(keys: int, requests: int) -> dict[str, Any]:
    sequence = zipf_sequence(keys, requests)
    caches = []
    for share in CACHE_SHARES:
        capacity = max(1, int(keys * share))
        ratios = {p: round(hit_ratio(p, sequence, capacity, keys), 4) for p in POLICIES}
        lru, lfu = ratios["allkeys-lru"], ratios["allkeys-lfu"]
        caches.append(
            {
                "share": share,
                "capacity_keys": capacity,
                **ratios,
                "lfu_minus_lru": round(lfu - lru, 4),
                "static_best": round(static_best(sequence, capacity), 4),
            }
        )
    return {"zipf_exponent": ZIPF_EXPONENT, "keys": keys, "requests": requests, "caches": caches}


# --- throughput -------------------------------------------------------------------


def _summary(runs: list[BenchmarkLine]) -> dict[str, Any]:
    p99s = [r.p99_ms for r in runs if r.p99_ms is not None]
    p50s = [r.p50_ms for r in runs if r.p50_ms is not None]
    return {
        "rounds": [round(r.rps) for r in runs],
        "median": round(median(r.rps for r in runs)),
        "p50_ms": round(median(p50s), 3) if p50s else None,
        "p99_ms": round(median(p99s), 3) if p99s else None,
    }


def measure_throughput(
    servers: list[Server], modes: dict[str, tuple[int, int]], keys: int, rounds: int,
    cpus: CpuPlan, console: Console,
) -> dict[str, Any]:  # fmt: skip
    """``modes``: name -> (pipeline, requests). Servers alternate first and last by round."""
    runs: dict[str, dict[str, dict[str, list[BenchmarkLine]]]] = {
        mode: {test: {s.name: [] for s in servers} for test in TESTS} for mode in modes
    }
    for r in range(rounds):
        order = servers if r % 2 == 0 else servers[::-1]
        console.print(f"  round {r + 1}/{rounds}: {', '.join(s.name for s in order)}")
        for server in order:
            for mode, (pipeline, requests) in modes.items():
                command = benchmark_command(server.port, requests, keys, pipeline)
                for test, result in run_benchmark(command, cpus.load).items():
                    runs[mode][test][server.name].append(result)
    measured: dict[str, Any] = {}
    for mode, (pipeline, requests) in modes.items():
        tests: dict[str, Any] = {}
        for test in TESTS:
            entry = {name: _summary(results) for name, results in runs[mode][test].items()}
            entry["ratio"] = round(entry["ours"]["median"] / entry["redis"]["median"], 3)
            # Each round's ours / redis: the two ran back to back, so drift on a
            # shared machine moves these less than it moves either side alone.
            pairs = zip(runs[mode][test]["ours"], runs[mode][test]["redis"], strict=True)
            entry["round_ratios"] = [round(o.rps / r.rps, 3) for o, r in pairs]
            tests[test] = entry
        measured[mode] = {"pipeline": pipeline, "requests": requests, "tests": tests}
    return measured


def _goals(throughput: dict[str, Any]) -> dict[str, Any]:
    goals = {}
    for mode, at_least in GOALS.items():
        ratios = {test: e["ratio"] for test, e in throughput[mode]["tests"].items()}
        goals[mode] = {
            "ratio_at_least": at_least,
            "ratios": ratios,
            "met": all(v >= at_least for v in ratios.values()),
        }
    return goals


RING_SIZES = (3, 4, 5, 8, 10)


def measure_key_movement(keys: int) -> dict[str, Any]:
    """Keys that change owner when a node joins or leaves a ring of N, beside
    the ideal and beside ``hash % N`` placement, and the largest share."""
    names = [f"user:{i}:profile" for i in range(keys)]
    hashes = [ring_hash(k) for k in names]
    nodes = [f"10.0.0.{i}:6380" for i in range(1, max(RING_SIZES) + 2)]
    rows = []
    for n in RING_SIZES:
        ring = HashRing(nodes[:n])
        grown, shrunk = HashRing(nodes[: n + 1]), HashRing(nodes[: n - 1])
        rows.append(
            {
                "nodes": n,
                "add_one_moved": round(moved_fraction(names, ring, grown), 4),
                "add_one_ideal": round(1 / (n + 1), 4),
                "remove_one_moved": round(moved_fraction(names, ring, shrunk), 4),
                "remove_one_ideal": round(1 / n, 4),
                "modulo_add_one_moved": round(sum(h % n != h % (n + 1) for h in hashes) / keys, 4),
                "largest_share_over_mean": round(max(ring.shares().values()) * n, 3),
            }
        )
    return {"keys": keys, "vnodes": DEFAULT_VNODES, "rings": rows}


def _report(result: dict[str, Any], path: Path, console: Console) -> None:
    table = Table("test", "redis ops/s", "p99", "ours ops/s", "p99", "ratio", "goal")
    table.title = f"redis-benchmark, {CLIENTS} clients, {VALUE_BYTES}-byte values (p99 in ms)"
    for mode, measured in result["throughput"].items():
        for test, entry in measured["tests"].items():
            redis, ours = entry["redis"], entry["ours"]
            label = test if measured["pipeline"] == 1 else f"{test} -P {measured['pipeline']}"
            met = entry["ratio"] >= GOALS[mode]
            table.add_row(
                label,
                f"{redis['median']:,}",
                f"{redis['p99_ms']}",
                f"{ours['median']:,}",
                f"{ours['p99_ms']}",
                f"{entry['ratio']:.2f}",
                f"{'[green]' if met else '[red]'}≥ {GOALS[mode]:.2f}",
            )
    console.print(table)
    memory = result["memory"]
    table = Table("", "ours (RSS)", "redis used_memory", "redis RSS", "ours ÷ used_memory")
    table.title = (
        f"memory per key: {memory['keys']:,} keys of {memory['key_bytes']} bytes, "
        f"{memory['value_bytes']}-byte values"
    )
    table.add_row(
        "bytes per key",
        f"{memory['ours_rss_per_key']:,}",
        f"{memory['redis_used_memory_per_key']:,}",
        f"{memory['redis_rss_per_key']:,}",
        f"{memory['ratio_to_used_memory']:.2f}",
    )
    console.print(table)
    hits = result["hit_ratio"]
    table = Table("room for", "allkeys-lru", "allkeys-lfu", "lfu - lru", "top keys held")
    table.title = (
        f"hit ratio, read-through, Zipf({hits['zipf_exponent']}) over {hits['keys']:,} keys, "
        f"{hits['requests']:,} requests"
    )
    for cache in hits["caches"]:
        table.add_row(
            f"{cache['share']:.0%} ({cache['capacity_keys']:,} keys)",
            f"{cache['allkeys-lru']:.4f}",
            f"{cache['allkeys-lfu']:.4f}",
            f"{cache['lfu_minus_lru']:+.4f}",
            f"{cache['static_best']:.4f}",
        )
    console.print(table)
    movement = result["key_movement"]
    table = Table("nodes", "add one", "ideal", "hash % N", "remove one", "ideal", "top share")
    table.title = (
        f"keys that move, consistent-hash ring ({movement['vnodes']} vnodes), "
        f"{movement['keys']:,} keys"
    )
    for row in movement["rings"]:
        table.add_row(
            str(row["nodes"]),
            f"{row['add_one_moved']:.2%}",
            f"{row['add_one_ideal']:.2%}",
            f"{row['modulo_add_one_moved']:.2%}",
            f"{row['remove_one_moved']:.2%}",
            f"{row['remove_one_ideal']:.2%}",
            f"{row['largest_share_over_mean']:.2f} of the mean",
        )
    console.print(table)
    for name, goal in result["goals"].items():
        state = "[green]met[/green]" if goal["met"] else "[red]missed[/red]"
        console.print(f"goal {name} (ours ÷ redis-server ≥ {goal['ratio_at_least']}): {state}")
    console.print(f"result: {path}")


def run_cache_bench(
    *,
    requests: int,
    pipelined_requests: int,
    rounds: int,
    keys: int,
    zipf_requests: int,
    out_dir: str,
    console: Console,
) -> dict[str, Any]:
    """Measure, print the tables, write ``cache-<time>.json`` under ``out_dir``."""
    if min(requests, pipelined_requests, zipf_requests) < MIN_REQUESTS or rounds < 1:
        raise BenchmarkError(f"requests must be at least {MIN_REQUESTS} and rounds at least 1")
    if keys < MIN_KEYS:
        raise BenchmarkError(f"keys must be at least {MIN_KEYS}")
    for tool in ("redis-server", "redis-benchmark"):
        if shutil.which(tool) is None:
            raise BenchmarkError(f"{tool} not found: {INSTALL_HINT}")
    moment = utc_now()
    load_before = os.getloadavg()  # recorded: other work on the machine moves these figures
    cpus = plan_cpus()
    modes = {"plain": (1, requests), "pipelined": (PIPELINE, pipelined_requests)}
    commands = {"redis": redis_server(cpus.server), "ours": cache_node(cpus.server)}
    with ExitStack() as stack:
        servers = [
            stack.enter_context(serve(name, command, port, cpus.server))
            for name, (command, port) in commands.items()
        ]
        console.print(f"cache benchmark: {cpus.note}; loading {keys:,} keys into each server")
        memory = measure_memory(servers[0], servers[1], keys)
        throughput = measure_throughput(servers, modes, keys, rounds, cpus, console)
    console.print(f"  hit ratios: Zipf({ZIPF_EXPONENT}), {zipf_requests:,} requests")
    hits = measure_hit_ratios(keys, zipf_requests)
    console.print(f"  key movement: rings of {', '.join(map(str, RING_SIZES))} nodes")
    movement = measure_key_movement(keys)
    result: dict[str, Any] = {
        "benchmark": "cache",
        "description": "sysdesign cache-node beside redis-server under redis-benchmark (GET and"
        " SET, with and without pipelining), memory per key, and LRU against LFU hit ratios"
        " under a Zipf workload, and the keys a consistent-hash ring moves when nodes join"
        " and leave",
        "timestamp": moment.isoformat().replace("+00:00", "Z"),
        "machine": machine_info(),
        "load_average_1m": {"before": load_before[0], "after": os.getloadavg()[0]},
        "versions": {
            **package_versions(["sysdesign", "uvloop"]),
            "redis-server": tool_version("redis-server"),
            "redis-benchmark": tool_version("redis-benchmark"),
        },
        "parameters": {
            "requests": requests,
            "pipelined_requests": pipelined_requests,
            "rounds": rounds,
            "clients": CLIENTS,
            "pipeline": PIPELINE,
            "value_bytes": VALUE_BYTES,
            "keys": keys,
            "keys_loaded_before": "every key redis-benchmark -r draws, so every GET hits",
            "order": "servers alternate first and last by round; medians reported",
            "cpus": cpus.as_dict(),
            "servers": {name: " ".join(command) for name, (command, _) in commands.items()},
            "load": f"redis-benchmark -t set,get -c {CLIENTS} -n <requests> -d {VALUE_BYTES}"
            f" -r {keys} --csv, and with -P {PIPELINE}",
            "zipf_requests": zipf_requests,
        },
        "throughput": throughput,
        "memory": memory,
        "hit_ratio": hits,
        "key_movement": movement,
        "goals": _goals(throughput),
    }
    path = write_result(out_dir, "cache", moment, result)
    _report(result, path, console)
    return result
