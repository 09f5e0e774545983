"""The notification system on MySQL/MariaDB: idempotency keys compared exactly
(``utf8mb4_bin``) and inbox bodies as MEDIUMTEXT. Nothing changes on other engines.

Revision ID: notifications_0002
Revises: notifications_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "notifications_0002"
down_revision = "notifications_0001"
branch_labels = None
depends_on = None


def _mysql() -> bool:
    return op.get_bind().dialect.name in ("mysql", "mariadb")


def upgrade() -> None:
    if not _mysql():
        return
    # The default collations compare case-insensitively: "K-1" would find "k-1"'s event.
    op.alter_column(
        "notifications_events",
        "idempotency_key",
        existing_type=sa.String(255),
        type_=mysql.VARCHAR(255, charset="utf8mb4", collation="utf8mb4_bin"),
        existing_nullable=True,
    )
    # TEXT stops at 64 KiB; a rendered body may be longer.
    op.alter_column(
        "notifications_inbox",
        "body",
        existing_type=sa.Text(),
        type_=mysql.MEDIUMTEXT(),
        existing_nullable=False,
    )


def downgrade() -> None:
    if not _mysql():
        return
    op.alter_column(
        "notifications_inbox",
        "body",
        existing_type=mysql.MEDIUMTEXT(),
        type_=sa.Text(),
        existing_nullable=False,
    )
    op.alter_column(
        "notifications_events",
        "idempotency_key",
        existing_type=mysql.VARCHAR(255, charset="utf8mb4", collation="utf8mb4_bin"),
        type_=sa.String(255),
        existing_nullable=True,
    )
