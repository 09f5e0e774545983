"""Visit statistics: counters per link, per day and per dimension, and reading them.

Aggregates, not raw visits: a visit adds one to its link's row for its day
(``shortener_visit_days``: visits, of which bots) and, for a human visit,
one to each of its ``(dimension, value)`` rows (``shortener_visit_dims``:
referrer host, browser, OS, country). A link's storage grows with its days
and its distinct values, not with its visits, and reading its stats is a few
primary-key range scans.

The rows live on the link's shard (``platform.db.for_key(code)``), beside the
link they count, so the consumer's inbox record, the link check and the
counter updates are one local transaction. The foreign key to the link
deletes them with it.

Counters are incremented with one upsert per table whose new value the
database computes from the stored one (``ON CONFLICT ... DO UPDATE`` on
SQLite and PostgreSQL, ``ON DUPLICATE KEY UPDATE`` on MySQL/MariaDB), so
concurrent consumers never lose an increment.

On MySQL/MariaDB dimension values are ``utf8mb4_bin``: the default collations
would fold case and accents, merging distinct values into one row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    ForeignKey,
    String,
    Table,
    collate,
    func,
    select,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from sysdesign.platform.db import metadata
from sysdesign.systems.shortener.analytics import CountedVisit
from sysdesign.systems.shortener.store import links_table

if TYPE_CHECKING:
    from sysdesign.platform.context import Platform

TOP_N = 20
MAX_DAYS = 366
DIMENSIONS = ("referrer", "browser", "os", "country")


def _binary(length: int) -> String:
    return String(length).with_variant(  # type: ignore[return-value]
        mysql.VARCHAR(length, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
    )


def _link_id() -> Column[int]:
    return Column(
        "link_id",
        BigInteger,
        ForeignKey("shortener_links.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    )


visit_days_table = Table(
    "shortener_visit_days",
    metadata,
    _link_id(),
    Column("day", Date, primary_key=True),  # UTC
    Column("visits", BigInteger, nullable=False),  # all visits, bots included
    Column("bots", BigInteger, nullable=False),
)

visit_dims_table = Table(
    "shortener_visit_dims",
    metadata,
    _link_id(),
    Column("dimension", String(16), primary_key=True),
    Column("value", _binary(255), primary_key=True),
    Column("visits", BigInteger, nullable=False),  # human visits only
)


# --- writing ------------------------------------------------------------------------


async def link_exists(conn: AsyncConnection, link_id: int, code: str) -> bool:
    """Whether the link is still there (and is the one the visit was of: a code
    freed by a deletion may be taken again by a new link, with a new id)."""
    t = links_table
    query = select(t.c.id).where(t.c.id == link_id, t.c.code == code)
    return (await conn.execute(query)).first() is not None


async def record_visit(conn: AsyncConnection, visit: CountedVisit) -> None:
    """Add ``visit`` to its link's counters, in the caller's transaction on the
    link's shard. Raises ``IntegrityError`` if the link no longer exists."""
    await _increment(
        conn,
        visit_days_table,
        ("link_id", "day"),
        [{"link_id": visit.link_id, "day": visit.day, "visits": 1, "bots": int(visit.bot)}],
        ("visits", "bots"),
    )
    rows = [
        {"link_id": visit.link_id, "dimension": name, "value": value, "visits": 1}
        for name, value in sorted(visit.dimensions())
    ]
    if rows:
        await _increment(
            conn, visit_dims_table, ("link_id", "dimension", "value"), rows, ("visits",)
        )


async def _increment(
    conn: AsyncConnection,
    table: Table,
    keys: Sequence[str],
    rows: list[dict[str, Any]],
    counters: Sequence[str],
) -> None:
    """Insert ``rows``; a row whose key exists adds its ``counters`` to the stored ones."""
    dialect = conn.dialect.name
    if dialect in ("mysql", "mariadb"):
        my = mysql.insert(table).values(rows)
        await conn.execute(
            my.on_duplicate_key_update({c: table.c[c] + my.inserted[c] for c in counters})
        )
        return
    builder = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = builder(table).values(rows)
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[table.c[k] for k in keys],
            set_={c: table.c[c] + stmt.excluded[c] for c in counters},
        )
    )


# --- reading ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DayCount:
    day: str  # ISO date, UTC: "2025-06-15"
    visits: int  # all visits that day, bots included
    bots: int


