"""``sysdesign bench shortener``: redirects per second beside nginx, and link creation.

1. **Seed.** ``sysdesign seed shortener --size N`` (1,000,000 by default) into a
   fresh data directory on the embedded defaults: SQLite, the memory cache,
   the SQLite queue.
2. **Access pattern.** 100,000 codes drawn by Zipf(1.1) rank over the N links
   (ranks given to the codes in a shuffled order) make a wrk script that asks
   for ``GET /s/<code>`` in that order, round and round.
3. **Redirects.** The server under test is ``sysdesign up``'s root app with the
   accounts service and the shortener (``bench_targets.shortener_app``): one
   uvicorn process, uvloop and httptools, no access log, the rate-limit
   gateway off, the outbox relay off (redirects never write to the outbox;
   its idle polls would be counted as statements), and no analytics
   consumer in the process (a web-only process: the visit events wait in
   the queue for a consumer deployed apart). The anchor is nginx with
   one worker answering every ``/s/`` path with a fixed 301, pinned to the
   same CPU: one nginx worker against one uvicorn process. Every code the
   script asks for is requested once first (the cache then holds the hot
   set), then each target gets a warm-up and the rounds, alternating which
   goes first; medians are reported. Every redirect publishes its visit
   event to the queue, as in production: that is part of the path measured.
4. **Counted, not assumed.** ``/metrics`` is read before and after each
   measured round of ours: ``db_statements_total`` gives the SQL statements
   per redirect (the goal is none: a cached link makes no query), the
   redirect route's answers give the non-3xx count, and a probe gives the
   cache's hits and misses.
5. **Creation.** The server restarts with the outbox relay on and wrk posts
   ``POST /shortener/v1/links`` with the demo owner's bearer token, a new
   target each time: links/s, each one a database transaction (with its
   outbox event) plus the relay publishing the event.

Goals: ours / nginx redirects/s >= 0.25, p99 < 10 ms, no non-3xx answer, no
SQL statement per redirect with a warm cache. wrk holds ``--connections``
requests in flight at all times, so by Little's law latency is about
connections / throughput: p99 is stated at that concurrency.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from sysdesign.benchmarks import BenchmarkError
from sysdesign.benchmarks.cpus import plan_cpus
from sysdesign.benchmarks.machine import machine_info, package_versions
from sysdesign.benchmarks.results import medians, utc_now, write_result
from sysdesign.benchmarks.server import RunningServer, rss_bytes, serve
from sysdesign.benchmarks.wrk import find_wrk, wrk_seconds, wrk_version
from sysdesign.platform.accounts.seed import DEMO_PASSWORD, demo_email
from sysdesign.settings import EMBEDDED_DEFAULTS
from sysdesign.systems.shortener import bench_parts as parts
from sysdesign.systems.shortener import bench_targets as targets
from sysdesign.systems.shortener.bench_report import report
from sysdesign.systems.shortener.bench_rounds import Probe, Rounds

GOAL_RATIO = 0.25
GOAL_P99_MS = 10.0
WARMUP_SECONDS = 2
CACHE_TTL_FLOOR_S = 270  # the service caches a link 300 s, less 10 % jitter
VERSIONED = ("sysdesign", "fastapi", "starlette", "uvicorn", "uvloop", "httptools",
             "sqlalchemy", "aiosqlite", "orjson", "prometheus-client")  # fmt: skip


def _per(count: float, of: float, digits: int) -> float | None:
    return round(count / of, digits) if of else None


def _fail_unless_redirects(where: str, statuses: dict[int, int]) -> list[str]:
    bad = {s: n for s, n in statuses.items() if not 300 <= s < 400}
    return [f"{where}: non-3xx answers {bad}"] if bad else []


def _redirects(
    tmp: Path, env: dict[str, str], sequence: list[str], plan: dict[str, Any], console: Console
) -> dict[str, Any]:
    """Phase 3 and 4: ours and nginx under the Zipf script; returns the figures."""
    codes_file = tmp / "codes.txt"
    codes_file.write_text("\n".join(sequence) + "\n")
    script = tmp / "redirect.lua"
    script.write_text(parts.redirect_script(codes_file))
    hot = parts.hot_set(sequence)
    cpus, failures = plan["cpus"], plan["failures"]
    factory = f"{targets.__name__}:shortener_app"
    with (
        serve(factory, log_path=tmp / "ours.log", env=env, cpu=cpus.server) as ours,
        targets.serve_nginx(plan["nginx"], tmp / "nginx", cpus.server) as nginx,
    ):
        ours.wait_until_answering("/healthz")
        status, _ = nginx.wait_until_answering(parts.REDIRECT_PREFIX + hot[0])
        if status != 301:
            raise BenchmarkError(f"nginx answered {status}, expected 301:\n{nginx.log_tail()}")
        with console.status(f"asking once for each of the {len(hot):,} hot codes"):
            started = time.monotonic()
            failures += _fail_unless_redirects("warm-up pass", targets.warm(ours, hot))
            warm_seconds = time.monotonic() - started
        warmed = targets.cache_stats(ours)
        servers: dict[str, RunningServer] = {"ours": ours, "nginx": nginx}
        runner = Rounds(plan["wrk"], cpus, plan["seconds"], plan["connections"], console)
        results = runner.run(
            servers, script, plan["rounds"], WARMUP_SECONDS, probes={"ours": _probe_ours(ours)}
        )
        answered = parts.answered(targets.scrape(ours), parts.REDIRECT_PREFIX, "3")
        memory = {key: rss_bytes(server.pid) for key, server in servers.items()}
    failures += runner.failures
    plan["warnings"] += runner.warnings
    deltas = runner.deltas["ours"]
    loads = deltas["cache_misses"]
    lookups = deltas["cache_hits"] + loads
    return {
        "hot_set": {"codes": len(hot), "warm_seconds": round(warm_seconds, 2)},
        "cache_after_warm": warmed,
        "targets": {
            key: {
                "rounds": [r.as_dict() for r in runner.results[key]],
                "median": medians(runner.results[key]),
                "server_rss_bytes": memory[key],
            }
            for key in servers
        },
        "measured_rounds_of_ours": {
            "redirects_answered": int(deltas["redirects"]),
            "non_3xx_answered": int(deltas["non_3xx"]),
            "sql_statements": int(deltas["statements"]),
            "sql_statements_per_redirect": _per(deltas["statements"], deltas["redirects"], 6),
            "cache_hits": int(deltas["cache_hits"]),
            "cache_misses": int(loads),
            "cache_hit_ratio": _per(deltas["cache_hits"], lookups, 6),
            "cache_evictions": int(deltas["cache_evictions"]),
        },
        "redirects_answered_in_all": int(answered),
        "wrk_bad_status": {k: sum(r.bad_status_responses for r in v) for k, v in results.items()},
    }


def _probe_ours(server: RunningServer) -> Probe:
    """What is read from ours before and after each of its rounds."""

    def probe() -> dict[str, float]:
        text = targets.scrape(server)
        cache = targets.cache_stats(server)
        return {
            "statements": parts.statements(text),
            "redirects": parts.answered(text, parts.REDIRECT_PREFIX, "3"),
            "non_3xx": parts.answered(text, parts.REDIRECT_PREFIX, "")
            - parts.answered(text, parts.REDIRECT_PREFIX, "3"),
            "cache_hits": cache["hits"],
            "cache_misses": cache["misses"],
            "cache_evictions": cache["evictions"],
        }

    return probe


def _creation(tmp: Path, data: Path, plan: dict[str, Any], console: Console) -> dict[str, Any]:
    """Phase 5: the server with the relay on, wrk posting new links."""
    env = targets.bench_env(data, relay=True)
    cpus = plan["cpus"]
    factory = f"{targets.__name__}:shortener_app"
    with serve(factory, log_path=tmp / "creator.log", env=env, cpu=cpus.server) as server:
        server.wait_until_answering("/healthz")
        token = targets.login(server, demo_email(1), DEMO_PASSWORD)
        script = tmp / "create.lua"
        script.write_text(parts.create_script(token))

        def probe() -> dict[str, float]:
            text = targets.scrape(server)
            return {
                "statements": parts.statements(text),
                "created": parts.answered(text, parts.LINKS_PATH, "201", exact=True),
            }

        runner = Rounds(plan["wrk"], cpus, plan["seconds"], plan["create_connections"], console)
        runner.run({"create": server}, script, plan["rounds"], 1, probes={"create": probe})
        memory = rss_bytes(server.pid)
    plan["failures"] += runner.failures
    plan["warnings"] += runner.warnings
    deltas = runner.deltas["create"]
    return {
        "rounds": [r.as_dict() for r in runner.results["create"]],
        "median": medians(runner.results["create"]),
        "links_created_in_rounds": int(deltas["created"]),
        "sql_statements_per_link": _per(deltas["statements"], deltas["created"], 3),
        "server_rss_bytes": memory,
    }


def _run(options: dict[str, Any], console: Console) -> dict[str, Any]:
    links, rounds = options["links"], options["rounds"]
    if links < 1 or rounds < 1 or options["duration"] <= 0:
        raise BenchmarkError("links and rounds must be at least 1 and the duration > 0")
    wrk, nginx = find_wrk(), targets.find_nginx()
    seconds = wrk_seconds(options["duration"])
    cpus = plan_cpus()
    moment = utc_now()
    console.print(f"CPU placement: {cpus.note}")
    plan: dict[str, Any] = {"wrk": wrk, "nginx": nginx, "cpus": cpus, "seconds": seconds,
                            "rounds": rounds, "connections": options["connections"],
                            "create_connections": options["create_connections"],
                            "failures": [], "warnings": []}  # fmt: skip
    measured = 2 * (WARMUP_SECONDS + seconds * rounds)
    if measured > CACHE_TTL_FLOOR_S:
        plan["warnings"].append(
            f"the redirect rounds last about {measured} s, longer than a cached link's "
            f"{CACHE_TTL_FLOOR_S} s at least: some links are loaded again while measured"
        )
    with tempfile.TemporaryDirectory(prefix="sysdesign-bench-shortener-") as name:
        tmp = Path(name)
        data = (tmp / "data").resolve()
        env = targets.bench_env(data, relay=False)
        console.print(f"seeding {links:,} links (sysdesign seed shortener)")
        started = time.monotonic()
        targets.seed_links(env, links)
        seed_seconds = time.monotonic() - started
        with console.status(f"drawing {parts.SAMPLES:,} codes by Zipf rank"):
            codes = targets.seeded_codes(EMBEDDED_DEFAULTS["database_url"].format(data=data))
            if len(codes) != links:
                raise BenchmarkError(f"seeded {len(codes):,} links, expected {links:,}")
            sequence = parts.zipf_codes(codes, parts.SAMPLES)
            del codes
        redirects = _redirects(tmp, env, sequence, plan, console)
        creation = _creation(tmp, data, plan, console)
        queue_url = EMBEDDED_DEFAULTS["queue_url"].format(data=data)
        visit_events = targets.queued_messages(queue_url)

    ours = redirects["targets"]["ours"]["median"]
    anchor = redirects["targets"]["nginx"]["median"]
    if anchor["rps"] <= 0:
        raise BenchmarkError("nginx answered no requests: nothing to compare with")
    ratio = ours["rps"] / anchor["rps"]
    counted = redirects["measured_rounds_of_ours"]
    failures = plan["failures"]
    goals = {
        "ratio_at_least": GOAL_RATIO,
        "ratio_met": ratio >= GOAL_RATIO,
        "p99_below_ms": GOAL_P99_MS,
        "p99_met": ours["p99_ms"] < GOAL_P99_MS,
        "non_3xx_met": counted["non_3xx_answered"] == 0 and not failures,
        "no_sql_per_redirect_met": counted["sql_statements"] == 0,
    }
    result: dict[str, Any] = {
        "benchmark": "shortener",
        "description": "GET /s/{code} redirects/s under Zipf(1.1) over seeded links, beside "
        "nginx answering a fixed 301; SQL statements per redirect; POST /v1/links links/s",
        "timestamp": moment.isoformat().replace("+00:00", "Z"),
        "machine": machine_info(),
        "versions": {
            **package_versions(VERSIONED),
            "wrk": wrk_version(wrk),
            "nginx": targets.nginx_version(nginx),
        },
        "parameters": {
            "links": links,
            "zipf_exponent": parts.ZIPF_EXPONENT,
            "zipf_samples": parts.SAMPLES,
            "top_100_share": round(parts.top_share(sequence, 100), 4),
            "duration_s": seconds,
            "rounds": rounds,
            "warmup_s": WARMUP_SECONDS,
            "connections": options["connections"],
            "create_connections": options["create_connections"],
            "wrk_threads": 1,
            "cpu_pinning": cpus.as_dict(),
            "server": {
                "app": "sysdesign up's root app with accounts and shortener mounted, "
                "and a probe reading the cache's counters",
                "process": "uvicorn, one worker, uvloop, httptools",
                "access_log": False,
                "ratelimit_gateway": False,
                "creation_limits": "off",
                "outbox_relay": {"redirects": False, "creation": True},
                "analytics_consumer": "off: a web-only process, visit events left queued",
            },
            "anchor": {
                "name": "nginx",
                "config": "one worker, access_log off, keepalive_requests 1000000, "
                f"location /s/ {{ return 301 {parts.ANCHOR_LOCATION}; }}",
                "fairness": "one nginx worker against one uvicorn process, on the same CPU",
            },
        },
        "backends": {
            "database": "sqlite+aiosqlite, one file, WAL, synchronous=FULL (embedded default)",
            "cache": "memory:// (embedded default: 64 MiB, allkeys-lru)",
            "queue": "sqlite (embedded default): each redirect publishes its visit event",
        },
        "seed": {
            "links": links,
            "seconds": round(seed_seconds, 2),
            "links_per_s": round(links / seed_seconds, 1),
        },
        "redirect": redirects,
        "ratio": round(ratio, 4),
        "visit_events_queued": visit_events,
        "create": creation,
        "goal": {**goals, "met": all(v for k, v in goals.items() if k.endswith("_met"))},
        "valid": not failures,
        "failures": failures,
        "warnings": plan["warnings"],
    }
    path = write_result(options["out_dir"], "shortener", moment, result)
    report(result, path, console)
    return result


def run_shortener_bench(
    *,
    links: int,
    duration: float,
    rounds: int,
    connections: int,
    create_connections: int,
    out_dir: str,
    console: Console,
) -> dict[str, Any]:
    """Run it, print the table, write ``shortener-<time>.json`` and return it.
    Exits 2 when it cannot run (no wrk or nginx), 1 after writing the result
    when an answer was not a redirect."""
    options = {"links": links, "duration": duration, "rounds": rounds,
               "connections": connections, "create_connections": create_connections,
               "out_dir": out_dir}  # fmt: skip
    try:
        result = _run(options, console)
    except BenchmarkError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {escape(str(exc))}")
        raise SystemExit(2) from None
    if not result["valid"]:
        raise SystemExit(1)
    return result
