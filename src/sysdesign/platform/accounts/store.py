"""Accounts tables and queries. Users live on the primary database (shard 0)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    String,
    Table,
    func,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from sysdesign.platform.db import metadata

users_table = Table(
    "accounts_users",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("email", String(320), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("display_name", String(100), nullable=True),
    Column("avatar_url", String(2048), nullable=True),
    Column("created_at", BigInteger, nullable=False),  # epoch milliseconds
    Column("updated_at", BigInteger, nullable=False),
)

refresh_tokens_table = Table(
    "accounts_refresh_tokens",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column(
        "user_id",
        BigInteger,
        ForeignKey("accounts_users.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("family_id", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("used_at", BigInteger, nullable=True),
    Column("revoked_at", BigInteger, nullable=True),
    Index("ix_accounts_refresh_tokens_family", "family_id"),
    Index("ix_accounts_refresh_tokens_user", "user_id"),
)


@dataclass(frozen=True, slots=True)
class UserRow:
    id: int
    email: str
    password_hash: str
    display_name: str | None
    avatar_url: str | None
    created_at: int
    updated_at: int


@dataclass(frozen=True, slots=True)
class RefreshTokenRow:
    id: int
    user_id: int
    family_id: int
    expires_at: int
    used_at: int | None
    revoked_at: int | None


def _user(row: object) -> UserRow:
    return UserRow(**{k: getattr(row, k) for k in UserRow.__slots__})


async def insert_user(conn: AsyncConnection, user: UserRow) -> None:
    await conn.execute(users_table.insert().values(**{k: getattr(user, k) for k in user.__slots__}))


async def user_by_email(conn: AsyncConnection, email: str) -> UserRow | None:
    row = (await conn.execute(select(users_table).where(users_table.c.email == email))).first()
    return _user(row) if row else None


async def user_by_id(conn: AsyncConnection, user_id: int) -> UserRow | None:
    row = (await conn.execute(select(users_table).where(users_table.c.id == user_id))).first()
    return _user(row) if row else None


async def lock_user(conn: AsyncConnection, user_id: int) -> None:
    """Hold the account's row until the transaction ends (``FOR UPDATE``).

    Token rotation, logout and password change take it first, so a revocation
    always sees the tokens a concurrent rotation inserts. SQLite needs no row
    lock: its write transactions already run one at a time.
    """
    await conn.execute(
        select(users_table.c.id).where(users_table.c.id == user_id).with_for_update()
    )


async def count_users(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(func.count()).select_from(users_table))).scalar_one())


async def update_user(conn: AsyncConnection, user_id: int, **values: object) -> None:
    await conn.execute(update(users_table).where(users_table.c.id == user_id).values(**values))


async def insert_refresh_token(
    conn: AsyncConnection,
    *,
    token_id: int,
    token_hash: str,
    user_id: int,
    family_id: int,
    created_at: int,
    expires_at: int,
) -> None:
    await conn.execute(
        refresh_tokens_table.insert().values(
            id=token_id,
            token_hash=token_hash,
            user_id=user_id,
            family_id=family_id,
            created_at=created_at,
            expires_at=expires_at,
        )
    )


async def refresh_token_by_hash(conn: AsyncConnection, token_hash: str) -> RefreshTokenRow | None:
    t = refresh_tokens_table
    row = (
        await conn.execute(
            select(
                t.c.id, t.c.user_id, t.c.family_id, t.c.expires_at, t.c.used_at, t.c.revoked_at
            ).where(t.c.token_hash == token_hash)
        )
    ).first()
    return RefreshTokenRow(*row) if row else None


async def mark_refresh_token_used(conn: AsyncConnection, token_id: int, now: int) -> bool:
    """Claim a token for rotation; only one of two concurrent refreshes wins."""
    t = refresh_tokens_table
    result = await conn.execute(
        update(t)
        .where(t.c.id == token_id, t.c.used_at.is_(None), t.c.revoked_at.is_(None))
        .values(used_at=now)
    )
    return (result.rowcount or 0) == 1


async def revoke_family(conn: AsyncConnection, family_id: int, now: int) -> None:
    t = refresh_tokens_table
    await conn.execute(
        update(t).where(t.c.family_id == family_id, t.c.revoked_at.is_(None)).values(revoked_at=now)
    )


async def revoke_user_tokens(conn: AsyncConnection, user_id: int, now: int) -> None:
    t = refresh_tokens_table
    await conn.execute(
        update(t).where(t.c.user_id == user_id, t.c.revoked_at.is_(None)).values(revoked_at=now)
    )
