"""Locks across processes, on every backend and on Redlock (three Redis
servers of the test's own): mutual exclusion among 50 holders in 4
processes, and a holder killed with SIGKILL whose lock frees after its TTL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sysdesign.blocks.lock import open_locks
from tests.blocks.lock.conftest import server_url
from tests.redis_server import PrivateRedis

PROCESS_BACKENDS = ("sqlite", "postgres", "redis", "etcd", "redlock")


@pytest.fixture(params=PROCESS_BACKENDS)
async def lock_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/locks.db"
    elif request.param == "redlock":
        servers = [PrivateRedis() for _ in range(3)]
        try:
            for server in servers:
                await server.start()
            # Redlock's default 0.1 s per server is short for 50 holders in 4
            # processes on a loaded 2-core machine: a slow answer is a lost vote.
            hosts = ",".join(f"127.0.0.1:{s.port}" for s in servers)
            yield f"redlock://{hosts}?socket_timeout=1"
        finally:
            for server in servers:
                await server.kill()
    else:
        async with server_url(request.param) as url:
            yield url


def worker(*args: str) -> list[str]:
    return [sys.executable, "-m", "tests.blocks.lock.worker", *args]


def test_fifty_holders_in_four_processes_lose_no_update(lock_url: str, tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    counter.write_text("0")
    processes = [
        subprocess.Popen(worker("count", lock_url, "shared-counter", str(counter), str(n)))
        for n in (13, 13, 12, 12)
    ]
    for process in processes:
        assert process.wait(120) == 0
    assert counter.read_text() == "50"


def hold_then_die(lock_url: str, name: str, ttl: float) -> int:
    """A process takes the lock and is killed with SIGKILL; its lease's token."""
    holder = subprocess.Popen(
        worker("hold", lock_url, name, str(ttl)),
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline()
        assert line.startswith("held "), line
        killed_token = int(line.split()[1])
        holder.send_signal(signal.SIGKILL)
        assert holder.wait(10) == -signal.SIGKILL
    finally:
        holder.kill()
        holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()
    return killed_token


async def test_a_killed_holder_s_lock_frees_after_its_ttl(lock_url: str) -> None:
    killed_token = hold_then_die(lock_url, "crashy", 1.0)
    locks = open_locks(lock_url)
    await locks.connect()
    try:
        assert await locks.try_acquire("crashy", ttl=5) is None  # still leased
        lease = await locks.acquire("crashy", ttl=5, wait=10)
        assert lease.token > killed_token
        await locks.release(lease)
    finally:
        await locks.close()
