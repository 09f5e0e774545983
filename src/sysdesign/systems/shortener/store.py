"""The shortener's tables and queries.

Links are sharded by code (``platform.db.for_key(code)``): the redirect, the
hot path, reads one row on one shard. A link's tags live beside it on the
same shard. Listing an owner's links is a scatter-gather over the shards,
merged by id (snowflakes sort by creation).

The code counter (``shortener_code_counter``) is read and written on the
primary only; every shard has the table because every shard gets every
migration.

On MySQL/MariaDB the code and tag columns are ``ascii_bin``: the default
collations compare case-insensitively, and ``abc`` and ``ABC`` are two codes.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    SmallInteger,
    String,
    Table,
    delete,
    false,
    func,
    select,
    update,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.ext.asyncio import AsyncConnection

from sysdesign.platform.db import metadata
from sysdesign.systems.shortener.domain import Link


def _binary(length: int) -> String:
    return String(length).with_variant(  # type: ignore[return-value]
        mysql.VARCHAR(length, charset="ascii", collation="ascii_bin"), "mysql", "mariadb"
    )


links_table = Table(
    "shortener_links",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("code", _binary(64), nullable=False, unique=True),
    Column("owner_id", BigInteger, nullable=False),
    Column("target", String(2048), nullable=False),
    Column("custom", Boolean, nullable=False),
    Column("redirect_status", SmallInteger, nullable=False),
    Column("forward_query", Boolean, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("title", String(200), nullable=True),
    Column("expires_at", BigInteger, nullable=True),  # epoch milliseconds
    Column("max_visits", BigInteger, nullable=True),
    Column("visits", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("password_hash", String(255), nullable=True),  # argon2id; None: no password
    Column("blocked", Boolean, nullable=False, server_default=false()),  # by an admin
    Column("blocked_reason", String(200), nullable=True),
    Index("ix_shortener_links_owner", "owner_id", "id"),
)

link_tags_table = Table(
    "shortener_link_tags",
    metadata,
    Column(
        "link_id",
        BigInteger,
        ForeignKey("shortener_links.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("tag", _binary(40), primary_key=True),
    Column("owner_id", BigInteger, nullable=False),
    Index("ix_shortener_link_tags_owner_tag", "owner_id", "tag", "link_id"),
)

code_counter_table = Table(
    "shortener_code_counter",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("next_value", BigInteger, nullable=False),
)

api_keys_table = Table(
    "shortener_api_keys",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("owner_id", BigInteger, nullable=False),
    Column("name", String(100), nullable=False),
    Column("prefix", String(16), nullable=False),  # shown to tell keys apart
    Column("key_hash", String(64), nullable=False, unique=True),  # SHA-256 hex of the key
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
    Index("ix_shortener_api_keys_owner", "owner_id", "id"),
)

# A deleted custom alias stays its owner's: see ``service.LinkService.delete``.
retired_aliases_table = Table(
    "shortener_retired_aliases",
    metadata,
    Column("code", _binary(64), primary_key=True),
    Column("owner_id", BigInteger, nullable=False),
    Column("retired_at", BigInteger, nullable=False),
)

COUNTER_NAME = "codes"


async def allocate_block(conn: AsyncConnection, size: int) -> int:
    """Reserve ``size`` numbers; returns the first. Call in a write transaction
    on the primary: the UPDATE locks the row until commit, so concurrent
    callers get disjoint blocks, and the SELECT reads this transaction's own
    value. Raises ``RuntimeError`` when the counter row is missing (the
    migration seeds it)."""
    t = code_counter_table
    result = await conn.execute(
        update(t).where(t.c.name == COUNTER_NAME).values(next_value=t.c.next_value + size)
    )
    if (result.rowcount or 0) != 1:
        raise RuntimeError("the shortener's code counter row is missing: run the migrations")
    end = (await conn.execute(select(t.c.next_value).where(t.c.name == COUNTER_NAME))).scalar_one()
    return int(end) - size


def _values(link: Link) -> dict[str, object]:
    return {
        "id": link.id,
        "code": link.code,
        "owner_id": link.owner_id,
        "target": link.target,
        "custom": link.custom,
        "redirect_status": link.redirect_status,
        "forward_query": link.forward_query,
        "enabled": link.enabled,
        "title": link.title,
        "expires_at": link.expires_at_ms,
        "max_visits": link.max_visits,
        "visits": link.visits,
        "created_at": link.created_at_ms,
        "updated_at": link.updated_at_ms,
        "password_hash": link.password_hash,
        "blocked": link.blocked,
        "blocked_reason": link.blocked_reason,
    }


def _link(row: object, tags: list[str]) -> Link:
    r = row._mapping  # type: ignore[attr-defined]
    return Link(
        id=r["id"],
        code=r["code"],
        owner_id=r["owner_id"],
        target=r["target"],
        custom=bool(r["custom"]),
        redirect_status=int(r["redirect_status"]),
        forward_query=bool(r["forward_query"]),
        enabled=bool(r["enabled"]),
        title=r["title"],
        expires_at_ms=r["expires_at"],
        max_visits=r["max_visits"],
        visits=int(r["visits"]),
        created_at_ms=r["created_at"],
        updated_at_ms=r["updated_at"],
        tags=tags,
        password_hash=r["password_hash"],
        blocked=bool(r["blocked"]),
        blocked_reason=r["blocked_reason"],
    )


async def insert_link(conn: AsyncConnection, link: Link) -> None:
    """Raises ``sqlalchemy.exc.IntegrityError`` when the code is taken."""
    await conn.execute(links_table.insert().values(**_values(link)))
    await _insert_tags(conn, link.id, link.owner_id, link.tags)


async def insert_links(conn: AsyncConnection, links: Sequence[Link]) -> None:
    """Insert many links (and their tags) in one statement each: executemany.
    Raises ``IntegrityError`` when any code is taken; the caller's transaction
    then holds none of them."""
    if not links:
        return
    await conn.execute(links_table.insert(), [_values(link) for link in links])
    tags = [
        {"link_id": link.id, "tag": t, "owner_id": link.owner_id}
        for link in links
        for t in link.tags
    ]
    if tags:
        await conn.execute(link_tags_table.insert(), tags)


async def _insert_tags(conn: AsyncConnection, link_id: int, owner_id: int, tags: list[str]) -> None:
    if tags:
        rows = [{"link_id": link_id, "tag": t, "owner_id": owner_id} for t in tags]
        await conn.execute(link_tags_table.insert(), rows)


async def _tags_of(conn: AsyncConnection, link_ids: list[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {i: [] for i in link_ids}
    if link_ids:
        t = link_tags_table
        query = select(t.c.link_id, t.c.tag).where(t.c.link_id.in_(link_ids)).order_by(t.c.tag)
        for link_id, tag in await conn.execute(query):
            out[link_id].append(tag)
    return out


async def link_by_code(conn: AsyncConnection, code: str) -> Link | None:
    row = (await conn.execute(select(links_table).where(links_table.c.code == code))).first()
    if row is None:
        return None
    return _link(row, (await _tags_of(conn, [row.id]))[row.id])


async def links_of_owner(
    conn: AsyncConnection, owner_id: int, *, tag: str | None, before_id: int | None, limit: int
) -> list[Link]:
    """The owner's links on this shard, newest first, with ids below ``before_id``."""
    t = links_table
    query = select(t).where(t.c.owner_id == owner_id)
    if tag is not None:
        tagged = select(link_tags_table.c.link_id).where(
            link_tags_table.c.owner_id == owner_id, link_tags_table.c.tag == tag
        )
        query = query.where(t.c.id.in_(tagged))
    if before_id is not None:
        query = query.where(t.c.id < before_id)
    rows = (await conn.execute(query.order_by(t.c.id.desc()).limit(limit))).all()
    tags = await _tags_of(conn, [r.id for r in rows])
    return [_link(r, tags[r.id]) for r in rows]


