"""``sysdesign bench locks``: acquire+release latency and contended throughput per
lock backend, beside redis-py's ``Lock`` and etcd's lock API in the same run.

Per backend (memory and sqlite always; PostgreSQL, Redis and etcd when their
URLs are given; Redlock over three redis-server processes started here):

- **Uncontended**: one task, ``pairs`` acquire+release pairs back to back on
  one name: pairs/s, and p50/p99 of one pair.
- **Contended**: ``tasks`` tasks in this process, each looping acquire
  (waiting as long as it takes) and release on one name, until ``grants``
  grants in all: grants/s, p50/p99 of the wait from calling acquire to the
  grant, the largest share of the grants one task got (1/tasks is fair), and
  how many times two holders overlapped (must be 0). A holder yields to the
  event loop once before releasing, so an overlap could show.

Anchors, measured the same ways in the same run: redis-py's
``redis.asyncio.lock.Lock`` on the same Redis, and etcd's lock service
(lease grant, lock, unlock, lease revoke) on the same etcd; the ratio is
ours ÷ anchor of pairs/s and of grants/s. Each run starts on a fresh lock
name, after a warm-up that opens the connections. Rounds alternate whether
ours or the anchor goes first; medians over rounds are reported. Everything
a run leaves on a shared server is deleted afterwards.

Read redis-py's contended figure with its ``largest_task_share``: its lock
is not a queue, and a holder that releases and asks again at once takes it
back before the other tasks' next attempt (every 0.1 s), so one task gets
most grants and the run lasts until the others' polls catch the gaps: its
grants/s depends on ``grants`` and on the poll interval more than on Redis.

A backend whose module is not there, whose URL is not given, or whose server
does not answer is reported as skipped with the reason; one that fails while
measured is reported as failed with the error, and the others still run.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rich.console import Console
from rich.table import Table

from sysdesign.benchmarks import BenchmarkError
from sysdesign.benchmarks.machine import machine_info, package_versions
from sysdesign.benchmarks.results import utc_now, write_result
from sysdesign.blocks.lock.anchors import (
    REDIS_PY_SLEEP,
    TTL_SECONDS,
    cleanup_etcd,
    cleanup_postgres,
    cleanup_redis,
    etcd_lock_api,
    ours,
    redis_py_lock,
    redis_servers,
    redlock_module_missing,
    server_versions,
    with_option,
)
from sysdesign.blocks.lock.benchloops import Opener, Side, probe

TASKS = 16
MIN_PAIRS = 10
SERVER_BACKENDS = ("postgres", "redis", "redlock", "etcd")


@dataclass
class Backend:
    name: str
    url: str
    pairs: int
    grants: int
    anchor_name: str | None = None
    anchor: Opener | None = None
    cleanup: Callable[[], Awaitable[None]] | None = None
    sides: dict[str, Side] = field(default_factory=dict)


async def _measure(
    backend: Backend, prefix: str, rounds: int, tasks: int, console: Console
) -> dict[str, Any]:
    entry: dict[str, Any] = {"url": _where(backend.url), "pairs": backend.pairs}
    entry["grants"] = backend.grants
    problem = await probe(lambda n: ours(backend.url, n), f"{prefix}-probe")
    if problem is not None:
        return {**entry, "skipped": f"our lock store did not answer: {problem}"}
    backend.sides["ours"] = Side(lambda n: ours(backend.url, n))
    if backend.anchor is not None:
        problem = await probe(backend.anchor, f"{prefix}-anchor-probe")
        if problem is None:
            backend.sides["anchor"] = Side(backend.anchor)
        else:
            entry["anchor_skipped"] = problem
    for r in range(rounds):
        console.print(f"  {backend.name}: round {r + 1}/{rounds}")
        order = list(backend.sides) if r % 2 == 0 else list(backend.sides)[::-1]
        for side in order:
            name = f"{prefix}-{backend.name}-{side}-{r}"
            await backend.sides[side].run(name, backend.pairs, backend.grants, tasks)
    entry["ours"] = backend.sides["ours"].summary()
    if "anchor" in backend.sides:
        anchor = backend.sides["anchor"].summary()
        entry["anchor"] = {"name": backend.anchor_name, **anchor}
        entry["ratio"] = {
            "uncontended_pairs_per_s": _ratio(entry["ours"], anchor, "uncontended", "pairs_per_s"),
            "contended_grants_per_s": _ratio(entry["ours"], anchor, "contended", "grants_per_s"),
        }
    return entry


def _ratio(mine: dict[str, Any], other: dict[str, Any], mode: str, rate: str) -> float | None:
    return round(mine[mode][rate] / other[mode][rate], 3) if other[mode][rate] else None


def _where(url: str) -> str:
    """The backend a URL names, without credentials or options."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


