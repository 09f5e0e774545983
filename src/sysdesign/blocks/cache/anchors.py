"""The anchors of ``sysdesign bench cache``: redis-server and our node as child
processes, redis-benchmark run against them and its CSV read, and the raw RESP
needed to load keys and read ``INFO memory``, with no client library between
the benchmark and the servers.
"""

from __future__ import annotations

import csv
import io
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sysdesign.benchmarks import BenchmarkError
from sysdesign.benchmarks.cpus import pinned
from sysdesign.benchmarks.server import LOOPBACK, free_port, stop
from sysdesign.blocks.cache.resp import encode_command

CLIENTS = 50
VALUE_BYTES = 100
TESTS = ("SET", "GET")
MAXMEMORY = "256mb"  # both servers; the keys loaded take a fraction of it
LOAD_BATCH = 1000


# --- redis-benchmark ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BenchmarkLine:
    """One line of ``redis-benchmark --csv``; latencies in ms. Versions before
    7 print only requests/s, so the latencies may be missing."""

    test: str
    rps: float
    avg_ms: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None


def parse_csv(text: str) -> dict[str, BenchmarkLine]:
    """Every test line of ``redis-benchmark --csv`` output, by test name.

    Redis 7 writes a header (``"test","rps","avg_latency_ms",...``) and then a
    line per test; Redis 6 writes ``"SET","12345.67"`` lines without a header.
    """
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    header: list[str] = ["test", "rps"]
    results: dict[str, BenchmarkLine] = {}
    for row in rows:
        if row[0] == "test":
            header = row
            continue
        fields = dict(zip(header, row, strict=False))
        try:
            results[row[0]] = BenchmarkLine(
                test=row[0],
                rps=float(fields["rps"]),
                avg_ms=_float(fields.get("avg_latency_ms")),
                p50_ms=_float(fields.get("p50_latency_ms")),
                p99_ms=_float(fields.get("p99_latency_ms")),
                max_ms=_float(fields.get("max_latency_ms")),
            )
        except (KeyError, ValueError):
            raise BenchmarkError(f"unreadable redis-benchmark line: {','.join(row)}") from None
    return results


def _float(value: str | None) -> float | None:
    return None if value is None or value == "" else float(value)


def benchmark_command(port: int, requests: int, keys: int, pipeline: int) -> list[str]:
    command = ["redis-benchmark", "-h", LOOPBACK, "-p", str(port), "-t", "set,get"]
    command += ["-c", str(CLIENTS), "-n", str(requests), "-d", str(VALUE_BYTES)]
    command += ["-r", str(keys), "--csv"]
    return command + (["-P", str(pipeline)] if pipeline > 1 else [])


def run_benchmark(command: list[str], cpu: int | None) -> dict[str, BenchmarkLine]:
    done = subprocess.run(pinned(command, cpu), capture_output=True, text=True, timeout=600)
    results = parse_csv(done.stdout)
    if done.returncode != 0 or set(results) != set(TESTS):
        detail = (done.stderr or done.stdout).strip()[-500:]
        raise BenchmarkError(f"redis-benchmark failed (exit {done.returncode}): {detail}")
    return results


def tool_version(tool: str) -> str | None:
    """``7.0.15`` from ``redis-server --version`` or ``redis-benchmark --version``."""
    try:
        out = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    found = re.search(r"(?:v=|\s)(\d+\.\d+\.\d+)", out.stdout)
    return found.group(1) if found else None


# --- the servers ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]


def _command(connection: socket.socket, *args: bytes) -> bytes:
    """Send one command and read its whole reply (simple, or one bulk string)."""
    connection.sendall(encode_command(*args))
    data = b""
    while True:
        chunk = connection.recv(65536)
        if not chunk:
            raise BenchmarkError("the server closed the connection")
        data += chunk
        if data[:1] != b"$":
            if data.endswith(b"\r\n"):
                return data
            continue
        size, _, rest = data[1:].partition(b"\r\n")
        if len(rest) >= int(size) + 2:
            return rest[: int(size)]


def _wait_ready(server: Server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise BenchmarkError(f"{server.name} exited with status {server.process.returncode}")
        try:
            with socket.create_connection((LOOPBACK, server.port), timeout=5) as connection:
                if _command(connection, b"PING") == b"+PONG\r\n":
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise BenchmarkError(f"{server.name} did not answer PING within {timeout:.0f} s")
        time.sleep(0.05)


@contextmanager
def serve(name: str, command: list[str], port: int, cpu: int | None) -> Iterator[Server]:
    process = subprocess.Popen(
        pinned(command, cpu), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )
    server = Server(name, port, process)
    try:
        _wait_ready(server)
        yield server
    finally:
        stop(process)


def redis_server(cpu: int | None) -> tuple[list[str], int]:
    port = free_port()
    command = ["redis-server", "--bind", LOOPBACK, "--port", str(port), "--save", ""]
    command += ["--appendonly", "no", "--maxmemory", MAXMEMORY]
    return [*command, "--maxmemory-policy", "allkeys-lru"], port


def cache_node(cpu: int | None) -> tuple[list[str], int]:
    port = free_port()
    command = [sys.executable, "-m", "sysdesign.blocks.cache.node", "--host", LOOPBACK]
    command += ["--port", str(port), "--maxmemory", MAXMEMORY]
    return [*command, "--policy", "allkeys-lru"], port


# --- memory per key ---------------------------------------------------------------


def key_name(i: int) -> bytes:
    """The i-th key as redis-benchmark's ``-r`` names it (``key:__rand_int__``)."""
    return b"key:%012d" % i


def load_keys(port: int, keys: int) -> None:
    """SET ``keys`` keys with ``VALUE_BYTES`` values, pipelined ``LOAD_BATCH`` at a time."""
    value = b"x" * VALUE_BYTES
    with socket.create_connection((LOOPBACK, port), timeout=30) as connection:
        for start in range(0, keys, LOAD_BATCH):
            batch = range(start, min(start + LOAD_BATCH, keys))
            connection.sendall(b"".join(encode_command(b"SET", key_name(i), value) for i in batch))
            expected, received = b"+OK\r\n" * len(batch), b""
            while len(received) < len(expected):
                chunk = connection.recv(65536)
                if not chunk:
                    raise BenchmarkError(f"connection closed while loading keys on port {port}")
                received += chunk
            if received != expected:
                raise BenchmarkError(f"loading keys on port {port}: {received[:200]!r}")


def used_memory(port: int) -> int:
    with socket.create_connection((LOOPBACK, port), timeout=10) as connection:
        info = _command(connection, b"INFO", b"memory").decode()
    found = re.search(r"^used_memory:(\d+)", info, re.MULTILINE)
    if found is None:
        raise BenchmarkError(f"no used_memory in INFO memory on port {port}")
    return int(found.group(1))
