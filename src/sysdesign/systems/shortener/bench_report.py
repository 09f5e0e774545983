"""The table ``sysdesign bench shortener`` prints from its result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def _verdict(met: bool) -> str:
    return "[green]met[/green]" if met else "[red]not met[/red]"


def _mib(value: int | None) -> str:
    return f"{value / 2**20:.0f}" if value else "-"


def report(result: dict[str, Any], path: Path, console: Console) -> None:
    p = result["parameters"]
    redirect = result["redirect"]
    table = Table(
        title=f"shortener: GET /s/{{code}}, Zipf({p['zipf_exponent']}) over {p['links']:,} links"
        " (ours) beside a fixed 301 (nginx); POST /shortener/v1/links",
        caption=f"wrk -t1 -c{p['connections']} (creation -c{p['create_connections']}) "
        f"-d{p['duration_s']}s, median of {p['rounds']} rounds; {p['cpu_pinning']['note']}",
    )
    for column in ("target", "req/s", "p50 ms", "p99 ms", "rounds req/s", "RSS MiB"):
        table.add_column(column, justify="left" if column == "target" else "right", no_wrap=True)
    rows = [
        ("redirect: ours", redirect["targets"]["ours"]),
        ("redirect: nginx", redirect["targets"]["nginx"]),
        ("create: ours", result["create"]),
    ]
    for label, data in rows:
        table.add_row(
            label,
            f"{data['median']['rps']:,.0f}",
            f"{data['median']['p50_ms']:.2f}",
            f"{data['median']['p99_ms']:.2f}",
            " ".join(f"{r['requests_per_second']:,.0f}" for r in data["rounds"]),
            _mib(data["server_rss_bytes"]),
        )
    console.print(table)

    goal = result["goal"]
    counted = redirect["measured_rounds_of_ours"]
    ours = redirect["targets"]["ours"]["median"]
    anchor = redirect["targets"]["nginx"]["median"]
    per_redirect = counted["sql_statements_per_redirect"]
    hit_ratio = counted["cache_hit_ratio"]
    console.print(
        f"ours / nginx redirects/s: [bold]{result['ratio']:.3f}[/bold] "
        f"(goal >= {goal['ratio_at_least']:.2f}: {_verdict(goal['ratio_met'])})"
    )
    console.print(
        f"p99 of ours: [bold]{ours['p99_ms']:.2f} ms[/bold] at {p['connections']} connections "
        f"(goal < {goal['p99_below_ms']:.0f} ms: {_verdict(goal['p99_met'])}; "
        f"nginx's p99 in the same rounds: {anchor['p99_ms']:.2f} ms)"
    )
    console.print(
        f"non-3xx answers: [bold]{counted['non_3xx_answered']}[/bold] of "
        f"{counted['redirects_answered']:,} redirects in the rounds "
        f"(goal 0: {_verdict(goal['non_3xx_met'])})"
    )
    console.print(
        f"SQL statements per redirect: [bold]{per_redirect}[/bold] "
        f"({counted['sql_statements']} in all; goal 0: "
        f"{_verdict(goal['no_sql_per_redirect_met'])})"
    )
    console.print(
        f"cache: hit ratio {hit_ratio if hit_ratio is not None else '-'}, "
        f"{counted['cache_misses']} misses, {counted['cache_evictions']} evictions; "
        f"hot set {redirect['hot_set']['codes']:,} codes "
        f"(top 100 take {p['top_100_share']:.0%} of requests)"
    )
    console.print(
        f"visit events queued: {result['visit_events_queued']:,} for "
        f"{redirect['redirects_answered_in_all']:,} redirects answered"
    )
    create = result["create"]
    console.print(
        f"creation: {create['median']['rps']:,.0f} links/s, "
        f"{create['sql_statements_per_link']} SQL statements per link "
        "(one transaction each, with its outbox event)"
    )
    seed = result["seed"]
    console.print(f"seed: {seed['links']:,} links in {seed['seconds']:.1f} s "
                  f"({seed['links_per_s']:,.0f} links/s)")  # fmt: skip
    for warning in result["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    for failure in result["failures"]:
        console.print(f"[red]failed:[/red] {escape(failure)}")
    console.print(f"result: {path}")
