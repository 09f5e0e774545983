"""The processes of ``sysdesign bench shortener`` and the calls made to them.

- ``shortener_app``: the server under test, run by ``sysdesign.benchmarks.serve``
  in its own process: ``sysdesign up``'s root app with the accounts service
  (creation needs a signed-in owner) and the shortener, plus a probe that
  reads the cache's counters.
- ``serve_nginx``: the anchor, nginx with one worker, in its own process.
- seeding (``sysdesign seed shortener`` in a child process), reading back
  the seeded codes, the warm-up pass, signing in, and counting the visit
  events the queue holds afterwards.
"""

from __future__ import annotations

import asyncio
import grp
import http.client
import os
import pwd
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from sysdesign.benchmarks import BenchmarkError
from sysdesign.benchmarks.cpus import pinned
from sysdesign.benchmarks.server import LOOPBACK, RunningServer, free_port, stop
from sysdesign.platform.bench import server_env
from sysdesign.systems.shortener.bench_parts import REDIRECT_PREFIX, nginx_config
from sysdesign.systems.shortener.service import VISITS_TOPIC

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.applications import Starlette

    from sysdesign.platform.context import Platform

SERVED = ("accounts", "shortener")
PROBE = "benchprobe"
CACHE_PROBE_PATH = f"/{PROBE}/v1/cache"
WARM_CONNECTIONS = 8
NGINX_INSTALL_HINT = "nginx is not installed (or not on PATH): apt-get install nginx-light"


# --- the server under test (in a child process) -------------------------------------------


def probe_app(platform: Platform) -> FastAPI:
    """``GET /v1/cache``: the cache's hits, misses, evictions and keys, so a run
    can state its hit ratio. Mounted beside the systems; ``/s/{code}`` never
    reaches it."""
    from fastapi import FastAPI

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/v1/cache")
    async def cache_stats() -> dict[str, Any]:
        return {"backend": platform.cache.name, **asdict(await platform.cache.stats())}

    return app


def shortener_app() -> Starlette:
    """The root app as ``sysdesign up`` builds it, with the accounts service and
    the shortener mounted, and the probe; settings from the ``SYSDESIGN_*``
    environment the benchmark gives the child."""
    from sysdesign.platform.app import create_app
    from sysdesign.platform.observability import configure_logging
    from sysdesign.settings import Settings

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings, only=list(SERVED), extra_apps={PROBE: probe_app})


def bench_env(data_dir: Path, *, relay: bool, cache_url: str | None = None) -> dict[str, str]:
    """The child's environment: the platform benchmark's (embedded backends in
    ``data_dir``, none of the caller's ``SYSDESIGN_*``), without the rate-limit
    gateway, the access log and the shortener's creation limits, which would
    otherwise answer or shape the load being measured. A web-only process: the
    analytics consumer would share the server's CPU and write to the database
    while the redirects are counted, so visit events wait in the queue, as
    they do for a consumer deployed apart."""
    env = server_env(data_dir)
    env.update(
        SYSDESIGN_ACCESS_LOG="false",
        SYSDESIGN_RATELIMIT_ENABLED="false",
        SYSDESIGN_OUTBOX_RELAY="true" if relay else "false",
        SYSDESIGN_SHORTENER_ANALYTICS="0",
        SYSDESIGN_SHORTENER_CREATE_LIMIT_USER="off",
        SYSDESIGN_SHORTENER_CREATE_LIMIT_IP="off",
    )
    if cache_url is not None:
        env["SYSDESIGN_CACHE_URL"] = cache_url
    return env


# --- seed data ----------------------------------------------------------------------------


def seed_links(env: Mapping[str, str], links: int) -> None:
    """``sysdesign seed shortener --size links`` in a child process with ``env``;
    its progress bar goes to this terminal."""
    command = [sys.executable, "-m", "sysdesign", "seed", "shortener", "--size", str(links)]
    completed = subprocess.run(
        command, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
    )
    if completed.returncode != 0:
        raise BenchmarkError(
            f"seeding failed with status {completed.returncode}: {completed.stdout.strip()}"
        )


