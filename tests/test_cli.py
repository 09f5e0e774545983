"""The ``sysdesign`` command as a person uses it, including a real server on a real port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from sysdesign.cli import app
from sysdesign.systems import SYSTEMS

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "SYSDESIGN_DATA_DIR": str(tmp_path / "data"),
        "SYSDESIGN_ARGON2_TIME_COST": "1",
        "SYSDESIGN_ARGON2_MEMORY_KIB": "8",
        "SYSDESIGN_ARGON2_PARALLELISM": "1",
        "COLUMNS": "250",
    }


def test_systems_lists_all_fifteen(env: dict[str, str]) -> None:
    result = runner.invoke(app, ["systems"], env=env)
    assert result.exit_code == 0, result.output
    for spec in SYSTEMS:
        assert spec.name in result.output
    assert "accounts" in result.output
    assert "not built yet" in result.output


def test_migrate_then_seed_is_idempotent(env: dict[str, str]) -> None:
    migrated = runner.invoke(app, ["migrate"], env=env)
    assert migrated.exit_code == 0, migrated.output
    assert "0003_outbox_topic" in migrated.output
    first = runner.invoke(app, ["seed", "accounts", "--size", "3"], env=env)
    assert first.exit_code == 0, first.output
    assert "3 new of 3" in first.output
    second = runner.invoke(app, ["seed", "accounts", "--size", "4"], env=env)
    assert "1 new of 4" in second.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["seed", "nosuch"], "unknown system 'nosuch'"),
        (["serve", "nosuch"], "unknown system 'nosuch'"),
        (["seed", "accounts", "--size", "0"], "size"),
    ],
)
def test_bad_arguments_are_clear_errors(env: dict[str, str], args: list[str], message: str) -> None:
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_unbuilt_system_cannot_be_served_or_seeded(env: dict[str, str]) -> None:
    unbuilt = [s for s in SYSTEMS if not s.built]
    if not unbuilt:
        pytest.skip("every system is built")
    for command in ("serve", "seed"):
        result = runner.invoke(app, [command, unbuilt[0].name], env=env)
        assert result.exit_code == 2
        assert "not built yet" in result.output


def test_unreachable_database_is_one_line(env: dict[str, str]) -> None:
    env = {**env, "SYSDESIGN_DATABASE_URL": "postgresql+asyncpg://x@127.0.0.1:1/none"}
    result = runner.invoke(app, ["migrate"], env=env)
    assert result.exit_code == 2
    assert "unreachable" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:1/0?socket_timeout=1", "sysdesign://127.0.0.1:1?socket_timeout=1"]
)
def test_serving_the_cache_with_its_cache_down_is_one_line(env: dict[str, str], url: str) -> None:
    result = runner.invoke(app, ["serve", "cache"], env={**env, "SYSDESIGN_CACHE_URL": url})
    assert result.exit_code == 2
    assert "cache" in result.output and "unreachable" in result.output
    assert "Traceback" not in result.output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(env: dict[str, str], tmp_path: Path) -> Iterator[tuple]:
    port = _free_port()
    log_path = tmp_path / "server.log"
    base = f"http://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "sysdesign", "up", "--port", str(port), "--demo", "2"],
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        procs.append(proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(log_path.read_text())
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError("server did not start:\n" + log_path.read_text())

    def stop() -> None:
        proc = procs[-1]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)

    start()
    yield base, start, stop
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_up_serves_accounts_end_to_end_and_survives_restart(server: tuple) -> None:
    base, start, stop = server
    with httpx.Client(base_url=base, timeout=10) as http:
        assert "sysdesign" in http.get("/").text
        created = http.post(
            "/accounts/v1/register", json={"email": "e2e@example.com", "password": "long secret"}
        )
        assert created.status_code == 201
        tokens = http.post(
            "/accounts/v1/login", json={"email": "e2e@example.com", "password": "long secret"}
        ).json()
        me = http.get(
            "/accounts/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
        )
        assert me.json()["email"] == "e2e@example.com"
        demo = http.post(
            "/accounts/v1/login", json={"email": "demo1@example.com", "password": "demo-password"}
        )
        assert demo.status_code == 200
        assert "x-request-id" in me.headers

    stop()
    start()
    with httpx.Client(base_url=base, timeout=10) as http:
        # Same account, same signing secret: the old access token still verifies.
        me = http.get(
            "/accounts/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
        )
        assert me.status_code == 200
        again = http.post("/accounts/v1/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert again.status_code == 200


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redlock://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3", "redlock:// is a library lock"),
        ("redis://127.0.0.1:1/0?socket_timeout=0.5", "unreachable"),
    ],
)
def test_serving_the_locks_with_a_bad_lock_store_is_one_line(
    env: dict[str, str], url: str, message: str
) -> None:
    result = runner.invoke(app, ["serve", "locks"], env={**env, "SYSDESIGN_LOCK_URL": url})
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
