"""What a result was measured on: the machine and the versions of what ran."""

from __future__ import annotations

import os
import platform
import socket
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any


def _proc_field(path: Path, name: str) -> str | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            return value.strip()
    return None


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    # x86 says "model name"; some ARM kernels only say "Hardware" or nothing at all.
    for name in ("model name", "Hardware", "cpu model"):
        value = _proc_field(cpuinfo, name)
        if value:
            return value
    return platform.processor() or platform.machine()


def total_memory_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    value = _proc_field(meminfo, "MemTotal")  # "24683896 kB"
    if value is None:
        return None
    number, _, unit = value.partition(" ")
    return int(number) * (1024 if unit.strip().lower() == "kb" else 1)


def machine_info() -> dict[str, Any]:
    memory = total_memory_bytes()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "memory_total_bytes": memory,
        "memory_total_gib": round(memory / 2**30, 1) if memory else None,
    }


def package_versions(distributions: Iterable[str]) -> dict[str, str | None]:
    """Installed version of each distribution; ``None`` when it is not installed."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in distributions:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions
