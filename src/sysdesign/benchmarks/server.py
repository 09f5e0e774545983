"""A server under test in its own process, on a free loopback port.

The parent only starts it, waits until it answers, reads its memory and stops
it; the load comes from another process (wrk), never from the parent.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sysdesign.benchmarks import BenchmarkError
from sysdesign.benchmarks.cpus import pinned

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on right now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def rss_bytes(pid: int) -> int | None:
    """Resident memory of ``pid`` from /proc; ``None`` where /proc is not available."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


@dataclass(frozen=True, slots=True)
class RunningServer:
    process: subprocess.Popen[bytes]
    host: str
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def wait_until_answering(self, path: str, timeout: float = 60.0) -> tuple[int, bytes]:
        """Poll ``path`` until the server answers; raises if it exits or never answers."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise BenchmarkError(
                    f"server exited with status {self.process.returncode} before answering:\n"
                    + self.log_tail()
                )
            try:
                return self.get(path)
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchmarkError(
                        f"server did not answer {path} within {timeout:.0f} s:\n" + self.log_tail()
                    ) from None
                time.sleep(0.05)


def stop(process: subprocess.Popen[bytes], grace_seconds: float = 10.0) -> None:
    """SIGTERM (uvicorn shuts down cleanly, running the lifespan's exit), then SIGKILL."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def serve(
    factory: str,
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cpu: int | None = None,
    host: str = LOOPBACK,
) -> Iterator[RunningServer]:
    """Run ``factory`` (``module:function``) under uvicorn in a child process.

    The child's stdout goes to /dev/null, so logs are still formatted and
    written, as in production, but cost no disk; stderr goes to ``log_path``
    so that a crash can be shown. The child is always stopped on exit.
    """
    port = free_port(host)
    command = [
        sys.executable,
        "-m",
        "sysdesign.benchmarks.serve",
        factory,
        "--host",
        host,
        "--port",
        str(port),
    ]
    with log_path.open("wb") as stderr:
        process = subprocess.Popen(
            pinned(command, cpu),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=dict(os.environ if env is None else env),
        )
    try:
        yield RunningServer(process, host, port, log_path)
    finally:
        stop(process)
