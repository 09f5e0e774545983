"""``sysdesign bench platform``: what the whole sysdesign stack costs per request.

The same small JSON endpoint is served three times by the same server (uvicorn,
one worker, uvloop, httptools) and loaded by wrk from another process:

- ``bare``, the anchor: a plain Starlette app with that one route;
- ``fastapi``: a plain FastAPI app with that one route, the framework every
  system is written in, with nothing of sysdesign;
- ``full``: ``sysdesign up``'s root app, with every middleware (request ids,
  metrics, one JSON access-log line per request) and logging configured as in
  production, the endpoint living in a mounted FastAPI app built like every
  system's.

The stated goal is that the full stack keeps at least 70% of bare Starlette's
requests per second; ``full / fastapi`` separates what sysdesign adds from
what FastAPI itself costs. Targets alternate round by round so that noise on
the machine hits all of them; the median of the rounds is reported.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from sysdesign.benchmarks import BenchmarkError
from sysdesign.benchmarks.cpus import CpuPlan, pinned, plan_cpus
from sysdesign.benchmarks.machine import machine_info, package_versions
from sysdesign.benchmarks.results import medians, utc_now, write_result
from sysdesign.benchmarks.server import RunningServer, rss_bytes, serve
from sysdesign.benchmarks.wrk import (
    WrkResult,
    find_wrk,
    run_wrk,
    wrk_command,
    wrk_seconds,
    wrk_version,
)

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.applications import Starlette

BENCH_SYSTEM = "bench"
PING_PATH = f"/{BENCH_SYSTEM}/v1/ping"
PING_BODY: dict[str, bool | str | int] = {"ok": True, "service": BENCH_SYSTEM, "n": 1}
GOAL_RATIO = 0.70
ROUNDS = 2
WARMUP_SECONDS = 1
WRK_THREADS = 1
VERSIONED = (
    "sysdesign",
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "structlog",
    "prometheus-client",
    "pydantic",
)


# --- the two servers under test (run in child processes by sysdesign.benchmarks.serve) ---


def bare_app() -> Starlette:
    """The anchor: Starlette with nothing but the endpoint."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def ping(request: Request) -> JSONResponse:
        return JSONResponse(PING_BODY)

    return Starlette(routes=[Route(PING_PATH, ping, methods=["GET"])])


def fastapi_app() -> FastAPI:
    """FastAPI with nothing but the endpoint: what the framework itself costs."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.get(PING_PATH)
    async def ping() -> dict[str, bool | str | int]:
        return dict(PING_BODY)

    return app


def full_stack_app() -> Starlette:
    """``sysdesign up``'s app with a ``bench`` system mounted as a real system would be.

    Settings come from the ``SYSDESIGN_*`` environment that ``run_platform_bench``
    gives the child process, as ``sysdesign up`` reads them.
    """
    from sysdesign.platform.app import create_app
    from sysdesign.platform.context import Platform
    from sysdesign.platform.observability import configure_logging
    from sysdesign.platform.service_app import create_service_app
    from sysdesign.settings import Settings

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)

    def bench_system(platform: Platform) -> FastAPI:
        app = create_service_app(platform, name=BENCH_SYSTEM, title="Bench")

        @app.get("/v1/ping")
        async def ping() -> dict[str, bool | str | int]:
            return dict(PING_BODY)

        return app

    return create_app(settings, extra_apps={BENCH_SYSTEM: bench_system})


# --- the run ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    key: str
    label: str
    factory: str


TARGETS = (
    Target("bare", "bare Starlette", f"{__name__}:bare_app"),
    Target("fastapi", "bare FastAPI", f"{__name__}:fastapi_app"),
    Target("full", "full sysdesign stack", f"{__name__}:full_stack_app"),
)
ANCHOR, FRAMEWORK, SUBJECT = TARGETS


def server_env(data_dir: Path) -> dict[str, str]:
    """The child's environment: production logging, embedded backends in ``data_dir``."""
    # The caller's own SYSDESIGN_* (a PostgreSQL URL, console logs) must not leak
    # into the benchmark, or two people would measure two different stacks.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYSDESIGN_")}
    data_dir.mkdir(parents=True, exist_ok=True)
    rules = data_dir / "bench-rules.yaml"
    rules.write_text(BENCH_RULES)
    env.update(
        SYSDESIGN_DATA_DIR=str(data_dir),
        SYSDESIGN_LOG_LEVEL="info",
        SYSDESIGN_LOG_FORMAT="json",
        SYSDESIGN_ACCESS_LOG="true",
        SYSDESIGN_RATELIMIT_RULES=str(rules),
    )
    return env


