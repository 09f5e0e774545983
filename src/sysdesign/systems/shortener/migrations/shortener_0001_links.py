"""The URL shortener's links, their tags and the code counter.

Revision ID: shortener_0001
Revises: (a branch of its own, labelled ``shortener``)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "shortener_0001"
down_revision = None
branch_labels = ("shortener",)
depends_on = None


def _binary(length: int) -> sa.types.TypeEngine:
    # Codes and tags compare case-sensitively on MySQL/MariaDB too.
    return sa.String(length).with_variant(
        mysql.VARCHAR(length, charset="ascii", collation="ascii_bin"), "mysql", "mariadb"
    )


def upgrade() -> None:
    op.create_table(
        "shortener_links",
        sa.Column("id", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("code", _binary(64), nullable=False),
        sa.Column("owner_id", sa.BigInteger, nullable=False),
        sa.Column("target", sa.String(2048), nullable=False),
        sa.Column("custom", sa.Boolean, nullable=False),
        sa.Column("redirect_status", sa.SmallInteger, nullable=False),
        sa.Column("forward_query", sa.Boolean, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("title", sa.String(200), nullable=True),
        sa.Column("expires_at", sa.BigInteger, nullable=True),
        sa.Column("max_visits", sa.BigInteger, nullable=True),
        sa.Column("visits", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_shortener_links"),
        sa.UniqueConstraint("code", name="uq_shortener_links_code"),
    )
    op.create_index("ix_shortener_links_owner", "shortener_links", ["owner_id", "id"])
    op.create_table(
        "shortener_link_tags",
        sa.Column("link_id", sa.BigInteger, nullable=False),
        sa.Column("tag", _binary(40), nullable=False),
        sa.Column("owner_id", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("link_id", "tag", name="pk_shortener_link_tags"),
        sa.ForeignKeyConstraint(
            ["link_id"],
            ["shortener_links.id"],
            name="fk_shortener_link_tags_link_id_shortener_links",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_shortener_link_tags_owner_tag", "shortener_link_tags", ["owner_id", "tag", "link_id"]
    )
    counter = op.create_table(
        "shortener_code_counter",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("next_value", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_shortener_code_counter"),
    )
    op.bulk_insert(counter, [{"name": "codes", "next_value": 0}])


def downgrade() -> None:
    op.drop_table("shortener_code_counter")
    op.drop_index("ix_shortener_link_tags_owner_tag", table_name="shortener_link_tags")
    op.drop_table("shortener_link_tags")
    op.drop_index("ix_shortener_links_owner", table_name="shortener_links")
    op.drop_table("shortener_links")
