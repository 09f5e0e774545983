"""The notification system: templates, subscribers, topics, preferences, events,
messages and the in-app inbox.

Revision ID: notifications_0001
Revises: (a branch of its own, labelled ``notifications``)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "notifications_0001"
down_revision = None
branch_labels = ("notifications",)
depends_on = None


def _json() -> sa.types.TypeEngine:
    return sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


def _stamps() -> list[sa.Column]:
    return [
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "notifications_templates",
        sa.Column("key", sa.String(100), nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("critical", sa.Boolean, nullable=False),
        sa.Column("priority", sa.String(16), nullable=False),
        sa.Column("digest_window_seconds", sa.Integer, nullable=True),
        sa.Column("digest_group_field", sa.String(64), nullable=True),
        sa.Column("throttle", sa.String(64), nullable=True),
        sa.Column("channels", _json(), nullable=False),
        *_stamps(),
        sa.PrimaryKeyConstraint("key", name="pk_notifications_templates"),
    )
    op.create_table(
        "notifications_subscribers",
        sa.Column("user_id", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("phone", sa.String(20), nullable=True),
        sa.Column("webhook_url", sa.String(2048), nullable=True),
        sa.Column("webhook_secret", sa.String(128), nullable=True),
        sa.Column("locale", sa.String(35), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        *_stamps(),
        sa.PrimaryKeyConstraint("user_id", name="pk_notifications_subscribers"),
    )
    op.create_table(
        "notifications_topics",
        sa.Column("id", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("key", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_notifications_topics"),
        sa.UniqueConstraint("key", name="uq_notifications_topics_key"),
    )
    op.create_table(
        "notifications_topic_subscriptions",
        sa.Column("topic_id", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("user_id", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("topic_id", "user_id", name="pk_notifications_topic_subscriptions"),
        sa.ForeignKeyConstraint(
            ["topic_id"],
            ["notifications_topics.id"],
            name="fk_notifications_topic_subscriptions_topic",  # within 63 characters
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "notifications_preferences",
        sa.Column("user_id", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("disabled", _json(), nullable=False),
        sa.Column("quiet_start", sa.String(5), nullable=True),
        sa.Column("quiet_end", sa.String(5), nullable=True),
        sa.Column("quiet_timezone", sa.String(64), nullable=True),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_notifications_preferences"),
    )
    op.create_table(
        "notifications_events",
        sa.Column("id", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("caller", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("template", sa.String(100), nullable=False),
        sa.Column("recipients", _json(), nullable=False),
        sa.Column("data", _json(), nullable=False),
        sa.Column("priority", sa.String(16), nullable=False),
        sa.Column("send_at", sa.BigInteger, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("fanout_done", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_notifications_events"),
        sa.UniqueConstraint("caller", "idempotency_key", name="uq_notifications_events_caller"),
    )
    op.create_table(
        "notifications_messages",
        sa.Column("id", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("event_id", sa.BigInteger, nullable=False),
        sa.Column("recipient_id", sa.BigInteger, nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("priority", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("due_at", sa.BigInteger, nullable=True),
        sa.Column("claimed_at", sa.BigInteger, nullable=True),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("last_error", sa.String(1000), nullable=True),
        sa.Column("provider_id", sa.String(255), nullable=True),
        sa.Column("digest_key", sa.String(255), nullable=True),
        sa.Column("digest_of", sa.BigInteger, nullable=True),
        *_stamps(),
        sa.PrimaryKeyConstraint("id", name="pk_notifications_messages"),
        sa.UniqueConstraint(
            "event_id", "recipient_id", "channel", name="uq_notifications_messages_event"
        ),
    )
    op.create_index("ix_notifications_messages_due", "notifications_messages", ["status", "due_at"])
    op.create_index(
        "ix_notifications_messages_digest", "notifications_messages", ["digest_key", "status"]
    )
    op.create_index("ix_notifications_messages_digest_of", "notifications_messages", ["digest_of"])
    op.create_table(
        "notifications_inbox",
        sa.Column("id", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("message_id", sa.BigInteger, nullable=False),
        sa.Column("title", sa.String(500), nullable=True),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("data", _json(), nullable=False),
        sa.Column("read_at", sa.BigInteger, nullable=True),
        sa.Column("archived_at", sa.BigInteger, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_notifications_inbox"),
        sa.UniqueConstraint("message_id", name="uq_notifications_inbox_message_id"),
    )
    op.create_index("ix_notifications_inbox_user", "notifications_inbox", ["user_id", "id"])
    op.create_index(
        "ix_notifications_inbox_unread",
        "notifications_inbox",
        ["user_id", "archived_at", "read_at"],
    )


def downgrade() -> None:
    for table in (
        "notifications_inbox",
        "notifications_messages",
        "notifications_events",
        "notifications_preferences",
        "notifications_topic_subscriptions",
        "notifications_topics",
        "notifications_subscribers",
        "notifications_templates",
    ):
        op.drop_table(table)
