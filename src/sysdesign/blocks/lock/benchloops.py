"""The two loops ``sysdesign bench locks`` times, and their summaries over rounds.

- ``uncontended``: one task, ``pairs`` acquire+release pairs back to back.
- ``contended``: ``tasks`` tasks loop acquire (waiting) and release on one
  name until ``grants`` grants in all. A holder yields to the event loop once
  before releasing, so a second holder, if the lock ever let one in, would
  run meanwhile and be counted as an overlap.

Latencies are ``perf_counter_ns`` around the awaited calls; percentiles are
nearest-rank.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sysdesign.benchmarks.results import median
from sysdesign.blocks.lock.anchors import Subject

WARMUP_PAIRS = 20

Opener = Callable[[str], contextlib.AbstractAsyncContextManager[Subject]]


def percentile(values: Sequence[float], percent: float) -> float:
    """Nearest-rank percentile: the smallest value with ``percent`` % of the
    values at or below it. ``ValueError`` for no values."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= percent <= 100:
        raise ValueError(f"percent must be 0 to 100, not {percent}")
    ordered = sorted(values)
    return ordered[max(1, math.ceil(percent / 100 * len(ordered))) - 1]


# --- measuring ------------------------------------------------------------------------


async def uncontended(subject: Subject, pairs: int) -> dict[str, float]:
    clock = time.perf_counter_ns
    latencies: list[int] = []
    gc.collect()  # the garbage of earlier runs is collected now, not during this one
    start = clock()
    for _ in range(pairs):
        begin = clock()
        held = await subject.acquire()
        await subject.release(held)
        latencies.append(clock() - begin)
    elapsed = clock() - start
    return {
        "pairs_per_s": pairs / (elapsed / 1e9),
        "p50_us": percentile(latencies, 50) / 1000,
        "p99_us": percentile(latencies, 99) / 1000,
    }


async def contended(subject: Subject, grants: int, tasks: int) -> dict[str, float]:
    clock = time.perf_counter_ns
    remaining = grants
    holding = overlaps = 0
    waits: list[int] = []
    per_task = [0] * tasks

    async def worker(index: int) -> None:
        nonlocal remaining, holding, overlaps
        while remaining > 0:
            remaining -= 1  # claimed before waiting, so exactly ``grants`` are granted
            begin = clock()
            held = await subject.acquire()
            waits.append(clock() - begin)
            per_task[index] += 1
            holding += 1
            overlaps += holding > 1
            await asyncio.sleep(0)  # another holder, if the lock let one in, runs now
            holding -= 1
            await subject.release(held)

    gc.collect()
    start = clock()
    await asyncio.gather(*(worker(i) for i in range(tasks)))
    elapsed = clock() - start
    return {
        "grants_per_s": grants / (elapsed / 1e9),
        "wait_p50_us": percentile(waits, 50) / 1000,
        "wait_p99_us": percentile(waits, 99) / 1000,
        "largest_task_share": max(per_task) / grants,
        "overlaps": overlaps,
    }


@dataclass
class Side:
    """The rounds of one implementation on one backend."""

    open: Opener
    uncontended: list[dict[str, float]] = field(default_factory=list)
    contended: list[dict[str, float]] = field(default_factory=list)

    async def run(self, name: str, pairs: int, grants: int, tasks: int) -> None:
        async with self.open(name) as subject:
            for _ in range(WARMUP_PAIRS):
                await subject.release(await subject.acquire())
            self.uncontended.append(await uncontended(subject, pairs))
            self.contended.append(await contended(subject, grants, tasks))

    def summary(self) -> dict[str, Any]:
        return {
            "uncontended": _medians(self.uncontended, "pairs_per_s"),
            "contended": _medians(self.contended, "grants_per_s"),
        }


def _medians(runs: list[dict[str, float]], rate: str) -> dict[str, Any]:
    out: dict[str, Any] = {f"{rate}_rounds": [round(r[rate]) for r in runs]}
    for key in runs[0]:
        value = median(r[key] for r in runs)
        out[key] = round(value) if key == rate else round(value, 3 if "share" in key else 1)
    if "overlaps" in out:
        out["overlaps"] = max(int(r["overlaps"]) for r in runs)  # any overlap is reported
    return out


async def probe(open_: Opener, name: str) -> str | None:
    """``None`` when a subject opens and grants a lock, else why not."""
    try:
        async with open_(name) as subject:
            await subject.release(await subject.acquire())
    except Exception as exc:
        return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    return None
