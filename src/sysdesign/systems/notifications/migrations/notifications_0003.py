"""Messages claimed in batches: each claim writes its own token in ``claim``,
which the worker's later updates must still find there. Indexes for the
retention job's age scans.

Revision ID: notifications_0003
Revises: notifications_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "notifications_0003"
down_revision = "notifications_0002"
branch_labels = None
depends_on = None


_INDEXES = [
    ("ix_notifications_messages_updated", "notifications_messages", ["status", "updated_at"]),
    ("ix_notifications_events_created", "notifications_events", ["created_at"]),
    ("ix_notifications_inbox_created", "notifications_inbox", ["created_at"]),
]


def upgrade() -> None:
    with op.batch_alter_table("notifications_messages") as batch:
        batch.add_column(sa.Column("claim", sa.BigInteger, nullable=True))
    for name, table, columns in _INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in _INDEXES:
        op.drop_index(name, table_name=table)
    with op.batch_alter_table("notifications_messages") as batch:
        batch.drop_column("claim")