# --- the run --------------------------------------------------------------------------


def _plan(
    urls: dict[str, str | None], sqlite_dir: Path, prefix: str, sizes: dict[str, int]
) -> tuple[list[Backend], dict[str, str]]:
    """The backends to measure, and the reason each other one is skipped."""
    local, server = (
        (sizes["pairs"], sizes["grants"]),
        (sizes["server_pairs"], sizes["server_grants"]),
    )
    plans = [
        Backend("memory", "memory://", *local),
        Backend("sqlite", f"sqlite:///{sqlite_dir}/{prefix}.db", *local),
    ]
    skipped: dict[str, str] = {}
    for name in ("postgres", "redis", "etcd"):
        url = urls.get(name)
        if importlib.util.find_spec(f"sysdesign.blocks.lock.{name}") is None:
            skipped[name] = f"sysdesign.blocks.lock.{name} is not there yet"
        elif not url:
            skipped[name] = f"no URL (--{name} or SYSDESIGN_TEST_{name.upper()}_URL)"
        elif name == "postgres":
            plans.append(
                Backend(name, url, *server, cleanup=lambda u=url: cleanup_postgres(u, prefix))
            )
        elif name == "redis":
            plans.append(
                Backend(
                    name,
                    with_option(url, "prefix", prefix),
                    *server,
                    anchor_name="redis-py Lock",
                    anchor=lambda n, u=url: redis_py_lock(u, f"{prefix}:redispy:{n}"),
                    cleanup=lambda u=url: cleanup_redis(u, prefix),
                )
            )
        else:
            plans.append(
                Backend(
                    name,
                    with_option(url, "prefix", f"/{prefix}/ours/"),
                    *server,
                    anchor_name="etcd lock API",
                    anchor=lambda n, u=url: etcd_lock_api(u, f"/{prefix}/etcdlock/{n}"),
                    cleanup=lambda u=url: cleanup_etcd(u, f"/{prefix}/"),
                )
            )
    reason = redlock_module_missing()
    if reason is None:
        plans.append(Backend("redlock", "redlock://", *server))  # hosts filled once started
    else:
        skipped["redlock"] = reason
    return plans, skipped


@contextlib.asynccontextmanager
async def _redlock_servers(plans: list[Backend]) -> AsyncIterator[None]:
    redlock = next((p for p in plans if p.name == "redlock"), None)
    if redlock is None:
        yield
        return
    with redis_servers(3) as ports:
        redlock.url = "redlock://" + ",".join(f"127.0.0.1:{port}" for port in ports)
        yield


def _runner() -> tuple[asyncio.Runner, str]:
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner(), "asyncio"
    # The loop the platform's server runs on: every side shares it.
    return asyncio.Runner(loop_factory=uvloop.new_event_loop), f"uvloop {uvloop.__version__}"


