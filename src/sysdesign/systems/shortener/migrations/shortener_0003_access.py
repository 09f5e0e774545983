"""Password-protected and admin-blocked links, API keys, retired aliases.

Revision ID: shortener_0003
Revises: shortener_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "shortener_0003"
down_revision = "shortener_0002"
branch_labels = None
depends_on = None


def _binary(length: int) -> sa.types.TypeEngine:
    return sa.String(length).with_variant(
        mysql.VARCHAR(length, charset="ascii", collation="ascii_bin"), "mysql", "mariadb"
    )


def upgrade() -> None:
    with op.batch_alter_table("shortener_links") as batch:
        batch.add_column(sa.Column("password_hash", sa.String(255), nullable=True))
        batch.add_column(
            sa.Column("blocked", sa.Boolean, nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("blocked_reason", sa.String(200), nullable=True))
    op.create_table(
        "shortener_api_keys",
        sa.Column("id", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("owner_id", sa.BigInteger, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("revoked_at", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_shortener_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_shortener_api_keys_key_hash"),
    )
    op.create_index("ix_shortener_api_keys_owner", "shortener_api_keys", ["owner_id", "id"])
    op.create_table(
        "shortener_retired_aliases",
        sa.Column("code", _binary(64), nullable=False),
        sa.Column("owner_id", sa.BigInteger, nullable=False),
        sa.Column("retired_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("code", name="pk_shortener_retired_aliases"),
    )


def downgrade() -> None:
    op.drop_table("shortener_retired_aliases")
    op.drop_index("ix_shortener_api_keys_owner", table_name="shortener_api_keys")
    op.drop_table("shortener_api_keys")
    with op.batch_alter_table("shortener_links") as batch:
        batch.drop_column("blocked_reason")
        batch.drop_column("blocked")
        batch.drop_column("password_hash")
