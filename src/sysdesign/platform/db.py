"""SQLAlchemy async engines, the shard router and the unit of work.

SQL is written once with SQLAlchemy Core; dialect differences stay inside the
stores. On SQLite (the embedded default) write transactions start with
``BEGIN IMMEDIATE`` so concurrent writers queue on the busy timeout instead of
failing when a read lock cannot be upgraded; WAL lets readers run beside them.
Within one process, writers to one SQLite database also wait their turn on a
lock of their own (``writerlock.WriterLock``) before they begin: SQLite
admits one writer at a time anyway, and a writer refused by the file lock
sleeps in SQLite's busy handler (up to 100 ms a try) even when the lock came
free long before, where a writer queued on the lock starts the moment the
previous one commits. Writers inside ``writerlock.urgent()`` go first.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import MetaData, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from sysdesign.platform.errors import ConfigurationError
from sysdesign.platform.writerlock import WriterLock

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING_CONVENTION)

_DRIVER_EXTRAS = {"asyncpg": "postgres", "asyncmy": "mysql", "aiomysql": "mysql"}

T = TypeVar("T")


def _check_driver(url: str) -> None:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(f"invalid database URL {url!r}: {exc}") from None
    driver = parsed.get_driver_name()
    extra = _DRIVER_EXTRAS.get(driver)
    if extra is None:
        return
    try:
        __import__(driver)
    except ImportError:
        raise ConfigurationError(
            f"database URL {parsed.render_as_string(hide_password=True)} needs the "
            f"'{driver}' driver: pip install 'sysdesign[{extra}]'"
        ) from None


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An async engine for ``url``, with SQLite set up for durable concurrent use."""
    _check_driver(url)
    parsed = make_url(url)
    try:
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_async_engine(url, connect_args={"timeout": 30})
            _configure_sqlite(engine)
            return engine
        return create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            pool_recycle=1800,
        )
    except NoSuchModuleError as exc:
        raise ConfigurationError(f"unsupported database URL {url!r}: {exc}") from None


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk when it returns; an acknowledged write survives power loss.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        readonly = conn.get_execution_options().get("sysdesign_readonly", False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


class Database:
    """One database (one shard): an engine plus transaction helpers."""

    def __init__(self, url: str, *, name: str = "db0", pool_size: int = 10) -> None:
        self.url = url
        self.name = name
        self.engine = create_engine(url, pool_size=pool_size)
        self.dialect = self.engine.dialect.name
        self._writer = WriterLock() if self.dialect == "sqlite" else None

    @property
    def safe_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed on exit, rolled back on error."""
        # SQLite's writers queue on the lock (see writerlock); other databases need none.
        async with self._writer or nullcontext(), self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction (on SQLite it takes no write lock)."""
        async with self.engine.connect() as conn:
            await conn.execution_options(sysdesign_readonly=True)
            async with conn.begin():
                yield conn

    def on_statement(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` before every statement this engine sends to the
        database (``BEGIN`` included; an executemany counts once): the cost of
        a path is counted, not assumed."""

        def before_cursor_execute(*_args: Any) -> None:
            callback()

        event.listen(self.engine.sync_engine, "before_cursor_execute", before_cursor_execute)

    async def ping(self, timeout: float = 3.0) -> None:
        async def _ping() -> None:
            async with self.read() as conn:
                await conn.execute(text("SELECT 1"))

        await asyncio.wait_for(_ping(), timeout)

    async def dispose(self) -> None:
        await self.engine.dispose()


def stable_hash(key: object) -> int:
    """A 64-bit hash of ``str(key)`` that is the same in every process and release."""
    return int.from_bytes(hashlib.blake2b(str(key).encode(), digest_size=8).digest(), "big")


def jump_hash(key: int, buckets: int) -> int:
    """Jump consistent hash: going from N to N+1 buckets moves only ~1/(N+1) of keys."""
    if buckets <= 0:
        raise ValueError("buckets must be positive")
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        j = int((b + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return b


class ShardRouter:
    """Routes a key to one of N databases; ``scatter`` runs a query on all of them.

    Shard 0 is the *primary*: tables that are not sharded (accounts) live there.
    Every shard has every table, so the outbox row of a change is always written
    in the same transaction as the change, on the shard that holds it.
    """

    def __init__(self, databases: Sequence[Database]) -> None:
        if not databases:
            raise ConfigurationError("at least one database URL is needed")
        self.shards: list[Database] = list(databases)

    @classmethod
    def from_urls(cls, urls: Sequence[str], *, pool_size: int = 10) -> ShardRouter:
        return cls([Database(u, name=f"db{i}", pool_size=pool_size) for i, u in enumerate(urls)])

    @property
    def primary(self) -> Database:
        return self.shards[0]

    def __len__(self) -> int:
        return len(self.shards)

    def index_for(self, key: object) -> int:
        return jump_hash(stable_hash(key), len(self.shards))

    def for_key(self, key: object) -> Database:
        return self.shards[self.index_for(key)]

    async def scatter(self, query: Callable[[Database], Awaitable[T]]) -> list[T]:
        """Run ``query`` on every shard concurrently; results in shard order."""
        return list(await asyncio.gather(*(query(db) for db in self.shards)))

    async def gather_rows(
        self,
        query: Callable[[Database], Awaitable[Sequence[T]]],
        *,
        sort_key: Callable[[T], Any],
        limit: int,
        reverse: bool = False,
    ) -> list[T]:
        """Scatter-gather for a sorted, limited list: each shard returns its top ``limit``,
        the merge keeps the global top ``limit``."""
        parts = await self.scatter(query)
        merged = [row for part in parts for row in part]
        merged.sort(key=sort_key, reverse=reverse)
        return merged[:limit]

    async def dispose(self) -> None:
        await asyncio.gather(*(db.dispose() for db in self.shards))