async def update_link(
    conn: AsyncConnection, link_id: int, values: dict[str, object], tags: list[str] | None
) -> None:
    """Set ``values`` (column names); ``tags``, when given, replace the link's tags."""
    await conn.execute(update(links_table).where(links_table.c.id == link_id).values(**values))
    if tags is not None:
        owner_id = (
            await conn.execute(select(links_table.c.owner_id).where(links_table.c.id == link_id))
        ).scalar_one()
        await conn.execute(delete(link_tags_table).where(link_tags_table.c.link_id == link_id))
        await _insert_tags(conn, link_id, owner_id, tags)


async def delete_link(conn: AsyncConnection, link_id: int) -> None:
    # Tags first: SQLite enforces the foreign key only with PRAGMA foreign_keys,
    # and the order makes the delete independent of ON DELETE CASCADE.
    await conn.execute(delete(link_tags_table).where(link_tags_table.c.link_id == link_id))
    await conn.execute(delete(links_table).where(links_table.c.id == link_id))


async def count_visit(conn: AsyncConnection, code: str) -> bool:
    """Count one visit of a link with ``max_visits``, unless it is used up.

    One conditional UPDATE: the database checks and increments under the
    row's lock, so of N concurrent visits exactly ``max_visits - visits`` are
    counted, on every engine. Returns whether this visit was counted.
    """
    t = links_table
    result = await conn.execute(
        update(t)
        .where(t.c.code == code, t.c.max_visits.is_not(None), t.c.visits < t.c.max_visits)
        .values(visits=t.c.visits + 1)
    )
    return (result.rowcount or 0) == 1


