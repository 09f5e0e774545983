from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import BigInteger, Column, MetaData, String, Table, func, select

from sysdesign.platform import outbox
from sysdesign.platform.clock import ManualClock
from sysdesign.platform.context import Platform
from sysdesign.platform.db import Database, ShardRouter, jump_hash, stable_hash
from sysdesign.platform.errors import BackendUnavailable, ConfigurationError
from sysdesign.platform.ids import SnowflakeGenerator
from sysdesign.platform.migrations import current_revisions, migrate, migrate_all
from sysdesign.platform.uow import UnitOfWork
from tests.backends import fresh_database, service_url
from tests.conftest import make_settings

# A table of the tests' own, on its own metadata, to act as "the state change".
test_metadata = MetaData()
notes = Table(
    "test_notes",
    test_metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("owner", String(64), nullable=False),
)


def test_stable_hash_is_fixed_across_processes() -> None:
    # Pinned values: a change here would move every key to another shard.
    assert stable_hash("user:1") == stable_hash("user:1")
    assert stable_hash(42) == stable_hash("42")
    assert jump_hash(stable_hash("user:1"), 1) == 0


def test_jump_hash_spreads_keys_and_moves_few_when_a_shard_is_added() -> None:
    keys = [stable_hash(f"k{i}") for i in range(20_000)]
    before = [jump_hash(k, 4) for k in keys]
    after = [jump_hash(k, 5) for k in keys]
    counts = Counter(before)
    assert all(4_000 < counts[b] < 6_000 for b in range(4))
    moved = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert 0.17 < len(moved) / len(keys) < 0.23  # ~1/5
    assert all(b == 4 for _, b in moved)  # keys only move to the new shard


def test_jump_hash_needs_a_bucket() -> None:
    with pytest.raises(ValueError):
        jump_hash(1, 0)


async def _create_notes(router: ShardRouter) -> None:
    async def create(db: Database) -> None:
        async with db.begin() as conn:
            await conn.run_sync(test_metadata.create_all)

    await router.scatter(create)


async def _exercise_router(router: ShardRouter) -> None:
    await _create_notes(router)
    assert len(router) == 2
    owners = [f"user{i}" for i in range(200)]
    for i, owner in enumerate(owners):
        async with router.for_key(owner).begin() as conn:
            await conn.execute(notes.insert().values(id=i, owner=owner))

    async def count(db: Database) -> int:
        async with db.read() as conn:
            return int((await conn.execute(select(func.count()).select_from(notes))).scalar_one())

    per_shard = await router.scatter(count)
    assert sum(per_shard) == 200
    assert all(n > 50 for n in per_shard)  # both shards hold a real share

    # Each row is on exactly the shard its key maps to.
    async def owners_on(db: Database) -> list[str]:
        async with db.read() as conn:
            return list((await conn.execute(select(notes.c.owner))).scalars())

    for index, found in enumerate(await router.scatter(owners_on)):
        assert all(router.index_for(o) == index for o in found)

    async def newest(db: Database) -> list[tuple[int, str]]:
        async with db.read() as conn:
            rows = await conn.execute(
                select(notes.c.id, notes.c.owner).order_by(notes.c.id.desc()).limit(5)
            )
            return [tuple(r) for r in rows]

    top = await router.gather_rows(newest, sort_key=lambda r: r[0], limit=5, reverse=True)
    assert [r[0] for r in top] == [199, 198, 197, 196, 195]


async def test_shard_router_on_two_sqlite_shards(tmp_path: Path) -> None:
    router = ShardRouter.from_urls(
        [f"sqlite+aiosqlite:///{tmp_path}/s0.db", f"sqlite+aiosqlite:///{tmp_path}/s1.db"]
    )
    try:
        await _exercise_router(router)
    finally:
        await router.dispose()


@pytest.mark.postgres
async def test_shard_router_on_two_postgres_databases() -> None:
    server = service_url("postgres")
    async with fresh_database(server) as a, fresh_database(server) as b:
        router = ShardRouter.from_urls([a, b])
        try:
            await _exercise_router(router)
        finally:
            await router.dispose()


