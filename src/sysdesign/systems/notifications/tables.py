"""The notification system's tables, on the primary database.

Why not sharded by recipient: one fan-out step writes a thousand recipients'
messages and their outbox events in one transaction, which must be on one
database; the tables stay small per message (ids, a status, timestamps) and
the inbox is read by an index on the user. Sharding would put each
recipient's messages and inbox on the recipient's shard, with a fan-out
step per shard; nothing here prevents that later.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeEngine

from sysdesign.platform.db import metadata


def long_text() -> TypeEngine[str]:
    """Text up to megabytes; MEDIUMTEXT on MySQL/MariaDB, whose TEXT stops at 64 KiB."""
    return Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


def json_text() -> TypeEngine[str]:
    """JSON as text (see ``long_text``)."""
    return long_text()


def exact_string(length: int) -> TypeEngine[str]:
    """A string compared byte for byte: MySQL/MariaDB's default collations compare
    case-insensitively, which would make ``K-1`` and ``k-1`` one idempotency key."""
    binary = mysql.VARCHAR(length, charset="utf8mb4", collation="utf8mb4_bin")
    return String(length).with_variant(binary, "mysql", "mariadb")


templates_table = Table(
    "notifications_templates",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("category", String(64), nullable=False),
    Column("critical", Boolean, nullable=False),
    Column("priority", String(16), nullable=False),
    Column("digest_window_seconds", Integer, nullable=True),
    Column("digest_group_field", String(64), nullable=True),
    Column("throttle", String(64), nullable=True),
    Column("channels", json_text(), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

subscribers_table = Table(
    "notifications_subscribers",
    metadata,
    Column("user_id", BigInteger, primary_key=True, autoincrement=False),
    Column("email", String(320), nullable=True),
    Column("phone", String(20), nullable=True),
    Column("webhook_url", String(2048), nullable=True),
    Column("webhook_secret", String(128), nullable=True),
    Column("locale", String(35), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

topics_table = Table(
    "notifications_topics",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("key", String(100), nullable=False),
    Column("name", String(200), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("key", name="uq_notifications_topics_key"),
)

topic_subscriptions_table = Table(
    "notifications_topic_subscriptions",
    metadata,
    Column(
        "topic_id",
        BigInteger,
        ForeignKey(
            "notifications_topics.id",
            ondelete="CASCADE",
            name="fk_notifications_topic_subscriptions_topic",  # PostgreSQL: 63 characters
        ),
        primary_key=True,
        autoincrement=False,
    ),
    Column("user_id", BigInteger, primary_key=True, autoincrement=False),
    Column("created_at", BigInteger, nullable=False),
)

preferences_table = Table(
    "notifications_preferences",
    metadata,
    Column("user_id", BigInteger, primary_key=True, autoincrement=False),
    Column("disabled", json_text(), nullable=False),  # [[category, channel], ...]
    Column("quiet_start", String(5), nullable=True),
    Column("quiet_end", String(5), nullable=True),
    Column("quiet_timezone", String(64), nullable=True),
    Column("updated_at", BigInteger, nullable=False),
)

events_table = Table(
    "notifications_events",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("caller", String(64), nullable=False),
    Column("idempotency_key", exact_string(255), nullable=True),
    Column("fingerprint", String(64), nullable=False),  # of the request, for key reuse
    Column("template", String(100), nullable=False),
    Column("recipients", json_text(), nullable=False),
    Column("data", json_text(), nullable=False),
    Column("priority", String(16), nullable=False),
    Column("send_at", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("fanout_done", Boolean, nullable=False),
    UniqueConstraint("caller", "idempotency_key", name="uq_notifications_events_caller"),
    Index("ix_notifications_events_created", "created_at"),  # retention
)

messages_table = Table(
    "notifications_messages",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("event_id", BigInteger, nullable=False),
    Column("recipient_id", BigInteger, nullable=False),
    Column("channel", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("priority", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("due_at", BigInteger, nullable=True),
    Column("claimed_at", BigInteger, nullable=True),
    Column("claim", BigInteger, nullable=True),  # the token of the claim holding it
    Column("reason", String(64), nullable=True),
    Column("last_error", String(1000), nullable=True),
    Column("provider_id", String(255), nullable=True),
    Column("digest_key", String(255), nullable=True),
    Column("digest_of", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("event_id", "recipient_id", "channel", name="uq_notifications_messages_event"),
    Index("ix_notifications_messages_due", "status", "due_at"),
    Index("ix_notifications_messages_digest", "digest_key", "status"),
    Index("ix_notifications_messages_digest_of", "digest_of"),
    Index("ix_notifications_messages_updated", "status", "updated_at"),  # retention
)

inbox_items_table = Table(
    "notifications_inbox",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("user_id", BigInteger, nullable=False),
    Column("message_id", BigInteger, nullable=False),
    Column("title", String(500), nullable=True),
    Column("body", long_text(), nullable=False),  # a rendered body may pass 64 KiB
    Column("data", json_text(), nullable=False),
    Column("read_at", BigInteger, nullable=True),
    Column("archived_at", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("message_id", name="uq_notifications_inbox_message_id"),
    Index("ix_notifications_inbox_user", "user_id", "id"),
    Index("ix_notifications_inbox_unread", "user_id", "archived_at", "read_at"),
    Index("ix_notifications_inbox_created", "created_at"),  # retention
)

__all__ = [
    "events_table",
    "inbox_items_table",
    "messages_table",
    "preferences_table",
    "subscribers_table",
    "templates_table",
    "topic_subscriptions_table",
    "topics_table",
]