async def count_links(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(func.count()).select_from(links_table))).scalar_one())


# --- retired aliases (on the alias's shard) ---------------------------------------------


async def retire_alias(conn: AsyncConnection, code: str, owner_id: int, now_ms: int) -> None:
    await conn.execute(
        retired_aliases_table.insert().values(code=code, owner_id=owner_id, retired_at=now_ms)
    )


async def retired_alias_owner(conn: AsyncConnection, code: str) -> int | None:
    t = retired_aliases_table
    owner = (await conn.execute(select(t.c.owner_id).where(t.c.code == code))).scalar()
    return None if owner is None else int(owner)


async def retired_alias_owners(conn: AsyncConnection, codes: Sequence[str]) -> dict[str, int]:
    """The owners of those of ``codes`` that are retired aliases, in one query."""
    if not codes:
        return {}
    t = retired_aliases_table
    rows = await conn.execute(select(t.c.code, t.c.owner_id).where(t.c.code.in_(codes)))
    return {code: int(owner) for code, owner in rows}


async def unretire_alias(conn: AsyncConnection, code: str) -> None:
    await conn.execute(delete(retired_aliases_table).where(retired_aliases_table.c.code == code))


# --- API keys (on the primary) ------------------------------------------------------------


async def insert_api_key(conn: AsyncConnection, values: dict[str, object]) -> None:
    await conn.execute(api_keys_table.insert().values(**values))


async def api_keys_of(conn: AsyncConnection, owner_id: int) -> list[dict[str, object]]:
    """The owner's keys that are not revoked, newest first."""
    t = api_keys_table
    query = (
        select(t.c.id, t.c.name, t.c.prefix, t.c.created_at)
        .where(t.c.owner_id == owner_id, t.c.revoked_at.is_(None))
        .order_by(t.c.id.desc())
    )
    return [dict(row._mapping) for row in await conn.execute(query)]


async def owner_of_api_key(conn: AsyncConnection, key_hash: str) -> int | None:
    t = api_keys_table
    query = select(t.c.owner_id).where(t.c.key_hash == key_hash, t.c.revoked_at.is_(None))
    owner = (await conn.execute(query)).scalar()
    return None if owner is None else int(owner)


async def revoke_api_key(
    conn: AsyncConnection, owner_id: int, key_id: int, now_ms: int
) -> str | None:
    """Revoke one of the owner's keys; its hash (to forget cached lookups), or
    ``None`` when the owner has no such live key."""
    t = api_keys_table
    key_hash = (
        await conn.execute(
            select(t.c.key_hash).where(
                t.c.id == key_id, t.c.owner_id == owner_id, t.c.revoked_at.is_(None)
            )
        )
    ).scalar()
    if key_hash is None:
        return None
    await conn.execute(update(t).where(t.c.id == key_id).values(revoked_at=now_ms))
    return str(key_hash)
