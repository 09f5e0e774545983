"""The shared benchmark machinery: wrk's report, CPU placement, result files, servers.

The wrk reports below were printed by wrk 4.1.0 on loopback (an ok run, a run
on a path that answers 404, a server that closes every connection); the last
one combines both error lines and second-scale latencies as wrk prints them.
"""

from __future__ import annotations

import json
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sysdesign.benchmarks import BenchmarkError
from sysdesign.benchmarks.cpus import pinned, plan_cpus
from sysdesign.benchmarks.machine import cpu_model, package_versions, total_memory_bytes
from sysdesign.benchmarks.results import file_timestamp, median, write_result
from sysdesign.benchmarks.server import free_port, serve
from sysdesign.benchmarks.wrk import (
    INSTALL_HINT,
    duration_ms,
    find_wrk,
    parse_wrk_output,
    run_wrk,
    wrk_command,
    wrk_seconds,
)
from sysdesign.platform import bench

WRK_OK = """\
Running 1s test @ http://127.0.0.1:18777/bench/v1/ping
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   382.05us  375.60us   4.32ms   95.49%
    Req/Sec    24.13k     5.01k   32.99k    72.73%
  Latency Distribution
     50%  344.00us
     75%  356.00us
     90%  465.00us
     99%    2.53ms
  26376 requests in 1.10s, 3.60MB read
Requests/sec:  23981.63
Transfer/sec:      3.27MB
"""

WRK_NOT_FOUND = """\
Running 1s test @ http://127.0.0.1:18777/nope
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   276.60us  228.38us   4.33ms   96.63%
    Req/Sec    31.08k     4.24k   34.48k    72.73%
  Latency Distribution
     50%  212.00us
     75%  331.00us
     90%  406.00us
     99%    1.21ms
  33996 requests in 1.10s, 4.28MB read
  Non-2xx or 3xx responses: 33996
Requests/sec:  30918.19
Transfer/sec:      3.89MB
"""

WRK_CLOSED = """\
Running 1s test @ http://127.0.0.1:18779/
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   122.63us   45.60us 441.00us   73.05%
    Req/Sec     9.71k   153.50     9.89k    72.73%
  Latency Distribution
     50%  136.00us
     75%  154.00us
     90%  163.00us
     99%  247.00us
  10636 requests in 1.10s, 612.82KB read
  Socket errors: connect 0, read 10636, write 0, timeout 0
Requests/sec:   9672.58
Transfer/sec:    557.31KB
"""

WRK_OVERLOADED = """\
Running 10s test @ http://127.0.0.1:8000/bench/v1/ping
  1 threads and 512 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   612.40ms  301.22ms   1.99s    70.12%
    Req/Sec     0.85k   120.50     1.10k    68.00%
  Latency Distribution
     50%  580.11ms
     75%  790.00ms
     90%    1.02s
     99%    1.87s
  8412 requests in 10.02s, 1.31MB read
  Socket errors: connect 3, read 12, write 1, timeout 44
  Non-2xx or 3xx responses: 7
Requests/sec:    839.52
Transfer/sec:    133.90KB
"""

WRK_NO_LATENCY = """\
Running 1s test @ http://127.0.0.1:18777/bench/v1/ping
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   382.05us  375.60us   4.32ms   95.49%
    Req/Sec    24.13k     5.01k   32.99k    72.73%
  26376 requests in 1.10s, 3.60MB read
Requests/sec:  23981.63
Transfer/sec:      3.27MB
"""


# --- wrk's report -------------------------------------------------------------------


def test_parses_a_clean_run() -> None:
    result = parse_wrk_output(WRK_OK)
    assert result.requests_per_second == 23981.63
    assert result.requests == 26376
    assert result.duration_ms == 1100.0
    assert result.latency_percentiles_ms == {50: 0.344, 75: 0.356, 90: 0.465, 99: 2.53}
    assert (result.p50_ms, result.p99_ms) == (0.344, 2.53)
    assert result.bad_status_responses == 0
    assert result.socket_errors.total == 0


def test_counts_error_statuses() -> None:
    result = parse_wrk_output(WRK_NOT_FOUND)
    assert result.bad_status_responses == 33996
    assert result.socket_errors.total == 0
    assert result.p99_ms == 1.21


def test_counts_socket_errors() -> None:
    result = parse_wrk_output(WRK_CLOSED)
    assert result.socket_errors.read == 10636
    assert result.socket_errors.total == 10636
    assert result.bad_status_responses == 0


