"""CPU placement: the server on one CPU, the load generator on another.

On a small machine a server and its load generator sharing CPUs measure the
scheduler as much as the server; pinning each to its own CPU with ``taskset``
makes runs comparable. With fewer than two CPUs, or no ``taskset``, nothing is
pinned and the plan says why.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CpuPlan:
    server: int | None
    load: int | None
    note: str

    @property
    def pinned(self) -> bool:
        return self.server is not None

    def as_dict(self) -> dict[str, int | str | None]:
        return {"server": self.server, "load": self.load, "note": self.note}


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (respects cgroup and affinity limits)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def plan_cpus(cpus: Sequence[int] | None = None, taskset: str | None = None) -> CpuPlan:
    """Server on the first usable CPU, load on the second, when both exist."""
    cpus = usable_cpus() if cpus is None else list(cpus)
    taskset = shutil.which("taskset") if taskset is None else taskset
    if not taskset:
        return CpuPlan(None, None, "not pinned: taskset not found (apt-get install util-linux)")
    if len(cpus) < 2:
        return CpuPlan(None, None, f"not pinned: only {len(cpus)} usable CPU")
    return CpuPlan(cpus[0], cpus[1], f"server on CPU {cpus[0]}, load generator on CPU {cpus[1]}")


def pinned(command: Sequence[str], cpu: int | None) -> list[str]:
    """``command`` run on ``cpu`` through taskset; unchanged when ``cpu`` is None.

    taskset execs the command, so the process id stays the command's own.
    """
    if cpu is None:
        return list(command)
    return ["taskset", "-c", str(cpu), *command]
