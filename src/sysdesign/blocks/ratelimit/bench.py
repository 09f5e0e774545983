"""``sysdesign bench ratelimiter``: decisions/s and latency per algorithm and store,
beside the ``limits`` library on the same storage in the same run.

Every run decides ``decisions`` hits spread over ``KEYS`` keys, each key drawn
uniformly at random from a seeded sequence that both sides of a round replay
exactly. Every key's limit is the same on both sides and far above what a key
receives in one run, so nearly every decision is admitted (the result records
the share). Each run starts from empty state: a fresh memory store, or fresh
key prefixes on Redis, with the connections opened by a warm-up before the
clock starts. Both sides run on one event loop (uvloop where installed, as
the platform's server does), one side after the other.

Two ways of calling, on each store:

- ``32 callers``: 32 tasks, each awaiting one decision at a time and then
  yielding to the event loop once, as a request in a server does between its
  own awaits. Background work a store schedules on the loop (``limits``'
  memory storage expires its keys in such a task) runs as it would in a server.
- ``1 caller``: one task, decisions back to back, never yielding beyond what
  the store itself awaits: the cost of the call alone, on one core.

A decision's latency is the time of its awaited call (for ``concurrency``: the
hit and the release of its slot, two awaited calls); ``hit_batch`` rows time
whole batches of ``BATCH`` requests, the unit they are sent in. Decisions/s
counts the whole run, so it includes the harness: an empty decision through
the same loop is measured too, and ``ratio_without_harness`` sets its time
aside. Rounds alternate which side goes first; medians over the rounds are
reported, and the ratio is ours / limits.

Our Redis store pipelines the script calls of concurrent callers (each still
one atomic call); ``limits`` makes one round trip per decision. With one
caller there is nothing to pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rich.console import Console
from rich.table import Table

from sysdesign.benchmarks import BenchmarkError
from sysdesign.benchmarks.machine import machine_info, package_versions
from sysdesign.benchmarks.results import median, utc_now, write_result
from sysdesign.blocks.ratelimit import Algorithm, Hit, Limit, RateLimitError, open_store
from sysdesign.blocks.ratelimit.anchors import (
    COUNTERPARTS,
    Run,
    delete_keys,
    drive,
    nothing,
    ours,
    plain_url,
    theirs,
)

KEYS = 1000
PERIOD = 60  # seconds: the period of every limit, on both sides
MIN_REQUESTS = 1000
CALLERS = 32
ONE_CALLER_REDIS_SHARE = 5  # one-caller Redis runs decide a fifth of --redis-decisions
BATCH = 100
BATCH_CALLERS = 4
MIN_DECISIONS = 1000
SEED = 20260101
GOAL_MEMORY_RATIO = 2.0
GOAL_REDIS_RATIO = 1.5
GOAL_ONE_CORE = 100_000

# --- measuring ------------------------------------------------------------------------


class Bench:
    def __init__(self, redis_url: str | None, prefix: str, requests: int, console: Console):
        self.redis_url = redis_url
        self.prefix = prefix
        self.limit = Limit(requests, PERIOD)
        self.console = console
        self.runs = 0

    def _fresh(self, side: str) -> str:
        """A key prefix no earlier run used: every run starts from empty state."""
        self.runs += 1
        return f"{self.prefix}-{side}{self.runs}"

    async def run(
        self, side: str, store: str, algorithm: Algorithm, keys: Sequence[str], callers: int
    ) -> Run:
        url = self.redis_url if store == "redis" else None
        async with contextlib.AsyncExitStack() as stack:
            if side == "ours":
                decide, _ = await stack.enter_async_context(
                    ours(url, self._fresh("o"), algorithm, self.limit)
                )
            else:
                decide = await stack.enter_async_context(
                    theirs(url, self._fresh("l"), algorithm, self.limit)
                )
            # Opens the connections and loads the scripts before the clock starts.
            await asyncio.gather(*(decide(f"warm:{i}") for i in range(callers)))
            run = await drive(decide, keys, callers, yielding=callers > 1)
        await self._clean(url)
        return run

    async def _clean(self, url: str | None) -> None:
        """Delete a Redis run's keys, so that no later run shares the server
        with their expiry."""
        if url is not None:
            await delete_keys(url, self.prefix)

    async def batches(self, algorithm: Algorithm, keys: Sequence[str]) -> Run:
        """Our Redis store's ``hit_batch``: ``BATCH`` one-hit requests per call."""
        async with ours(self.redis_url, self._fresh("b"), algorithm, self.limit) as (_, store):
            limit = self.limit

            async def decide(chunk: Sequence[str]) -> int:
                answers = await store.hit_batch([[Hit(algorithm, k, limit)] for k in chunk])
                return sum(answer[0].allowed for answer in answers)

            chunks = [keys[i : i + BATCH] for i in range(0, len(keys) - BATCH + 1, BATCH)]
            await asyncio.gather(*(decide([f"warm:{i}"]) for i in range(BATCH_CALLERS)))
            run = await drive(decide, chunks, BATCH_CALLERS, yielding=False, per_item=BATCH)
        await self._clean(self.redis_url)
        return run


