"""A throwaway etcd cluster for tests: ``with etcd_cluster(tmp_path) as cluster``.

Each member runs the ``etcd`` binary on free loopback ports with its own data
directory under the given path; entering waits until every member sees the
same leader, leaving kills what still runs and waits for it. Without the
binary the test is skipped (failed under ``SYSDESIGN_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.backends import services_required

# Short raft timings so a cluster elects a leader, and notices a lost one, quickly.
HEARTBEAT_MS = 50
ELECTION_MS = 500


@dataclass
class EtcdCluster:
    client_urls: list[str]
    processes: list[subprocess.Popen[bytes]]
    logs: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The ``etcd://h1:p1,h2:p2,...`` URL of every member."""
        return "etcd://" + ",".join(url.removeprefix("http://") for url in self.client_urls)

    def wait_for_leader(self, members: list[int] | None = None, timeout: float = 20.0) -> None:
        """Wait until ``members`` (default: all) follow one leader among themselves."""
        indexes = list(range(len(self.client_urls))) if members is None else members
        urls = [self.client_urls[i] for i in indexes]
        deadline = time.monotonic() + timeout
        while True:
            statuses = _statuses(urls)
            member_ids = {member for member, _ in statuses}
            leaders = {leader for _, leader in statuses}
            # A follower names a dead leader until its election timeout: require
            # a leader that is one of the members asked.
            if len(leaders) == 1 and leaders <= member_ids and 0 not in member_ids:
                return
            exited = [i for i in indexes if self.processes[i].poll() is not None]
            if exited or time.monotonic() > deadline:
                logs = "\n".join(path.read_text(errors="replace")[-2000:] for path in self.logs)
                raise RuntimeError(f"etcd members {list(indexes)} have no leader:\n{logs}")
            time.sleep(0.1)

    def kill(self, index: int) -> None:
        """SIGKILL member ``index`` and wait until it is gone (its sockets closed)."""
        process = self.processes[index]
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)


def free_ports(count: int) -> list[int]:
    """Ports the kernel just handed out, all distinct; free unless taken in between."""
    with ExitStack() as stack:
        sockets = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]


def etcd_binary() -> str:
    binary = shutil.which("etcd")
    if binary is None:
        reason = "no etcd binary on PATH (apt-get install etcd-server)"
        if services_required():
            pytest.fail(reason)
        pytest.skip(reason)
    return binary


def _statuses(client_urls: list[str]) -> list[tuple[int, int]]:
    """(member id, the leader it follows) of each member; (0, 0) if it did not answer."""
    statuses = []
    with httpx.Client(timeout=1.0, trust_env=False) as http:
        for url in client_urls:
            try:
                data = http.post(url + "/v3/maintenance/status", content=b"{}").json()
                statuses.append((int(data["header"]["member_id"]), int(data.get("leader", 0))))
            except (httpx.HTTPError, ValueError, KeyError):
                statuses.append((0, 0))
    return statuses


@contextmanager
def etcd_cluster(directory: Path, size: int = 3, timeout: float = 20.0) -> Iterator[EtcdCluster]:
    binary = etcd_binary()
    ports = free_ports(2 * size)
    names = [f"m{i}" for i in range(size)]
    peer_urls = [f"http://127.0.0.1:{ports[2 * i + 1]}" for i in range(size)]
    client_urls = [f"http://127.0.0.1:{ports[2 * i]}" for i in range(size)]
    initial = ",".join(f"{name}={url}" for name, url in zip(names, peer_urls, strict=True))
    cluster = EtcdCluster(client_urls, [])
    try:
        for i, name in enumerate(names):
            log_path = directory / f"{name}.log"
            cluster.logs.append(log_path)
            with log_path.open("wb") as log:  # the child keeps its own descriptor
                cluster.processes.append(
                    subprocess.Popen(
                        [
                            binary,
                            f"--name={name}",
                            f"--data-dir={directory / name}",
                            f"--listen-client-urls={client_urls[i]}",
                            f"--advertise-client-urls={client_urls[i]}",
                            f"--listen-peer-urls={peer_urls[i]}",
                            f"--initial-advertise-peer-urls={peer_urls[i]}",
                            f"--initial-cluster={initial}",
                            "--initial-cluster-state=new",
                            f"--initial-cluster-token=test-{directory.name}",
                            f"--heartbeat-interval={HEARTBEAT_MS}",
                            f"--election-timeout={ELECTION_MS}",
                            "--logger=zap",
                            "--log-level=error",
                        ],
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        cluster.wait_for_leader(timeout=timeout)
        yield cluster
    finally:
        for index in range(len(cluster.processes)):
            cluster.kill(index)