def test_parses_both_error_lines_and_second_latencies() -> None:
    result = parse_wrk_output(WRK_OVERLOADED)
    errors = result.socket_errors
    assert (errors.connect, errors.read, errors.write, errors.timeout) == (3, 12, 1, 44)
    assert errors.total == 60
    assert result.bad_status_responses == 7
    assert result.latency_percentiles_ms == {50: 580.11, 75: 790.0, 90: 1020.0, 99: 1870.0}
    assert result.duration_ms == 10020.0


def test_error_statuses_fail_a_run_and_socket_errors_warn() -> None:
    assert parse_wrk_output(WRK_OK).problems("bare round 1") == ([], [])
    assert parse_wrk_output(WRK_NOT_FOUND).problems("full round 2") == (
        ["full round 2: 33996 responses with status >= 400"],
        [],
    )
    failures, warnings = parse_wrk_output(WRK_CLOSED).problems("bare round 2")
    assert failures == []
    assert warnings == ["bare round 2: socket errors connect 0, read 10636, write 0, timeout 0"]


def test_as_dict_names_percentiles_and_is_json() -> None:
    data = parse_wrk_output(WRK_OVERLOADED).as_dict()
    assert data["p50_ms"] == 580.11
    assert data["p99_ms"] == 1870.0
    assert data["socket_errors"] == {"connect": 3, "read": 12, "write": 1, "timeout": 44}
    assert json.loads(json.dumps(data)) == data


def test_without_latency_flag_percentiles_are_an_error() -> None:
    result = parse_wrk_output(WRK_NO_LATENCY)
    assert result.requests_per_second == 23981.63
    assert result.latency_percentiles_ms == {}
    with pytest.raises(BenchmarkError, match="--latency"):
        _ = result.p99_ms


@pytest.mark.parametrize(
    "output", ["", "unable to connect to 127.0.0.1:9 Connection refused\n", WRK_OK[:300]]
)
def test_no_report_is_an_error(output: str) -> None:
    with pytest.raises(BenchmarkError, match="no report"):
        parse_wrk_output(output)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("812.00us", 0.812), ("4.98ms", 4.98), ("1.02s", 1020.0), ("2.00m", 120_000.0),
     ("1.00h", 3_600_000.0), ("0.00us", 0.0)],
)  # fmt: skip
def test_duration_units(text: str, expected: float) -> None:
    assert duration_ms(text) == expected


@pytest.mark.parametrize("text", ["", "4.98", "ms", "4.98 ms", "-1.00ms", "4.98ns"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(BenchmarkError):
        duration_ms(text)


@given(
    value=st.decimals(min_value=0, max_value=99999, places=2, allow_nan=False),
    unit=st.sampled_from(["us", "ms", "s", "m", "h"]),
)
def test_duration_round_trips_what_wrk_prints(value: object, unit: str) -> None:
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}[unit]
    assert duration_ms(f"{value}{unit}") == pytest.approx(float(str(value)) * scale)


def test_wrk_command_uses_whole_seconds() -> None:
    assert wrk_seconds(0.2) == 1
    assert wrk_seconds(2.6) == 3
    assert wrk_command("wrk", "http://h/p", duration=10, connections=64) == [
        "wrk", "-t1", "-c64", "-d10s", "--latency", "http://h/p",
    ]  # fmt: skip


def test_run_wrk_parses_what_the_command_prints() -> None:
    command = [sys.executable, "-c", f"print({WRK_NOT_FOUND!r})"]
    ticks: list[float] = []
    result = run_wrk(command, expected_seconds=1, on_tick=ticks.append)
    assert result.bad_status_responses == 33996


def test_run_wrk_reports_a_failed_command() -> None:
    command = [sys.executable, "-c", "import sys; sys.exit('unable to connect')"]
    with pytest.raises(BenchmarkError, match="status 1: unable to connect"):
        run_wrk(command, expected_seconds=1)


def test_missing_wrk_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BenchmarkError) as caught:
        find_wrk()
    assert str(caught.value) == INSTALL_HINT
    assert "apt-get install wrk" in INSTALL_HINT


# --- CPU placement, machine, results ------------------------------------------------


def test_two_cpus_split_server_and_load() -> None:
    plan = plan_cpus([2, 5], taskset="/usr/bin/taskset")
    assert (plan.server, plan.load, plan.pinned) == (2, 5, True)
    assert pinned(["wrk", "url"], plan.load) == ["taskset", "-c", "5", "wrk", "url"]


