"""Alembic environment: always called by ``migrate()`` with an open connection."""

from __future__ import annotations

from alembic import context

import sysdesign.platform.tables  # noqa: F401  (registers every platform table)
from sysdesign.platform.db import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit("run migrations with 'sysdesign migrate', not the alembic command")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
