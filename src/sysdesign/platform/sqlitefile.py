"""One SQLite file used from asyncio, with group commit.

The blocks' embedded backends (queue, locks) keep their state in a SQLite
file through the stdlib driver. One writer thread owns the only write
connection, and every write is one ``BEGIN IMMEDIATE`` transaction on it;
reads run on a second thread and connection, which WAL lets proceed while a
write commits. ``synchronous=FULL``: a write returns after its commit is on
disk.

``GroupCommit`` makes durable writes cheap under concurrency: items that
arrive while the writer is busy wait together, and the next transaction
applies all of them, so N concurrent writers pay for about one fsync. Other
processes may open the same file; SQLite serialises their writes and
``busy_timeout`` waits for the lock.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Generic, TypeVar
from urllib.parse import urlsplit

from sysdesign.platform.errors import BackendUnavailable, ConfigurationError

T = TypeVar("T")
Item = TypeVar("Item")
Result = TypeVar("Result")


def path_from_url(url: str) -> str:
    """``sqlite:///relative.db`` and ``sqlite:////absolute.db``, as SQLAlchemy spells them."""
    path = urlsplit(url).path
    path = path[1:] if path.startswith("/") else path
    if not path:
        raise ConfigurationError(f"URL {url!r} names no file: use sqlite:///path/file.db")
    return path


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


class SqliteFile:
    def __init__(self, path: str | Path, schema: str, name: str = "sqlite") -> None:
        self.path = str(path)
        self._schema = schema
        self._name = name
        self._writer: ThreadPoolExecutor | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None

    async def open(self) -> None:
        """Create the file and schema; ``BackendUnavailable`` when it cannot.
        A closed file may be opened again."""
        loop = asyncio.get_running_loop()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix=f"{self._name}-w")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix=f"{self._name}-r")
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._wconn = await loop.run_in_executor(self._writer, _connect, self.path)
            await loop.run_in_executor(self._writer, self._wconn.executescript, self._schema)
            self._rconn = await loop.run_in_executor(self._reader, _connect, self.path)
        except (OSError, sqlite3.Error) as exc:
            raise BackendUnavailable(f"database file {self.path}: {exc}") from None

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for executor, conn in ((self._writer, self._wconn), (self._reader, self._rconn)):
            if conn is not None:
                await loop.run_in_executor(executor, conn.close)
        self._wconn = self._rconn = None
        for executor in (self._writer, self._reader):
            if executor is not None:
                executor.shutdown(wait=False)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one write transaction; an exception rolls it back."""

        def run() -> T:
            conn = self._wconn
            if conn is None:
                raise sqlite3.ProgrammingError(f"{self.path} is not open")
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return await asyncio.get_running_loop().run_in_executor(self._writer, run)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            if self._rconn is None:
                raise sqlite3.ProgrammingError(f"{self.path} is not open")
            return fn(self._rconn)

        return await asyncio.get_running_loop().run_in_executor(self._reader, run)


class GroupCommit(Generic[Item, Result]):
    """``await submit(item)``: applied with every item waiting beside it, in one
    transaction, by ``apply(conn, items) -> results`` (one result per item)."""

    def __init__(
        self,
        file: SqliteFile,
        apply: Callable[[sqlite3.Connection, list[Item]], list[Result]],
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self._file = file
        self._apply = apply
        self._on_commit = on_commit
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._flushing = False
        self._task: asyncio.Task[None] | None = None  # held so it is not collected

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._waiting.append((item, future))
        if not self._flushing:
            self._flushing = True
            self._task = loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                items = [item for item, _ in batch]
                try:
                    results = await self._file.write(
                        lambda conn, items=items: self._apply(conn, items)
                    )
                except BaseException as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
                if self._on_commit is not None:
                    self._on_commit()
        finally:
            self._flushing = False
