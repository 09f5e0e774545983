"""Rounds of wrk against running servers, with a probe read around each measured round.

A warm-up per server first, then ``rounds`` rounds in which the servers take
turns, the order reversed every other round so that a slow moment of the
shared machine does not always fall on the same one. Each server may have a
probe (a function reading its ``/metrics``); what it reads before and after
each measured round is summed into ``deltas``, so figures such as statements
per redirect cover exactly the measured load.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from sysdesign.benchmarks import BenchmarkError
from sysdesign.benchmarks.cpus import CpuPlan, pinned
from sysdesign.benchmarks.server import RunningServer
from sysdesign.benchmarks.wrk import WrkResult, run_wrk, wrk_command

Probe = Callable[[], dict[str, float]]
# wrk gives up on a request after 2 s by default and leaves it out of the latencies:
# a slow creation (writers queue on SQLite's lock) must count in p99, not vanish.
WRK_TIMEOUT = "10s"


def wrk_script_command(
    wrk: str, server: RunningServer, script: Path, seconds: int, connections: int
) -> list[str]:
    command = wrk_command(wrk, server.url("/"), duration=seconds, connections=connections)
    return [*command[:-1], "--timeout", WRK_TIMEOUT, "-s", str(script), command[-1]]


class Rounds:
    def __init__(
        self, wrk: str, cpus: CpuPlan, seconds: int, connections: int, console: Console
    ) -> None:
        self.wrk = wrk
        self.cpus = cpus
        self.seconds = seconds
        self.connections = connections
        self.console = console
        self.results: dict[str, list[WrkResult]] = {}
        self.deltas: dict[str, dict[str, float]] = {}
        self.failures: list[str] = []
        self.warnings: list[str] = []

    def run(
        self,
        servers: Mapping[str, RunningServer],
        script: Path,
        rounds: int,
        warmup_seconds: int,
        probes: Mapping[str, Probe] | None = None,
    ) -> dict[str, list[WrkResult]]:
        """Warm-ups, then the rounds; returns the measured results by server."""
        probes = probes or {}
        keys = list(servers)
        schedule = [(key, 0) for key in keys] + [
            (key, n) for n in range(1, rounds + 1) for key in (keys if n % 2 else keys[::-1])
        ]
        total = sum(warmup_seconds if n == 0 else self.seconds for _, n in schedule)
        self.results = {key: [] for key in keys}
        self.deltas = {key: {} for key in probes}
        columns = (TextColumn("{task.description:<28}"), BarColumn(), TimeElapsedColumn(),
                   TextColumn("left"), TimeRemainingColumn())  # fmt: skip
        with Progress(*columns, console=self.console) as bar:
            task = bar.add_task("", total=total)
            done = 0.0
            for key, n in schedule:
                length = warmup_seconds if n == 0 else self.seconds
                name = f"{key} {'warm-up' if n == 0 else f'round {n}/{rounds}'}"
                bar.update(task, description=name)

                def tick(elapsed: float, base: float = done, cap: float = length) -> None:
                    bar.update(task, completed=base + min(elapsed, cap))

                probe = probes.get(key) if n else None
                before = probe() if probe else {}
                command = wrk_script_command(
                    self.wrk, servers[key], script, length, self.connections
                )
                result = run_wrk(
                    pinned(command, self.cpus.load), expected_seconds=length, on_tick=tick
                )
                if servers[key].process.poll() is not None:
                    raise BenchmarkError(f"{key} died during {name}:\n{servers[key].log_tail()}")
                if probe:
                    after = probe()
                    sums = self.deltas[key]
                    for figure, value in after.items():
                        sums[figure] = sums.get(figure, 0.0) + value - before.get(figure, 0.0)
                done += length
                bar.update(task, completed=done)
                failures, warnings = result.problems(name)
                self.failures += failures
                self.warnings += warnings
                if n:
                    self.results[key].append(result)
                    bar.console.print(
                        f"  {name:<18} {result.requests_per_second:>10,.0f} req/s   "
                        f"p50 {result.p50_ms:7.2f} ms   p99 {result.p99_ms:7.2f} ms"
                    )
        return self.results
