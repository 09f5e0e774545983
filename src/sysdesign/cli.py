"""The ``sysdesign`` command: run, serve, migrate, seed, bench."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from sysdesign.platform.errors import BackendUnavailable, ConfigurationError
from sysdesign.settings import Settings
from sysdesign.systems import PLATFORM_SERVICES, SYSTEMS, get_system

app = typer.Typer(
    help="sysdesign: fifteen system designs as real services.",
    no_args_is_help=True,
    add_completion=False,
)
bench_app = typer.Typer(
    help="Benchmarks against anchors measured in the same run.", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")
queue_app = typer.Typer(
    help="The queue on SYSDESIGN_QUEUE_URL: topics, lag, dead letters.", no_args_is_help=True
)
app.add_typer(queue_app, name="queue")
console = Console()
err = Console(stderr=True)


def _settings(**overrides: Any) -> Settings:
    try:
        values = {k: v for k, v in overrides.items() if v is not None}
        return Settings(**values)
    except Exception as exc:
        _fail(f"invalid settings: {exc}")
        raise


def _fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


def _run(coro: Awaitable[Any]) -> Any:
    from sysdesign.blocks.queue import QueueError

    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except (ConfigurationError, BackendUnavailable) as exc:
        _fail(str(exc))
    except QueueError as exc:
        _fail(f"{exc.__class__.__name__}: {exc}")


def _serve(settings: Settings, only: list[str] | None, demo: int) -> None:
    import uvicorn

    from sysdesign.platform.app import create_app
    from sysdesign.platform.context import Platform
    from sysdesign.platform.observability import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    platform = Platform(settings)

    async def prepare() -> None:
        # Started here as well as in the app's lifespan: a backend that is down fails
        # in one line before uvicorn starts, and demo data is in place before the first
        # request. Closed again because uvicorn runs the app on an event loop of its own.
        await platform.start()
        if demo:
            from sysdesign.platform.accounts.seed import DEMO_PASSWORD, demo_email, seed

            created = await seed(platform, demo, lambda _n: None)
            err.print(
                f"demo accounts: {demo_email(1)} .. {demo_email(demo)} "
                f"(password {DEMO_PASSWORD!r}), {created} new"
            )
        await platform.close()

    # The apps first: a system builds the backends it uses (the cache service
    # its cache), so that start() connects them and one that is down fails here.
    try:
        asgi = create_app(platform=platform, only=only)
    except (ValueError, ConfigurationError) as exc:
        _fail(str(exc))
    _run(prepare())
    loop = "uvloop" if sys.platform != "win32" else "auto"
    url = f"http://{settings.host}:{settings.port}/"
    err.print(f"sysdesign serving {', '.join(only) if only else 'every built system'} at {url}")
    config = uvicorn.Config(
        asgi,
        host=settings.host,
        port=settings.port,
        loop=loop,
        http="httptools",
        access_log=False,
        log_config=None,
        lifespan="on",
        server_header=False,
    )
    uvicorn.Server(config).run()


@app.command()
def up(
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    demo: Annotated[int, typer.Option(help="Create this many demo accounts first.")] = 0,
) -> None:
    """Run every built system in one process, at http://HOST:PORT/."""
    _serve(_settings(host=host, port=port), None, demo)