def _keys(n: int, round_: int) -> list[str]:
    """The round's key sequence: uniform over ``KEYS`` keys, the same for both sides."""
    population = [f"user:{i}" for i in range(KEYS)]
    return random.Random(SEED + round_).choices(population, k=n)


def _summary(runs: list[Run]) -> dict[str, Any]:
    return {
        "rounds": [round(r.rate) for r in runs],
        "median": round(median(r.rate for r in runs)),
        "p50_us": round(median(r.p50_us for r in runs), 1),
        "p99_us": round(median(r.p99_us for r in runs), 1),
        "admitted": round(min(r.admitted for r in runs), 4),
    }


async def _measure(bench: Bench, store: str, callers: int, n: int, rounds: int) -> dict[str, Any]:
    """Every algorithm on one store and way of calling: ours, and limits' where it has one."""
    label = f"{store}, {callers} caller{'s' if callers > 1 else ''}"
    ours_runs: dict[Algorithm, list[Run]] = {a: [] for a in Algorithm}
    their_runs: dict[Algorithm, list[Run]] = {a: [] for a in COUNTERPARTS}
    harness: list[Run] = []
    for r in range(rounds):
        bench.console.print(f"  {label}: round {r + 1}/{rounds}, {n:,} decisions per run")
        keys = _keys(n, r)
        harness.append(await drive(nothing, keys, callers, yielding=callers > 1))
        for algorithm in Algorithm:
            sides = ["ours", "limits"] if algorithm in COUNTERPARTS else ["ours"]
            for side in sides if r % 2 == 0 else sides[::-1]:
                run = await bench.run(side, store, algorithm, keys, callers)
                (ours_runs if side == "ours" else their_runs)[algorithm].append(run)
    harness_rate = median(r.rate for r in harness)
    algorithms: dict[str, Any] = {}
    for algorithm, runs in ours_runs.items():
        entry: dict[str, Any] = {"ours": _summary(runs)}
        if algorithm in their_runs:
            theirs_ = {"strategy": COUNTERPARTS[algorithm], **_summary(their_runs[algorithm])}
            entry["limits"] = theirs_
            entry["ratio"] = round(entry["ours"]["median"] / theirs_["median"], 3)
            entry["ratio_without_harness"] = _net_ratio(
                entry["ours"]["median"], theirs_["median"], harness_rate
            )
        algorithms[algorithm.value] = entry
    return {
        "callers": callers,
        "yield_after_each_decision": callers > 1,
        "decisions_per_run": n,
        "harness_per_s": round(harness_rate),
        "algorithms": algorithms,
    }


def _net_ratio(ours_rate: float, their_rate: float, harness_rate: float) -> float | None:
    """Their time per decision over ours, each less the harness's (the empty
    decision's) time: how the stores compare once the loop around them is set aside."""
    mine, other = 1 / ours_rate - 1 / harness_rate, 1 / their_rate - 1 / harness_rate
    return round(other / mine, 3) if mine > 0 else None


