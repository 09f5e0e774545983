"""wrk, the HTTP load generator: find it, run it, and parse its report.

wrk runs in its own process (and, when there are two CPUs, on its own CPU) so
the load generator never competes with the server it measures for the GIL.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sysdesign.benchmarks import BenchmarkError

INSTALL_HINT = "wrk is not installed (or not on PATH): apt-get install wrk"

# wrk prints times with these units (see its units.c); values are converted to ms.
_MS_PER_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}

_DURATION = re.compile(r"^(?P<value>\d+(?:\.\d+)?)(?P<unit>us|ms|s|m|h)$")
_REQUESTS_PER_SECOND = re.compile(r"^Requests/sec:\s+(?P<value>\d+(?:\.\d+)?)\s*$", re.MULTILINE)
_TOTAL = re.compile(r"^\s*(?P<requests>\d+) requests in (?P<duration>\S+?),", re.MULTILINE)
_PERCENTILE = re.compile(r"^\s*(?P<percent>\d+(?:\.\d+)?)%\s+(?P<duration>\S+)\s*$")
_SOCKET_ERRORS = re.compile(
    r"^\s*Socket errors: connect (?P<connect>\d+), read (?P<read>\d+), "
    r"write (?P<write>\d+), timeout (?P<timeout>\d+)\s*$",
    re.MULTILINE,
)
_BAD_STATUS = re.compile(r"^\s*Non-2xx or 3xx responses: (?P<count>\d+)\s*$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class SocketErrors:
    connect: int = 0
    read: int = 0
    write: int = 0
    timeout: int = 0

    @property
    def total(self) -> int:
        return self.connect + self.read + self.write + self.timeout


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run. ``bad_status_responses`` is wrk's "Non-2xx or 3xx responses":
    despite the wording, wrk counts every status of 400 and above there."""

    requests_per_second: float
    requests: int
    duration_ms: float
    latency_percentiles_ms: dict[float, float]
    bad_status_responses: int = 0
    socket_errors: SocketErrors = field(default_factory=SocketErrors)

    def percentile_ms(self, percent: float) -> float:
        try:
            return self.latency_percentiles_ms[percent]
        except KeyError:
            raise BenchmarkError(
                f"wrk reported no {percent:g}% latency (was it run with --latency?)"
            ) from None

    @property
    def p50_ms(self) -> float:
        return self.percentile_ms(50)

    @property
    def p99_ms(self) -> float:
        return self.percentile_ms(99)

    def problems(self, run: str) -> tuple[list[str], list[str]]:
        """``(failures, warnings)`` of the run named ``run``.

        An error status means the target did not serve what was measured, so it
        fails the run; socket errors (timeouts, resets at the end of a run) are
        reported but keep the figures.
        """
        failures: list[str] = []
        warnings: list[str] = []
        if self.bad_status_responses:
            failures.append(f"{run}: {self.bad_status_responses} responses with status >= 400")
        if self.socket_errors.total:
            e = self.socket_errors
            warnings.append(
                f"{run}: socket errors connect {e.connect}, read {e.read}, "
                f"write {e.write}, timeout {e.timeout}"
            )
        return failures, warnings

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: percentile keys become ``p50_ms``-style names."""
        data = asdict(self)
        percentiles = data.pop("latency_percentiles_ms")
        for percent, value in sorted(percentiles.items()):
            data[f"p{percent:g}_ms"] = value
        return data


def duration_ms(text: str) -> float:
    """``"4.98ms"``, ``"812.00us"``, ``"1.02s"`` (as wrk prints times) in milliseconds."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise BenchmarkError(f"not a wrk duration: {text!r}")
    # Rounded: wrk prints at most two decimals, so more digits would be float noise.
    return round(float(match["value"]) * _MS_PER_UNIT[match["unit"]], 6)


def _latency_distribution(output: str) -> dict[float, float]:
    lines = output.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Latency Distribution")
    except StopIteration:
        return {}
    percentiles: dict[float, float] = {}
    for line in lines[start + 1 :]:
        match = _PERCENTILE.match(line)
        if match is None:
            break
        percentiles[float(match["percent"])] = duration_ms(match["duration"])
    return percentiles


def parse_wrk_output(output: str) -> WrkResult:
    """Parse the report wrk prints on stdout; raises ``BenchmarkError`` if it is not one."""
    rps = _REQUESTS_PER_SECOND.search(output)
    total = _TOTAL.search(output)
    if rps is None or total is None:
        raise BenchmarkError(f"wrk printed no report:\n{output.strip()}")
    socket = _SOCKET_ERRORS.search(output)
    bad_status = _BAD_STATUS.search(output)
    return WrkResult(
        requests_per_second=float(rps["value"]),
        requests=int(total["requests"]),
        duration_ms=duration_ms(total["duration"]),
        latency_percentiles_ms=_latency_distribution(output),
        bad_status_responses=int(bad_status["count"]) if bad_status else 0,
        socket_errors=(
            SocketErrors(**{k: int(v) for k, v in socket.groupdict().items()})
            if socket
            else SocketErrors()
        ),
    )


def find_wrk() -> str:
    """The path of the wrk executable; raises ``BenchmarkError`` with the install hint."""
    path = shutil.which("wrk")
    if path is None:
        raise BenchmarkError(INSTALL_HINT)
    return path


def wrk_version(wrk: str) -> str:
    """``"wrk debian/4.1.0-3+b2 [epoll]"``: wrk's first line, without the copyright."""
    # `wrk -v` prints its version and usage, then exits with status 1: ignore the status.
    completed = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10)
    first = (completed.stdout or completed.stderr).strip().splitlines()[0]
    return first.split(" Copyright", 1)[0].strip()


def wrk_seconds(duration: float) -> int:
    """wrk's ``-d`` takes whole seconds: the duration it will actually run."""
    return max(1, round(duration))


def wrk_command(
    wrk: str, url: str, *, duration: float, connections: int, threads: int = 1
) -> list[str]:
    return [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{wrk_seconds(duration)}s",
        "--latency",
        url,
    ]


def run_wrk(
    command: Sequence[str],
    *,
    expected_seconds: float,
    on_tick: Callable[[float], None] | None = None,
) -> WrkResult:
    """Run wrk to completion and parse its report.

    ``on_tick(elapsed_seconds)`` is called a few times a second while it runs,
    for progress bars. Raises ``BenchmarkError`` if wrk fails or overruns.
    """
    deadline = time.monotonic() + expected_seconds + 30
    started = time.monotonic()
    process = subprocess.Popen(
        list(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        while True:
            try:
                stdout, stderr = process.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    raise BenchmarkError(
                        f"wrk did not finish within {expected_seconds + 30:.0f} s"
                    ) from None
                if on_tick is not None:
                    on_tick(time.monotonic() - started)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if process.returncode != 0:
        raise BenchmarkError(f"wrk exited with status {process.returncode}: {stderr.strip()}")
    return parse_wrk_output(stdout)