@pytest.mark.parametrize(("cpus", "taskset"), [([0], "/usr/bin/taskset"), ([0, 1], "")])
def test_no_pinning_without_two_cpus_or_taskset(cpus: list[int], taskset: str) -> None:
    plan = plan_cpus(cpus, taskset=taskset)
    assert (plan.server, plan.load, plan.pinned) == (None, None, False)
    assert plan.note.startswith("not pinned")
    assert pinned(["wrk", "url"], plan.load) == ["wrk", "url"]


def test_machine_facts_from_proc_files(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t: fpu\n")
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24683896 kB\nMemFree:        1 kB\n")
    assert cpu_model(cpuinfo) == "AMD EPYC 7B13"
    assert total_memory_bytes(meminfo) == 24683896 * 1024
    assert total_memory_bytes(tmp_path / "missing") is None


def test_versions_name_missing_distributions() -> None:
    versions = package_versions(["starlette", "surely-not-installed-dist"])
    assert versions["python"].count(".") == 2
    assert versions["starlette"]
    assert versions["surely-not-installed-dist"] is None


def test_result_file_is_named_by_utc_time_and_never_overwritten(tmp_path: Path) -> None:
    moment = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert file_timestamp(moment) == "20250102T030405Z"
    first = write_result(tmp_path / "out", "platform", moment, {"ratio": 0.8})
    second = write_result(tmp_path / "out", "platform", moment, {"ratio": 0.9})
    assert first.name == "platform-20250102T030405Z.json"
    assert second.name == "platform-20250102T030405Z-2.json"
    assert json.loads(first.read_text()) == {"ratio": 0.8}
    assert json.loads(second.read_text()) == {"ratio": 0.9}


def test_median() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([1.0, 2.0]) == 1.5
    with pytest.raises(ValueError):
        median([])


# --- servers ------------------------------------------------------------------------


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))


def test_served_app_answers_then_is_stopped(tmp_path: Path) -> None:
    with serve("sysdesign.platform.bench:bare_app", log_path=tmp_path / "log") as server:
        status, body = server.wait_until_answering(bench.PING_PATH, timeout=60)
        assert (status, json.loads(body)) == (200, bench.PING_BODY)
    assert server.process.returncode is not None


def test_server_that_cannot_start_is_reported(tmp_path: Path) -> None:
    with (
        serve("sysdesign.platform.bench:no_such_factory", log_path=tmp_path / "log") as server,
        pytest.raises(BenchmarkError, match="exited with status"),
    ):
        server.wait_until_answering(bench.PING_PATH, timeout=60)


# --- the platform benchmark's two targets -----------------------------------------


def test_server_env_keeps_the_callers_backends_out(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SYSDESIGN_DATABASE_URL", "postgresql+asyncpg://elsewhere/db")
    monkeypatch.setenv("SYSDESIGN_LOG_FORMAT", "console")
    env = bench.server_env(tmp_path)
    assert "SYSDESIGN_DATABASE_URL" not in env
    assert env["SYSDESIGN_DATA_DIR"] == str(tmp_path)
    assert env["SYSDESIGN_LOG_FORMAT"] == "json"
    assert env["SYSDESIGN_ACCESS_LOG"] == "true"


async def _get(app: Any, *paths: str) -> list[httpx.Response]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            return [await client.get(path) for path in paths]


async def test_all_targets_answer_the_same_and_full_stack_labels_bench(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in bench.server_env(tmp_path / "data").items():
        if name.startswith("SYSDESIGN_"):
            monkeypatch.setenv(name, value)
    # Global logging belongs to the process the benchmark starts, not to the test run.
    monkeypatch.setattr("sysdesign.platform.observability.configure_logging", lambda *a: None)

    [bare] = await _get(bench.bare_app(), bench.PING_PATH)
    [framework] = await _get(bench.fastapi_app(), bench.PING_PATH)
    full, metrics = await _get(bench.full_stack_app(), bench.PING_PATH, "/metrics")

    assert bare.status_code == framework.status_code == full.status_code == 200
    assert bare.json() == framework.json() == full.json() == bench.PING_BODY
    assert "x-request-id" in full.headers
    counted = [
        line for line in metrics.text.splitlines() if line.startswith("http_requests_total{")
    ]
    assert any(
        'system="bench"' in line and f'route="{bench.PING_PATH}"' in line for line in counted
    )