@app.command()
def serve(
    system: Annotated[str, typer.Argument(help="System to run alone, e.g. 'accounts'.")],
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Run one system alone, at the same paths as under ``up``."""
    if system not in PLATFORM_SERVICES:
        try:
            spec = get_system(system)
        except KeyError as exc:
            _fail(str(exc.args[0]))
        if not spec.built:
            _fail(f"system {system!r} is not built yet")
    _serve(_settings(host=host, port=port), [system], 0)


@app.command()
def systems() -> None:
    """List the fifteen systems, their seed scenario and status."""
    table = Table(title="sysdesign systems")
    for column in ("#", "system", "seed scenario", "status", "path"):
        table.add_column(column)
    for spec in SYSTEMS:
        style = "green" if spec.built else "yellow"
        table.add_row(
            str(spec.scenario),
            spec.name,
            spec.seed_scenario,
            f"[{style}]{spec.status}[/{style}]",
            f"{spec.path}/v1",
        )
    for name in PLATFORM_SERVICES:
        table.add_row(
            "-", name, "platform: shared User Service", "[green]built[/green]", f"/{name}/v1"
        )
    console.print(table)


@app.command()
def migrate() -> None:
    """Apply every pending migration to every database shard."""
    from sysdesign.platform.db import ShardRouter
    from sysdesign.platform.migrations import current_revisions, migrate_all

    settings = _settings()

    async def run() -> list[tuple[str, list[str]]]:
        router = ShardRouter.from_urls(settings.database_urls)
        try:
            for database in router.shards:
                try:
                    await database.ping(timeout=10)
                except Exception as exc:
                    raise BackendUnavailable(
                        f"database {database.safe_url} is unreachable: {exc}"
                    ) from None
            await migrate_all(router)
            return [(db.safe_url, await current_revisions(db)) for db in router.shards]
        finally:
            await router.dispose()

    for url, heads in _run(run()):
        console.print(f"[green]migrated[/green] {url}: {', '.join(heads)}")


@app.command()
def seed(
    system: Annotated[str, typer.Argument(help="System to seed ('accounts' for demo users).")],
    size: Annotated[int, typer.Option(min=1, help="How many items to create.")] = 100,
) -> None:
    """Create demo or benchmark data for a system, with a progress bar."""
    from sysdesign.platform.context import Platform

    seeder: Callable[..., Awaitable[Any]] | None
    if system == "accounts":
        from sysdesign.platform.accounts.seed import seed as seeder
    else:
        try:
            spec = get_system(system)
        except KeyError as exc:
            _fail(str(exc.args[0]))
        if not spec.built:
            _fail(f"system {system!r} is not built yet")
        seeder = spec.seeder()
        if seeder is None:
            _fail(f"system {system!r} has no seed data")

    async def run() -> Any:
        platform = Platform(_settings())
        await platform.start()
        try:
            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err,
            ) as bar:
                task = bar.add_task(f"seeding {system}", total=size)
                return await seeder(platform, size, lambda n: bar.advance(task, n))
        finally:
            await platform.close()

    created = _run(run())
    console.print(f"[green]seeded[/green] {system}: {created} new of {size}")


@bench_app.command("platform")
def bench_platform(
    duration: Annotated[float, typer.Option(help="Seconds of load per target.")] = 10.0,
    connections: Annotated[int, typer.Option(help="Concurrent connections.")] = 64,
    out: Annotated[str, typer.Option(help="Directory for the JSON result.")] = "bench/results",
) -> None:
    """Full stack vs bare Starlette: the same JSON endpoint, same server, load from wrk."""
    from sysdesign.platform.bench import run_platform_bench

    run_platform_bench(duration=duration, connections=connections, out_dir=out, console=console)


@bench_app.command("queue")
def bench_queue(
    messages: Annotated[int, typer.Option(min=400, help="Messages per measurement.")] = 20000,
    rounds: Annotated[int, typer.Option(min=1, help="Rounds; the median is reported.")] = 3,
    redis: Annotated[
        str | None, typer.Option(envvar="SYSDESIGN_TEST_REDIS_URL", help="Redis to measure.")
    ] = None,
    nats: Annotated[
        str | None, typer.Option(envvar="SYSDESIGN_TEST_NATS_URL", help="NATS to measure.")
    ] = None,
    out: Annotated[str, typer.Option(help="Directory for the JSON result.")] = "bench/results",
) -> None:
    """Queue throughput and latency per backend, beside the raw redis-py and nats-py loops."""

    from sysdesign.benchmarks import BenchmarkError
    from sysdesign.blocks.queue.bench import run_queue_bench

    settings = _settings()
    try:
        run_queue_bench(
            sqlite_dir=settings.ensure_data_dir(),
            redis_url=redis,
            nats_url=nats,
            messages=messages,
            rounds=rounds,
            out_dir=out,
            console=console,
        )
    except (BenchmarkError, BackendUnavailable, ConfigurationError) as exc:
        _fail(str(exc))


@bench_app.command("ratelimiter")
def bench_ratelimiter(
    decisions: Annotated[int, typer.Option(min=1000, help="Decisions per in-memory run.")] = 200000,
    redis_decisions: Annotated[
        int, typer.Option(min=1000, help="Decisions per Redis run (round trips cost more).")
    ] = 30000,
    rounds: Annotated[int, typer.Option(min=1, help="Rounds; the median is reported.")] = 3,
    redis: Annotated[
        str | None, typer.Option(envvar="SYSDESIGN_TEST_REDIS_URL", help="Redis to measure.")
    ] = None,
    out: Annotated[str, typer.Option(help="Directory for the JSON result.")] = "bench/results",
) -> None:
    """Rate-limit decisions/s and latency per algorithm, in memory and on Redis, beside limits."""

    from sysdesign.benchmarks import BenchmarkError
    from sysdesign.blocks.ratelimit.bench import run_ratelimit_bench

    try:
        run_ratelimit_bench(
            redis_url=redis,
            decisions=decisions,
            redis_decisions=redis_decisions,
            rounds=rounds,
            out_dir=out,
            console=console,
        )
    except (BenchmarkError, BackendUnavailable, ConfigurationError) as exc:
        _fail(str(exc))


@bench_app.command("cache")
def bench_cache(
    requests: Annotated[
        int, typer.Option(min=1000, help="Requests per redis-benchmark test, one at a time.")
    ] = 100000,
    pipelined_requests: Annotated[
        int, typer.Option(min=1000, help="Requests per redis-benchmark test with -P 16.")
    ] = 400000,
    rounds: Annotated[int, typer.Option(min=1, help="Rounds; the median is reported.")] = 5,
    keys: Annotated[
        int, typer.Option(min=100, help="Keyspace: loaded first, drawn by -r, and Zipf's.")
    ] = 100000,
    zipf_requests: Annotated[
        int, typer.Option(min=1000, help="Requests per hit-ratio run.")
    ] = 500000,
    out: Annotated[str, typer.Option(help="Directory for the JSON result.")] = "bench/results",
) -> None:
    """Our cache node beside redis-server under redis-benchmark; memory per key; LRU vs LFU."""

    from sysdesign.benchmarks import BenchmarkError
    from sysdesign.blocks.cache.bench import run_cache_bench

    try:
        run_cache_bench(
            requests=requests,
            pipelined_requests=pipelined_requests,
            rounds=rounds,
            keys=keys,
            zipf_requests=zipf_requests,
            out_dir=out,
            console=console,
        )
    except BenchmarkError as exc:
        _fail(str(exc))


@bench_app.command("locks")
def bench_locks(
    pairs: Annotated[
        int, typer.Option(min=10, help="Uncontended acquire+release pairs on memory and sqlite.")
    ] = 2000,
    grants: Annotated[
        int, typer.Option(min=2, help="Contended grants in all, on memory and sqlite.")
    ] = 1000,
    server_pairs: Annotated[
        int,
        typer.Option(
            min=10, help="Uncontended pairs on PostgreSQL, Redis, Redlock, etcd and the anchors."
        ),
    ] = 500,
    server_grants: Annotated[
        int, typer.Option(min=2, help="Contended grants on the servers and the anchors.")
    ] = 300,
    tasks: Annotated[int, typer.Option(min=2, help="Concurrent tasks in the contended runs.")] = 16,
    rounds: Annotated[int, typer.Option(min=1, help="Rounds; the median is reported.")] = 3,
    postgres: Annotated[
        str | None,
        typer.Option(envvar="SYSDESIGN_TEST_POSTGRES_URL", help="PostgreSQL to measure."),
    ] = None,
    redis: Annotated[
        str | None, typer.Option(envvar="SYSDESIGN_TEST_REDIS_URL", help="Redis to measure.")
    ] = None,
    etcd: Annotated[
        str | None, typer.Option(envvar="SYSDESIGN_TEST_ETCD_URL", help="etcd to measure.")
    ] = None,
    out: Annotated[str, typer.Option(help="Directory for the JSON result.")] = "bench/results",
) -> None:
    """Lock acquire+release latency and contended grants/s per backend, beside
    redis-py's Lock and etcd's lock API."""

    from sysdesign.benchmarks import BenchmarkError
    from sysdesign.blocks.lock.bench import run_locks_bench

    settings = _settings()
    try:
        run_locks_bench(
            sqlite_dir=settings.ensure_data_dir(),
            postgres_url=postgres,
            redis_url=redis,
            etcd_url=etcd,
            pairs=pairs,
            grants=grants,
            server_pairs=server_pairs,
            server_grants=server_grants,
            tasks=tasks,
            rounds=rounds,
            out_dir=out,
            console=console,
        )
    except BenchmarkError as exc:
        _fail(str(exc))


@bench_app.command("shortener")
def bench_shortener(
    links: Annotated[int, typer.Option(min=1, help="Links seeded before the run.")] = 1_000_000,
    duration: Annotated[float, typer.Option(help="Seconds of load per round.")] = 10.0,
    rounds: Annotated[int, typer.Option(min=1, help="Rounds; the median is reported.")] = 3,
    connections: Annotated[
        int, typer.Option(min=1, help="Redirect requests in flight (wrk -c).")
    ] = 16,
    create_connections: Annotated[
        int, typer.Option(min=1, help="Link creations in flight (wrk -c).")
    ] = 16,
    out: Annotated[str, typer.Option(help="Directory for the JSON result.")] = "bench/results",
) -> None:
    """Redirects/s under Zipf(1.1) beside nginx, SQL statements per redirect, links/s created."""
    from sysdesign.systems.shortener.bench import run_shortener_bench

    run_shortener_bench(
        links=links,
        duration=duration,
        rounds=rounds,
        connections=connections,
        create_connections=create_connections,
        out_dir=out,
        console=console,
    )


@bench_app.command("notifications")
def bench_notifications(
    subscribers: Annotated[
        int, typer.Option(min=1, help="Subscribers of the topic the one trigger goes to.")
    ] = 100_000,
    codes: Annotated[
        int, typer.Option(min=0, help="One-time codes sent to single users during the fan-out.")
    ] = 50,
    otp_interval: Annotated[
        float, typer.Option(min=0.0, help="Seconds between two one-time codes.")
    ] = 0.5,
    timeout: Annotated[
        float, typer.Option(min=1.0, help="Seconds to wait for every delivery.")
    ] = 3600.0,
    tmp_root: Annotated[
        str | None, typer.Option(help="Where the temporary data directory goes (e.g. /dev/shm).")
    ] = None,
    out: Annotated[str, typer.Option(help="Directory for the JSON result.")] = "bench/results",
) -> None:
    """Fan-out time, deliveries/s (in-app, webhook), trigger-to-inbox p99, one-time codes' p99
    under that load, beside raw SQLite inserts of as many inbox rows."""
    from sysdesign.systems.notifications.bench import run_notifications_bench

    run_notifications_bench(
        subscribers=subscribers,
        codes=codes,
        otp_interval=otp_interval,
        timeout=timeout,
        out_dir=out,
        console=console,
        tmp_root=tmp_root,
    )


@app.command(
    "cache-node",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def cache_node(ctx: typer.Context) -> None:
    """A RESP cache server: --host, --port 6380, --maxmemory 256mb, --policy allkeys-lru|lfu."""
    from sysdesign.blocks.cache.node import main_node

    main_node(list(ctx.args))


def _with_queue(action: Callable[[Any], Awaitable[Any]]) -> Any:
    from sysdesign.blocks.queue import open_queue

    settings = _settings()

    async def run() -> Any:
        queue = open_queue(settings.url("queue"))
        await queue.connect()
        try:
            return await action(queue)
        finally:
            await queue.close()

    return _run(run())


@queue_app.command("topics")
def queue_topics() -> None:
    """Every topic: partitions, retained messages, groups, dead letters waiting."""

    async def run(queue: Any) -> list[tuple[Any, int]]:
        topics = await queue.topics()
        return [(t, await queue.dead_letter_depth(t.name)) for t in topics]

    table = Table("topic", "partitions", "messages", "groups", "dead letters")
    for topic, dead in _with_queue(run):
        table.add_row(
            topic.name,
            str(topic.partitions),
            str(topic.messages),
            ", ".join(topic.groups),
            str(dead),
        )
    console.print(table)


@queue_app.command("lag")
def queue_lag(
    topic: Annotated[str | None, typer.Argument(help="One topic (default: all).")] = None,
    group: Annotated[str | None, typer.Option(help="One consumer group.")] = None,
) -> None:
    """Messages each consumer group has not yet acknowledged, per partition."""

    async def run(queue: Any) -> list[Any]:
        names = [topic] if topic else [t.name for t in await queue.topics()]
        return [lag for name in names for lag in await queue.lag(name, group)]

    table = Table("topic", "group", "lag", "per partition", "members holding partitions")
    for lag in _with_queue(run):
        parts = " ".join(f"{p}:{n}" for p, n in sorted(lag.partitions.items()))
        table.add_row(
            lag.topic, lag.group, str(lag.total), parts, str(len(set(lag.owners.values())))
        )
    console.print(table)


@queue_app.command("dlq")
def queue_dlq(
    topic: Annotated[str, typer.Argument(help="The topic whose dead letters to show.")],
    limit: Annotated[int, typer.Option(min=1, help="At most this many.")] = 50,
    replay: Annotated[
        bool, typer.Option("--replay", help="Publish them back to the topic.")
    ] = False,
) -> None:
    """Dead letters of TOPIC (oldest first), or replay them with --replay."""
    if replay:
        count = _with_queue(lambda queue: queue.replay_dead_letters(topic, limit))
        console.print(f"[green]replayed[/green] {count} dead letters to {topic}")
        return
    table = Table("id", "key", "attempts", "failed at (UTC)", "error", "payload")
    for m in _with_queue(lambda queue: queue.dead_letters(topic, limit)):
        failed = m.headers.get("dlq-failed-at")
        when = (
            datetime.fromtimestamp(float(failed), UTC).strftime("%Y-%m-%d %H:%M:%S")
            if failed
            else ""
        )
        payload = m.payload[:60].decode(errors="replace")
        table.add_row(
            m.headers.get("dlq-id", m.id),
            m.key or "",
            m.headers.get("dlq-attempts", ""),
            when,
            m.headers.get("dlq-error", ""),
            payload,
        )
    console.print(table)


@queue_app.command("reset")
def queue_reset(
    topic: Annotated[str, typer.Argument()],
    group: Annotated[str, typer.Argument()],
    to: Annotated[
        str,
        typer.Option(help="earliest, latest, an offset for every partition, or an ISO 8601 time."),
    ],
) -> None:
    """Move a stopped consumer group to a time or an offset, to replay (or skip) messages."""
    target: dict[str, Any]
    if to in ("earliest", "latest"):
        target = {"to_offset": to}
    elif to.lstrip("-").isdigit():
        target = {"to_offset": int(to)}
    else:
        try:
            moment = datetime.fromisoformat(to)
        except ValueError:
            _fail(f"--to: {to!r} is not earliest, latest, an offset or an ISO 8601 time")
            raise
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        target = {"to_time": moment.timestamp()}
    positions = _with_queue(lambda queue: queue.reset(topic, group, **target))
    parts = " ".join(f"{p}:{o}" for p, o in sorted(positions.items()))
    console.print(f"[green]reset[/green] {group} on {topic}: {parts}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
