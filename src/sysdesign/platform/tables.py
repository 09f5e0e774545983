"""Imports every platform table so that ``metadata`` knows them all."""

from sysdesign.platform.accounts.store import refresh_tokens_table, users_table
from sysdesign.platform.idempotency import idempotency_table
from sysdesign.platform.inbox import inbox_table
from sysdesign.platform.outbox import outbox_table

__all__ = [
    "idempotency_table",
    "inbox_table",
    "outbox_table",
    "refresh_tokens_table",
    "users_table",
]
