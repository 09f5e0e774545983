"""Visit analytics for the URL shortener: per-day counts and per-dimension counts.

Revision ID: shortener_0002
Revises: shortener_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "shortener_0002"
down_revision = "shortener_0001"
branch_labels = None
depends_on = None


def _binary(length: int) -> sa.types.TypeEngine:
    # Dimension values ("Chrome" and "chrome" are different browsers) compare
    # case-sensitively on MySQL/MariaDB too, so they are distinct keys.
    return sa.String(length).with_variant(
        mysql.VARCHAR(length, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
    )


def upgrade() -> None:
    op.create_table(
        "shortener_visit_days",
        sa.Column("link_id", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("visits", sa.BigInteger, nullable=False),
        sa.Column("bots", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("link_id", "day", name="pk_shortener_visit_days"),
        sa.ForeignKeyConstraint(
            ["link_id"],
            ["shortener_links.id"],
            name="fk_shortener_visit_days_link_id_shortener_links",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "shortener_visit_dims",
        sa.Column("link_id", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("dimension", sa.String(16), nullable=False),
        sa.Column("value", _binary(255), nullable=False),
        sa.Column("visits", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("link_id", "dimension", "value", name="pk_shortener_visit_dims"),
        sa.ForeignKeyConstraint(
            ["link_id"],
            ["shortener_links.id"],
            name="fk_shortener_visit_dims_link_id_shortener_links",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("shortener_visit_dims")
    op.drop_table("shortener_visit_days")