# The gateway decides every request (as the built-in per-address rule does), with a
# limit no benchmark reaches: the load comes from one address, and a 429 is not the
# answer being measured.
BENCH_RULES = """
rules:
  - name: bench-per-ip
    descriptors: [ip]
    algorithm: gcra
    limits: [1000000000/minute]
"""


def _check_answer(target: Target, status: int, body: bytes) -> None:
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        answer = body[:200]
    if status != 200 or answer != PING_BODY:
        raise BenchmarkError(
            f"{target.label} answered {PING_PATH} with {status} {answer!r}, "
            f"expected 200 {PING_BODY}"
        )


def _measure_all(
    servers: dict[str, RunningServer],
    wrk: str,
    seconds: int,
    connections: int,
    cpus: CpuPlan,
    console: Console,
) -> tuple[dict[str, list[WrkResult]], list[str], list[str]]:
    rounds: dict[str, list[WrkResult]] = {t.key: [] for t in TARGETS}
    failures: list[str] = []
    warnings: list[str] = []
    schedule = [(t, 0) for t in TARGETS] + [(t, n) for n in range(1, ROUNDS + 1) for t in TARGETS]
    total = sum(WARMUP_SECONDS if n == 0 else seconds for _, n in schedule)
    columns = (
        TextColumn("{task.description:<34}"),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("", total=total)
        done = 0.0
        for target, n in schedule:
            length = WARMUP_SECONDS if n == 0 else seconds
            phase = "warm-up" if n == 0 else f"round {n}/{ROUNDS}"
            name = f"{target.key} {phase}"
            bar.update(task, description=f"{target.label}: {phase}")
            command = wrk_command(
                wrk,
                servers[target.key].url(PING_PATH),
                duration=length,
                connections=connections,
                threads=WRK_THREADS,
            )

            def tick(elapsed: float, base: float = done, cap: float = length) -> None:
                bar.update(task, completed=base + min(elapsed, cap))

            result = run_wrk(pinned(command, cpus.load), expected_seconds=length, on_tick=tick)
            done += length
            bar.update(task, completed=done)
            if servers[target.key].process.poll() is not None:
                raise BenchmarkError(
                    f"{target.label} died during {name}:\n" + servers[target.key].log_tail()
                )
            found_failures, found_warnings = result.problems(name)
            failures += found_failures
            warnings += found_warnings
            if n:
                rounds[target.key].append(result)
                bar.console.print(
                    f"  {name:<14} {result.requests_per_second:>10,.0f} req/s   "
                    f"p50 {result.p50_ms:7.2f} ms   p99 {result.p99_ms:7.2f} ms"
                )
    return rounds, failures, warnings


def _report(result: dict[str, Any], path: Path, console: Console) -> None:
    p = result["parameters"]
    table = Table(
        title=f"platform: full stack vs bare Starlette, GET {PING_PATH}",
        caption=f"wrk -t{WRK_THREADS} -c{p['connections']} -d{p['duration_s']}s, "
        f"median of {p['rounds']} rounds; {p['cpu_pinning']['note']}",
    )
    for column in ("target", "req/s", "p50 ms", "p99 ms", "rounds req/s", "server RSS MiB"):
        first = column == "target"
        table.add_column(column, justify="left" if first else "right", no_wrap=first)
    for target in TARGETS:
        data = result["targets"][target.key]
        rss = data["server_rss_bytes"]
        table.add_row(
            target.label + (" (anchor)" if target is ANCHOR else ""),
            f"{data['median']['rps']:,.0f}",
            f"{data['median']['p50_ms']:.2f}",
            f"{data['median']['p99_ms']:.2f}",
            ", ".join(f"{r['requests_per_second']:,.0f}" for r in data["rounds"]),
            f"{rss / 2**20:.0f}" if rss else "-",
        )
    console.print(table)
    goal = result["goal"]
    verdict = "[green]met[/green]" if goal["met"] else "[red]not met[/red]"
    console.print(
        f"full / bare Starlette req/s: [bold]{result['ratio']:.3f}[/bold]  "
        f"(goal >= {goal['ratio_at_least']:.2f}: {verdict})"
    )
    console.print(
        f"full / bare FastAPI req/s: [bold]{result['ratio_vs_fastapi']:.3f}[/bold]  "
        f"(bare FastAPI / bare Starlette: {result['fastapi_vs_bare']:.3f})"
    )
    for warning in result["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    for failure in result["failures"]:
        console.print(f"[red]failed:[/red] {escape(failure)}")
    console.print(f"result: {path}")


def _run(duration: float, connections: int, out_dir: str, console: Console) -> dict[str, Any]:
    if duration <= 0 or connections < WRK_THREADS:
        raise BenchmarkError("duration must be > 0 and connections >= 1")
    wrk = find_wrk()
    seconds = wrk_seconds(duration)
    if seconds != duration:
        console.print(f"wrk measures whole seconds: {seconds} s per round")
    cpus = plan_cpus()
    moment = utc_now()
    console.print(f"CPU placement: {cpus.note}")
    with tempfile.TemporaryDirectory(prefix="sysdesign-bench-") as tmp, ExitStack() as stack:
        # Servers are stopped (the ExitStack) before the directory goes.
        env = server_env(Path(tmp) / "data")
        servers: dict[str, RunningServer] = {}
        with console.status("starting the servers"):
            for target in TARGETS:
                server = stack.enter_context(
                    serve(
                        target.factory,
                        log_path=Path(tmp) / f"{target.key}.log",
                        env=env,
                        cpu=cpus.server,
                    )
                )
                _check_answer(target, *server.wait_until_answering(PING_PATH))
                servers[target.key] = server
        rounds, failures, warnings = _measure_all(servers, wrk, seconds, connections, cpus, console)
        memory = {key: rss_bytes(server.pid) for key, server in servers.items()}

    by_target = {key: medians(results) for key, results in rounds.items()}
    if by_target[ANCHOR.key]["rps"] <= 0:
        raise BenchmarkError(f"{ANCHOR.label} answered no requests: nothing to compare with")
    ratio = by_target[SUBJECT.key]["rps"] / by_target[ANCHOR.key]["rps"]
    framework_rps = by_target[FRAMEWORK.key]["rps"] or float("nan")
    result: dict[str, Any] = {
        "benchmark": "platform",
        "description": "one JSON endpoint: the full sysdesign stack vs bare Starlette and FastAPI",
        "timestamp": moment.isoformat().replace("+00:00", "Z"),
        "machine": machine_info(),
        "versions": {**package_versions(VERSIONED), "wrk": wrk_version(wrk)},
        "parameters": {
            "duration_s": seconds,
            "connections": connections,
            "rounds": ROUNDS,
            "warmup_s": WARMUP_SECONDS,
            "wrk_threads": WRK_THREADS,
            "order": [t.key for t in TARGETS],
            "endpoint": PING_PATH,
            "response": PING_BODY,
            "server": {
                "name": "uvicorn",
                "workers": 1,
                "loop": "uvloop",
                "http": "httptools",
                "access_log": False,
                "log_config": None,
            },
            "cpu_pinning": cpus.as_dict(),
        },
        "backends": {
            "database": "sqlite+aiosqlite (embedded default, not queried)",
            "logging": "structlog JSON, info, access log on, stdout to /dev/null",
        },
        "anchor": ANCHOR.key,
        "targets": {
            t.key: {
                "label": t.label,
                "rounds": [r.as_dict() for r in rounds[t.key]],
                "median": by_target[t.key],
                "server_rss_bytes": memory[t.key],
            }
            for t in TARGETS
        },
        "ratio": round(ratio, 4),
        "ratio_vs_fastapi": round(by_target[SUBJECT.key]["rps"] / framework_rps, 4),
        "fastapi_vs_bare": round(framework_rps / by_target[ANCHOR.key]["rps"], 4),
        "goal": {"ratio_at_least": GOAL_RATIO, "met": not failures and ratio >= GOAL_RATIO},
        "valid": not failures,
        "failures": failures,
        "warnings": warnings,
    }
    path = write_result(out_dir, "platform", moment, result)
    _report(result, path, console)
    return result


def run_platform_bench(
    duration: float, connections: int, out_dir: str, console: Console
) -> dict[str, Any]:
    """Run the benchmark, print a table, write the JSON result and return it.

    Exits with status 2 (one line on stderr) when it cannot run, e.g. without
    wrk, and with status 1 after writing the result when a response failed.
    """
    try:
        result = _run(duration, connections, out_dir, console)
    except BenchmarkError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {escape(str(exc))}")
        raise SystemExit(2) from None
    if not result["valid"]:
        raise SystemExit(1)
    return result
