"""Alembic migrations, applied to every shard.

The platform's revisions live in ``versions/``; a system adds its own folder
``sysdesign/systems/<system>/migrations`` with a branch label of its name, and
``migrate_all`` upgrades every head.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection

from sysdesign.platform.db import Database, ShardRouter

HERE = Path(__file__).parent
SYSTEMS_DIR = HERE.parent.parent / "systems"


def version_locations() -> list[str]:
    locations = [str(HERE / "versions")]
    for candidate in sorted(SYSTEMS_DIR.glob("*/migrations")):
        if candidate.is_dir():
            locations.append(str(candidate))
    return locations


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("version_locations", " ".join(version_locations()))
    cfg.set_main_option("path_separator", "space")
    return cfg


def _upgrade(connection: Connection, cfg: Config) -> None:
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "heads")


async def migrate(database: Database) -> None:
    cfg = alembic_config()
    async with database.engine.begin() as conn:
        await conn.run_sync(_upgrade, cfg)


async def migrate_all(router: ShardRouter) -> None:
    # One shard at a time: alembic keeps its migration context in module globals.
    for db in router.shards:
        await migrate(db)


def _current(connection: Connection) -> list[str]:
    from alembic.runtime.migration import MigrationContext

    return list(MigrationContext.configure(connection).get_current_heads())


async def current_revisions(database: Database) -> list[str]:
    async with database.engine.connect() as conn:
        return await conn.run_sync(_current)
