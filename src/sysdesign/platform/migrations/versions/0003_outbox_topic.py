"""Pending outbox events by topic, for the relay's expedited topics.

Revision ID: 0003_outbox_topic
Revises: 0002_inbox
"""

from __future__ import annotations

from alembic import op

revision = "0003_outbox_topic"
down_revision = "0002_inbox"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_outbox_pending_topic", "outbox", ["published_at", "topic", "id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_pending_topic", table_name="outbox")
