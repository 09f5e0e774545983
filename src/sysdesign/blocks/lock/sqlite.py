"""``SqliteTicketStore``: the embedded default, one SQLite file shared by the processes of a host.

Tokens come from a counter row per name, bumped in the same ``BEGIN
IMMEDIATE`` transaction that inserts the ticket, so they never repeat, even
across restarts (the counter outlives the tickets). Expiry is by this host's
wall clock, which every process on it shares. Waiters poll for the tickets
they watch every ``poll_interval`` seconds (other processes' releases), and
a release in this process wakes its waiters at once.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sysdesign.blocks.lock.base import LockUnavailable, Mode, Ticket, TicketStore
from sysdesign.platform.clock import Clock, SystemClock
from sysdesign.platform.sqlitefile import SqliteFile

T = TypeVar("T")
POLL_SECONDS = 0.02

SCHEMA = """
CREATE TABLE IF NOT EXISTS lock_names (
    name TEXT PRIMARY KEY,
    last_token INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lock_tickets (
    name TEXT NOT NULL,
    token INTEGER NOT NULL,
    id TEXT NOT NULL UNIQUE,
    mode TEXT NOT NULL,
    permits INTEGER NOT NULL,
    owner TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (name, token)
) WITHOUT ROWID;
"""
_COLUMNS = "name, id, token, mode, permits, owner, expires_at"


def _ticket(row: tuple[Any, ...]) -> Ticket:
    name, ticket_id, token, mode, permits, owner, expires_at = row
    return Ticket(name, ticket_id, token, mode, permits, owner, expires_at)


class SqliteTicketStore(TicketStore):
    name = "sqlite"

    def __init__(
        self, path: str | Path, clock: Clock | None = None, poll_interval: float = POLL_SECONDS
    ) -> None:
        self.path = str(path)
        self._clock: Clock = clock or SystemClock()
        self._poll = poll_interval
        self._file = SqliteFile(path, SCHEMA, name="locks-sqlite")
        self._local = asyncio.Event()  # set by a release in this process, then replaced
        self._open = False

    async def connect(self) -> None:
        if not self._open:
            await self._file.open()
            self._open = True

    async def close(self) -> None:
        if self._open:
            self._open = False
            await self._file.close()

    async def ping(self) -> None:
        await self._read(lambda conn: conn.execute("SELECT 1").fetchone())

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return await self._file.write(fn)
        except sqlite3.Error as exc:
            raise LockUnavailable(f"lock file {self.path}: {exc}") from None

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return await self._file.read(fn)
        except sqlite3.Error as exc:
            raise LockUnavailable(f"lock file {self.path}: {exc}") from None

    async def enqueue(
        self, name: str, ticket_id: str, mode: Mode, permits: int, owner: str, ttl: float
    ) -> Ticket:
        expires_at = self._clock.time() + ttl

        def run(conn: sqlite3.Connection) -> Ticket:
            (token,) = conn.execute(
                "INSERT INTO lock_names (name, last_token) VALUES (?, 1) "
                "ON CONFLICT (name) DO UPDATE SET last_token = last_token + 1 "
                "RETURNING last_token",
                (name,),
            ).fetchone()
            conn.execute(
                f"INSERT INTO lock_tickets ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, ticket_id, token, mode, permits, owner, expires_at),
            )
            return Ticket(name, ticket_id, token, mode, permits, owner, expires_at)

        return await self._write(run)

    async def queue(self, name: str) -> list[Ticket]:
        now = self._clock.time()

        def run(conn: sqlite3.Connection) -> list[Ticket]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM lock_tickets WHERE name = ? AND expires_at > ? "
                "ORDER BY token",
                (name, now),
            ).fetchall()
            return [_ticket(row) for row in rows]

        # Expired rows are left for the next write to remove: reads stay reads.
        return await self._read(run)

    async def refresh(self, name: str, ticket_id: str, ttl: float) -> Ticket | None:
        now = self._clock.time()

        def run(conn: sqlite3.Connection) -> Ticket | None:
            row = conn.execute(
                f"UPDATE lock_tickets SET expires_at = ? WHERE id = ? AND name = ? "
                f"AND expires_at > ? RETURNING {_COLUMNS}",
                (now + ttl, ticket_id, name, now),
            ).fetchone()
            conn.execute("DELETE FROM lock_tickets WHERE name = ? AND expires_at <= ?", (name, now))
            return None if row is None else _ticket(row)

        return await self._write(run)

    async def remove(self, name: str, ticket_id: str) -> bool:
        now = self._clock.time()

        def run(conn: sqlite3.Connection) -> bool:
            live = conn.execute(
                "DELETE FROM lock_tickets WHERE id = ? AND name = ? RETURNING expires_at",
                (ticket_id, name),
            ).fetchone()
            conn.execute("DELETE FROM lock_tickets WHERE name = ? AND expires_at <= ?", (name, now))
            return live is not None and live[0] > now

        removed = await self._write(run)
        self._local.set()
        self._local = asyncio.Event()
        return bool(removed)

    async def wait(self, name: str, watched: Sequence[Ticket], timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        ids = [t.id for t in watched]
        while True:
            now = self._clock.time()
            if any(t.expires_at <= now for t in watched):
                return
            local = self._local
            left = deadline - loop.time()
            if left <= 0:
                return
            try:
                await asyncio.wait_for(local.wait(), min(self._poll, left))
                return
            except TimeoutError:
                pass
            if ids and await self._any_gone(name, ids):
                return

    async def _any_gone(self, name: str, ids: list[str]) -> bool:
        now = self._clock.time()
        marks = ",".join("?" * len(ids))

        def run(conn: sqlite3.Connection) -> bool:
            (alive,) = conn.execute(
                f"SELECT count(*) FROM lock_tickets WHERE name = ? AND expires_at > ? "
                f"AND id IN ({marks})",
                (name, now, *ids),
            ).fetchone()
            return int(alive) < len(ids)

        return bool(await self._read(run))

    async def names(self) -> list[str]:
        now = self._clock.time()

        def run(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT DISTINCT name FROM lock_tickets WHERE expires_at > ? ORDER BY name", (now,)
            ).fetchall()
            return [str(r[0]) for r in rows]

        return await self._read(run)