@pytest.fixture
async def migrated(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url)
    await migrate(db)
    async with db.begin() as conn:
        await conn.run_sync(test_metadata.create_all)
    yield db
    await db.dispose()


async def test_migrations_apply_and_are_idempotent(migrated: Database) -> None:
    heads = [
        "0003_outbox_topic",
        "notifications_0003",
        "shortener_0003",
    ]  # the platform's, then each system's branch
    assert sorted(await current_revisions(migrated)) == heads
    await migrate(migrated)  # a second run is a no-op
    assert sorted(await current_revisions(migrated)) == heads


async def test_unit_of_work_commits_state_and_event_together(migrated: Database) -> None:
    clock = ManualClock()
    ids = SnowflakeGenerator(1)
    async with UnitOfWork(migrated, ids, clock) as uow:
        await uow.conn.execute(notes.insert().values(id=1, owner="ana"))
        event_id = await uow.emit("notes.created", {"id": 1}, key="ana")

    async with migrated.read() as conn:
        pending = await outbox.fetch_pending(conn)
    assert [(e.id, e.topic, e.key, e.payload) for e in pending] == [
        (event_id, "notes.created", "ana", {"id": 1})
    ]
    async with migrated.begin() as conn:
        assert await outbox.mark_published(conn, [event_id], now_ms=1) == 1
        assert await outbox.mark_published(conn, [event_id], now_ms=2) == 0
        assert await outbox.fetch_pending(conn) == []


async def test_unit_of_work_rolls_back_state_and_event_together(migrated: Database) -> None:
    clock = ManualClock()
    ids = SnowflakeGenerator(1)
    with pytest.raises(RuntimeError, match="boom"):
        async with UnitOfWork(migrated, ids, clock) as uow:
            await uow.conn.execute(notes.insert().values(id=2, owner="bo"))
            await uow.emit("notes.created", {"id": 2})
            raise RuntimeError("boom")
    async with migrated.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(notes))).scalar_one() == 0
        assert await outbox.fetch_pending(conn) == []


async def test_outbox_is_read_in_write_order(migrated: Database) -> None:
    clock = ManualClock()
    ids = SnowflakeGenerator(1)
    written = []
    for i in range(5):
        async with UnitOfWork(migrated, ids, clock) as uow:
            written.append(await uow.emit("t", {"i": i}))
    async with migrated.read() as conn:
        assert [e.id for e in await outbox.fetch_pending(conn, limit=3)] == written[:3]


async def test_migrate_all_covers_every_shard(tmp_path: Path) -> None:
    router = ShardRouter.from_urls(
        [f"sqlite+aiosqlite:///{tmp_path}/a.db", f"sqlite+aiosqlite:///{tmp_path}/b.db"]
    )
    try:
        await migrate_all(router)
        for db in router.shards:
            assert sorted(await current_revisions(db)) == [
                "0003_outbox_topic",
                "notifications_0003",
                "shortener_0003",
            ]
    finally:
        await router.dispose()


def test_missing_driver_names_the_extra_to_install() -> None:
    with pytest.raises(ConfigurationError, match=r"pip install 'sysdesign\[mysql\]'"):
        Database("mysql+aiomysql://root@127.0.0.1/test")


def test_garbled_database_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="invalid database URL"):
        Database("not a url")


async def test_unreachable_database_fails_start_with_one_clear_line(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, database_url="postgresql+asyncpg://nobody@127.0.0.1:1/none")
    platform = Platform(settings)
    with pytest.raises(BackendUnavailable) as info:
        await platform.start()
    message = str(info.value)
    assert "127.0.0.1:1" in message and "unreachable" in message
    assert "\n" not in message
    await platform.close()


def _schema_drift(connection: object) -> list:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    # Every table the migrations create: the platform's and each system's.
    import sysdesign.platform.tables
    import sysdesign.systems.notifications.tables
    import sysdesign.systems.shortener.stats
    import sysdesign.systems.shortener.store  # noqa: F401
    from sysdesign.platform.db import metadata

    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return [d for d in compare_metadata(context, metadata) if "test_notes" not in repr(d)]


async def test_migrations_match_the_tables_the_code_declares(migrated: Database) -> None:
    async with migrated.engine.connect() as conn:
        assert await conn.run_sync(_schema_drift) == []
