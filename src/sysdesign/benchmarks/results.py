"""Result files: one JSON document per run under ``bench/results/``."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sysdesign.benchmarks.wrk import WrkResult


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def file_timestamp(moment: datetime) -> str:
    """``20250102T030405Z``: sorts by time and is safe in a file name on every OS."""
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def median(values: Iterable[float]) -> float:
    data = list(values)
    if not data:
        raise ValueError("median of no values")
    return statistics.median(data)


def medians(rounds: Iterable[WrkResult]) -> dict[str, float]:
    """Requests per second, p50 and p99 of wrk's rounds: each figure the median
    of its own column, not the figures of the median round."""
    results = list(rounds)
    return {
        "rps": round(median(r.requests_per_second for r in results), 2),
        "p50_ms": round(median(r.p50_ms for r in results), 3),
        "p99_ms": round(median(r.p99_ms for r in results), 3),
    }


def write_result(
    out_dir: str | Path, name: str, moment: datetime, result: Mapping[str, Any]
) -> Path:
    """Write ``<out_dir>/<name>-<UTC timestamp>.json`` and return its path.

    Never overwrites: a second run within the same second gets a ``-2`` suffix.
    """
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-{file_timestamp(moment)}"
    text = json.dumps(result, indent=2, ensure_ascii=False) + "\n"
    for attempt in range(1, 100):
        path = directory / (f"{stem}.json" if attempt == 1 else f"{stem}-{attempt}.json")
        try:
            with path.open("x", encoding="utf-8") as handle:
                handle.write(text)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"too many results named {stem} in {directory}")