async def _measure_batches(bench: Bench, n: int, rounds: int) -> dict[str, Any]:
    runs: dict[Algorithm, list[Run]] = {a: [] for a in Algorithm}
    for r in range(rounds):
        bench.console.print(f"  redis, hit_batch of {BATCH}: round {r + 1}/{rounds}")
        keys = _keys(n, r)
        for algorithm in Algorithm:
            runs[algorithm].append(await bench.batches(algorithm, keys))
    return {
        "callers": BATCH_CALLERS,
        "batch": BATCH,
        "latency_of": "one hit_batch call",
        "algorithms": {a.value: {"ours": _summary(rs)} for a, rs in runs.items()},
    }


async def _check_redis(redis_url: str) -> None:
    store = open_store(plain_url(redis_url))
    try:
        await store.connect()
    except RateLimitError as exc:
        raise BenchmarkError(str(exc)) from None
    finally:
        await store.close()


def _where(url: str) -> str:
    """The server a URL names, without credentials or options."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"


def _goal(
    ratios: dict[str, float], at_least: float, one_caller: dict[str, float]
) -> dict[str, Any]:
    return {
        "ratio_at_least": at_least,
        "measured_with": f"{CALLERS} callers",
        "ratios": ratios,
        "met": all(v >= at_least for v in ratios.values()),
        "one_caller_ratios": one_caller,
    }


def _ratios(measured: dict[str, Any]) -> dict[str, float]:
    return {a: e["ratio"] for a, e in measured["algorithms"].items() if "ratio" in e}


def _goals(stores: dict[str, Any]) -> dict[str, Any]:
    memory = stores["memory"]
    rates = {a: e["ours"]["median"] for a, e in memory["one_caller"]["algorithms"].items()}
    goals: dict[str, Any] = {
        "memory_vs_limits": _goal(
            _ratios(memory["concurrent"]), GOAL_MEMORY_RATIO, _ratios(memory["one_caller"])
        ),
        "memory_one_core": {
            "decisions_per_s_at_least": GOAL_ONE_CORE,
            "measured_with": "1 caller, every algorithm",
            "decisions_per_s": rates,
            "met": all(v >= GOAL_ONE_CORE for v in rates.values()),
        },
    }
    if "redis" in stores:
        redis = stores["redis"]
        goals["redis_vs_limits"] = _goal(
            _ratios(redis["concurrent"]), GOAL_REDIS_RATIO, _ratios(redis["one_caller"])
        )
    return goals


def _report(result: dict[str, Any], path: Path, console: Console) -> None:
    """One table per store and way of calling; latencies are p99 in µs."""
    for store, modes in result["stores"].items():
        for mode, measured in modes.items():
            callers = measured["callers"]
            title = f"{store}, {callers} caller{'s' if callers > 1 else ''}"
            if mode == "hit_batch":
                title += f", hit_batch of {measured['batch']} (p99 of a batch)"
            else:
                title += f" (empty decision: {measured['harness_per_s']:,}/s)"
            table = Table("algorithm", "ours/s", "limits/s", "ratio", "ours p99", "limits p99")
            table.title = title
            for algorithm, entry in measured["algorithms"].items():
                mine, other = entry["ours"], entry.get("limits")
                table.add_row(
                    algorithm,
                    f"{mine['median']:,}",
                    f"{other['median']:,}" if other else "-",
                    f"{entry['ratio']:.2f}" if other else "-",
                    f"{mine['p99_us']:,}",
                    f"{other['p99_us']:,}" if other else "-",
                )
                lowest = min(mine["admitted"], other["admitted"] if other else 1.0)
                if lowest < 0.99:
                    console.print(f"[yellow]{title} {algorithm}: {lowest:.1%} admitted[/yellow]")
            console.print(table)
    for name, goal in result["goals"].items():
        state = "[green]met[/green]" if goal["met"] else "[red]missed[/red]"
        console.print(f"goal {name}: {state}")
    console.print(f"result: {path}")


def _runner() -> tuple[asyncio.Runner, str]:
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner(), "asyncio"
    # The loop the platform's server runs on: both sides share it.
    return asyncio.Runner(loop_factory=uvloop.new_event_loop), f"uvloop {uvloop.__version__}"


def run_ratelimit_bench(
    *,
    redis_url: str | None,
    decisions: int,
    rounds: int,
    out_dir: str,
    console: Console,
    redis_decisions: int | None = None,
    key_prefix: str | None = None,
) -> dict[str, Any]:
    """Measure, print a table, write ``ratelimiter-<time>.json`` under ``out_dir``.
    ``redis_decisions`` (default ``decisions``) sizes the Redis runs; Redis keys
    live under ``key_prefix`` (default: a random one) and are deleted afterwards."""
    redis_n = redis_decisions or decisions
    if decisions < MIN_DECISIONS or redis_n < MIN_DECISIONS or rounds < 1:
        raise BenchmarkError(f"decisions must be at least {MIN_DECISIONS} and rounds at least 1")
    try:
        import limits  # noqa: F401
    except ImportError:
        raise BenchmarkError("the comparison needs limits: pip install 'sysdesign[dev]'") from None
    prefix = key_prefix or f"rlbench{uuid.uuid4().hex[:8]}"
    # Twice what a key receives in the longest run: nearly everything is admitted.
    requests = max(MIN_REQUESTS, 2 * max(decisions, redis_n if redis_url else 0) // KEYS)
    one_caller_redis = max(
        MIN_DECISIONS // ONE_CALLER_REDIS_SHARE, redis_n // ONE_CALLER_REDIS_SHARE
    )
    moment = utc_now()

    async def run() -> dict[str, Any]:
        if redis_url:
            await _check_redis(redis_url)  # before minutes of measuring in memory
        bench = Bench(redis_url, prefix, requests, console)
        stores: dict[str, Any] = {
            "memory": {
                "concurrent": await _measure(bench, "memory", CALLERS, decisions, rounds),
                "one_caller": await _measure(bench, "memory", 1, decisions, rounds),
            }
        }
        if redis_url:
            from redis.exceptions import RedisError

            try:
                stores["redis"] = {
                    "concurrent": await _measure(bench, "redis", CALLERS, redis_n, rounds),
                    "one_caller": await _measure(bench, "redis", 1, one_caller_redis, rounds),
                    "hit_batch": await _measure_batches(bench, redis_n, rounds),
                }
            except (RateLimitError, RedisError, OSError) as exc:
                raise BenchmarkError(f"redis at {_where(redis_url)}: {exc}") from None
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await delete_keys(redis_url, prefix)
        return stores

    runner, loop_name = _runner()
    with runner:
        stores = runner.run(run())
    result: dict[str, Any] = {
        "benchmark": "ratelimiter",
        "description": "rate-limit decisions/s and per-decision latency for each algorithm,"
        " in memory and on Redis, beside the limits library's strategy on the same storage",
        "timestamp": moment.isoformat().replace("+00:00", "Z"),
        "machine": machine_info(),
        "versions": package_versions(["limits", "redis", "hiredis", "uvloop"]),
        "parameters": {
            "decisions": decisions,
            "redis_decisions": redis_n if redis_url else None,
            "one_caller_redis_decisions": one_caller_redis if redis_url else None,
            "rounds": rounds,
            "keys": KEYS,
            "key_choice": "uniform random, seeded per round, the same sequence for both sides",
            "limit": f"{requests} per {PERIOD} s per key, both sides",
            "callers": CALLERS,
            "event_loop": loop_name,
            "latency": "each awaited call (concurrency: hit and release)",
            "limits_storage": {
                "memory": "async+memory://",
                "redis": "async+redis:// with implementation=redispy",
            },
            "redis": _where(redis_url) if redis_url else None,
        },
        "stores": stores,
        "goals": _goals(stores),
    }
    path = write_result(out_dir, "ratelimiter", moment, result)
    _report(result, path, console)
    return result