def seeded_codes(database_url: str) -> list[str]:
    """Every link's code on the database at ``database_url``, in creation order."""
    from sqlalchemy import select

    from sysdesign.platform.db import Database
    from sysdesign.systems.shortener.store import links_table

    async def read() -> list[str]:
        database = Database(database_url)
        try:
            async with database.read() as conn:
                query = select(links_table.c.code).order_by(links_table.c.id)
                return list((await conn.execute(query)).scalars())
        finally:
            await database.dispose()

    return asyncio.run(read())


def queued_messages(queue_url: str, topic: str = VISITS_TOPIC) -> int:
    """How many messages the queue at ``queue_url`` holds on ``topic``."""
    from sysdesign.blocks.queue import open_queue

    async def count() -> int:
        queue = open_queue(queue_url)
        await queue.connect()
        try:
            return sum(t.messages for t in await queue.topics() if t.name == topic)
        finally:
            await queue.close()

    return asyncio.run(count())


# --- calls to the server --------------------------------------------------------------------


def warm(server: RunningServer, codes: Sequence[str]) -> Counter[int]:
    """Ask once for each of ``codes`` (over a few kept-alive connections) so that
    the cache holds them; returns how many answers had each status."""

    def ask(chunk: Sequence[str]) -> Counter[int]:
        statuses: Counter[int] = Counter()
        connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
        try:
            for code in chunk:
                connection.request("GET", REDIRECT_PREFIX + code)
                response = connection.getresponse()
                response.read()
                statuses[response.status] += 1
        finally:
            connection.close()
        return statuses

    chunks = [codes[i::WARM_CONNECTIONS] for i in range(WARM_CONNECTIONS)]
    total: Counter[int] = Counter()
    with ThreadPoolExecutor(WARM_CONNECTIONS) as pool:
        for statuses in pool.map(ask, chunks):
            total.update(statuses)
    return total


def login(server: RunningServer, email: str, password: str) -> str:
    """An access token from ``POST /accounts/v1/login``."""
    connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        body = orjson.dumps({"email": email, "password": password})
        headers = {"Content-Type": "application/json"}
        connection.request("POST", "/accounts/v1/login", body=body, headers=headers)
        response = connection.getresponse()
        answer = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise BenchmarkError(f"login as {email} answered {response.status}: {answer[:200]!r}")
    return str(orjson.loads(answer)["access_token"])


def scrape(server: RunningServer) -> str:
    status, body = server.get("/metrics")
    if status != 200:
        raise BenchmarkError(f"/metrics answered {status}")
    return body.decode()


def cache_stats(server: RunningServer) -> dict[str, Any]:
    status, body = server.get(CACHE_PROBE_PATH)
    if status != 200:
        raise BenchmarkError(f"{CACHE_PROBE_PATH} answered {status}")
    return dict(orjson.loads(body))


# --- the nginx anchor -----------------------------------------------------------------------


def find_nginx() -> str:
    # Debian installs it in /usr/sbin, which is not on every user's PATH.
    path = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if path is None:
        raise BenchmarkError(NGINX_INSTALL_HINT)
    return path


def nginx_version(nginx: str) -> str:
    """``"nginx/1.22.1"``: what ``nginx -v`` prints (on stderr)."""
    completed = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=10)
    text = (completed.stderr or completed.stdout).strip()
    return text.removeprefix("nginx version:").strip()


def _same_user() -> str | None:
    """``"name group"`` of this process when it is root (nginx would otherwise
    run its worker as ``nobody``); ``None`` otherwise, nginx staying this user."""
    if os.geteuid() != 0:
        return None
    return f"{pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name}"


@contextmanager
def serve_nginx(nginx: str, directory: Path, cpu: int | None) -> Iterator[RunningServer]:
    """nginx on a free loopback port with ``nginx_config``, everything it writes
    in ``directory``; pinned to ``cpu`` (its worker inherits the master's CPU).
    Always stopped on exit."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = directory / "nginx.conf"
    config.write_text(nginx_config(directory, port, _same_user()))
    log_path = directory / "nginx-stderr.log"
    command = [nginx, "-p", str(directory), "-c", str(config), "-e", str(directory / "error.log")]
    with log_path.open("wb") as stderr:
        process = subprocess.Popen(
            pinned(command, cpu), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
        )
    try:
        yield RunningServer(process, LOOPBACK, port, log_path)
    finally:
        stop(process)