@dataclass(frozen=True, slots=True)
class LinkStats:
    """A link's visits as the consumer has counted them so far (it runs a moment
    behind the redirects).

    ``total`` and ``bots`` count every visit since the link was made, bots
    included in ``total``. ``daily`` has one entry per day of the window asked
    for, oldest first, days without visits included as zeros. The top lists
    count human visits since the link was made, at most ``TOP_N`` each, by
    count descending then value: ``referrers`` by host (``"direct"`` without
    one), ``browsers`` and ``os`` by ua-parser family, ``countries`` by ISO
    code (``"unknown"`` when not known).
    """

    total: int
    bots: int
    daily: list[DayCount]
    referrers: list[tuple[str, int]]
    browsers: list[tuple[str, int]]
    os: list[tuple[str, int]]
    countries: list[tuple[str, int]]


async def link_stats(platform: Platform, link_id: int, code: str, *, days: int = 30) -> LinkStats:
    """The stats of link ``link_id`` (whose code is ``code``: it names the shard),
    with ``daily`` covering the ``days`` days up to today (UTC, by the
    platform's clock). ``ValueError`` unless ``1 <= days <= MAX_DAYS``. Does
    not check who owns the link: callers do."""
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be within 1..{MAX_DAYS}, got {days}")
    today = datetime.fromtimestamp(platform.clock.time(), UTC).date()
    first = today - timedelta(days=days - 1)
    async with platform.db.for_key(code).read() as conn:
        total, bots = await _totals(conn, link_id)
        by_day = await _days(conn, link_id, first, today)
        tops = {name: await _top(conn, link_id, name) for name in DIMENSIONS}
    daily = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        visits, day_bots = by_day.get(day, (0, 0))
        daily.append(DayCount(day.isoformat(), visits, day_bots))
    return LinkStats(
        total=total,
        bots=bots,
        daily=daily,
        referrers=tops["referrer"],
        browsers=tops["browser"],
        os=tops["os"],
        countries=tops["country"],
    )


async def visit_totals(platform: Platform, links: Sequence[tuple[int, str]]) -> dict[int, int]:
    """Every visit so far (bots included) of each link ``(id, code)``, for a
    list of links: one query per shard, not one per link."""
    out = {link_id: 0 for link_id, _ in links}
    by_shard: dict[int, list[int]] = {}
    for link_id, code in links:
        by_shard.setdefault(platform.db.index_for(code), []).append(link_id)
    t = visit_days_table
    for index, ids in by_shard.items():
        query = (
            select(t.c.link_id, func.sum(t.c.visits))
            .where(t.c.link_id.in_(ids))
            .group_by(t.c.link_id)
        )
        async with platform.db.shards[index].read() as conn:
            for link_id, total in await conn.execute(query):
                out[int(link_id)] = int(total)
    return out


async def _totals(conn: AsyncConnection, link_id: int) -> tuple[int, int]:
    t = visit_days_table
    query = select(
        func.coalesce(func.sum(t.c.visits), 0), func.coalesce(func.sum(t.c.bots), 0)
    ).where(t.c.link_id == link_id)
    row = (await conn.execute(query)).one()
    return int(row[0]), int(row[1])  # SUM is a decimal on PostgreSQL and MySQL


async def _days(
    conn: AsyncConnection, link_id: int, first: date, last: date
) -> dict[date, tuple[int, int]]:
    t = visit_days_table
    query = select(t.c.day, t.c.visits, t.c.bots).where(
        t.c.link_id == link_id, t.c.day >= first, t.c.day <= last
    )
    return {row.day: (int(row.visits), int(row.bots)) for row in await conn.execute(query)}


async def _top(conn: AsyncConnection, link_id: int, dimension: str) -> list[tuple[str, int]]:
    t = visit_dims_table
    value = t.c.value
    if conn.dialect.name == "postgresql":
        # Ties are broken by code point, as on the other engines (SQLite's
        # BINARY, MySQL's utf8mb4_bin), not by the database's locale.
        value = collate(value, "C")
    query = (
        select(t.c.value, t.c.visits)
        .where(t.c.link_id == link_id, t.c.dimension == dimension)
        .order_by(t.c.visits.desc(), value)
        .limit(TOP_N)
    )
    return [(row.value, int(row.visits)) for row in await conn.execute(query)]