def run_locks_bench(
    *,
    sqlite_dir: Path,
    postgres_url: str | None,
    redis_url: str | None,
    etcd_url: str | None,
    pairs: int,
    grants: int,
    server_pairs: int,
    server_grants: int,
    tasks: int = TASKS,
    rounds: int,
    out_dir: str,
    console: Console,
) -> dict[str, Any]:
    """Measure, print a table, write ``locks-<time>.json`` under ``out_dir``.
    ``pairs``/``grants`` size the memory and sqlite runs, ``server_pairs``/
    ``server_grants`` the runs on servers and the anchors."""
    sizes = {"pairs": pairs, "grants": grants}
    sizes |= {"server_pairs": server_pairs, "server_grants": server_grants}
    if min(pairs, server_pairs) < MIN_PAIRS or tasks < 2 or rounds < 1:
        raise BenchmarkError(
            f"pairs must be at least {MIN_PAIRS}, tasks at least 2 and rounds at least 1"
        )
    if min(grants, server_grants) < tasks:
        raise BenchmarkError("grants must be at least the number of tasks: each task takes one")
    urls = {"postgres": postgres_url, "redis": redis_url, "etcd": etcd_url}
    prefix = f"lockbench{uuid.uuid4().hex[:8]}"
    plans, skipped = _plan(urls, sqlite_dir, prefix, sizes)
    moment = utc_now()

    async def run() -> tuple[dict[str, Any], dict[str, str | None]]:
        backends: dict[str, Any] = {}
        async with _redlock_servers(plans):
            for plan in plans:
                try:
                    backends[plan.name] = await _measure(plan, prefix, rounds, tasks, console)
                except Exception as exc:
                    reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
                    console.print(f"[red]{plan.name} failed: {reason}[/red]")
                    backends[plan.name] = {"url": _where(plan.url), "failed": reason}
                finally:
                    if plan.cleanup is not None:
                        with contextlib.suppress(Exception):
                            await plan.cleanup()
        return backends, await server_versions(urls)

    runner, loop_name = _runner()
    with runner:
        backends, servers = runner.run(run())
    for path in sqlite_dir.glob(f"{prefix}.db*"):
        path.unlink()
    for name, reason in skipped.items():
        backends[name] = {"skipped": reason}
    result: dict[str, Any] = {
        "benchmark": "locks",
        "description": "uncontended acquire+release latency and contended grants/s per lock"
        " backend, beside redis-py's Lock and etcd's lock API on the same servers",
        "timestamp": moment.isoformat().replace("+00:00", "Z"),
        "machine": machine_info(),
        "versions": {
            **package_versions(["redis", "hiredis", "asyncpg", "aiosqlite", "httpx", "uvloop"]),
            "servers": servers,
        },
        "parameters": {
            **sizes,
            "tasks": tasks,
            "rounds": rounds,
            "ttl_seconds": TTL_SECONDS,
            "event_loop": loop_name,
            "uncontended": "one task, acquire then release on one name, back to back",
            "contended": f"{tasks} tasks loop acquire (waiting), yield once, release on one name",
            "redis_py_lock": f"redis.asyncio.lock.Lock, blocking, sleep={REDIS_PY_SLEEP} s"
            " (its default), one Lock object per acquisition",
            "etcd_lock_api": "v3 gateway: lease grant, /v3/lock/lock, /v3/lock/unlock,"
            " lease revoke per acquisition",
            "redlock": "three redis-server processes on loopback, started for the run",
        },
        "backends": {name: backends[name] for name in _order(backends)},
    }
    path = write_result(out_dir, "locks", moment, result)
    _report(result, path, console)
    return result


def _order(names: Iterable[str]) -> list[str]:
    known = ["memory", "sqlite", *SERVER_BACKENDS]
    return sorted(names, key=lambda n: known.index(n) if n in known else len(known))


def _row(label: str, measured: dict[str, Any], ratio: str) -> list[str]:
    u, c = measured["uncontended"], measured["contended"]
    return [
        label,
        f"{u['pairs_per_s']:,}",
        f"{u['p50_us'] / 1000:.2f} ms",
        f"{u['p99_us'] / 1000:.2f} ms",
        f"{c['grants_per_s']:,}",
        f"{c['wait_p99_us'] / 1000:.2f} ms",
        f"{c['largest_task_share']:.2f}",
        ratio,
    ]


def _report(result: dict[str, Any], path: Path, console: Console) -> None:
    tasks = result["parameters"]["tasks"]
    table = Table("backend", "pairs/s", "p50", "p99", "grants/s", "wait p99", "top share")
    table.add_column("÷ anchor")
    table.title = (
        f"locks: uncontended acquire+release (pairs/s, p50, p99 of a pair); contended by"
        f" {tasks} tasks (grants/s, p99 wait, largest share of grants); ours ÷ anchor"
    )
    notes: list[str] = []
    for name, entry in result["backends"].items():
        if "skipped" in entry:
            notes.append(f"[yellow]skipped[/yellow] {name}: {entry['skipped']}")
            continue
        if "failed" in entry:
            notes.append(f"[red]failed[/red] {name}: {entry['failed']}")
            continue
        ratio = entry.get("ratio")
        text = (
            f"{ratio['uncontended_pairs_per_s']:.2f} / {ratio['contended_grants_per_s']:.2f}"
            if ratio
            else "-"
        )
        table.add_row(*_row(name, entry["ours"], text))
        if "anchor" in entry:
            table.add_row(*_row(f"  {entry['anchor']['name']}", entry["anchor"], "anchor"))
        if "anchor_skipped" in entry:
            notes.append(f"[yellow]skipped[/yellow] {name}'s anchor: {entry['anchor_skipped']}")
        overlaps = [s["contended"]["overlaps"] for s in (entry["ours"], entry.get("anchor")) if s]
        if any(overlaps):
            notes.append(f"[red]{name}: two holders overlapped {max(overlaps)} times[/red]")
    console.print(table)
    for note in notes:
        console.print(note)
    console.print(f"result: {path}")
