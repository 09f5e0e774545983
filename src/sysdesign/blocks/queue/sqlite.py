"""The embedded default: a durable log in one SQLite file.

Every message is a row numbered by one ``AUTOINCREMENT`` sequence shared by
all topics, so offsets grow within a partition and are never reused. A
publish returns once its commit is on disk; concurrent publishes share one
commit (``platform.sqlitefile.GroupCommit``). Several processes may use one
file; a fetch waiting in one sees another's publishes on its next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sysdesign.blocks.queue.base import (
    Message,
    QueueBackend,
    Record,
    StartPosition,
    UnknownTopic,
    decode_headers,
    encode_headers,
)
from sysdesign.platform.clock import Clock, SystemClock
from sysdesign.platform.sqlitefile import GroupCommit, SqliteFile, path_from_url

# A fetch waiting for messages looks again this often, for other processes' publishes.
POLL_SECONDS = 0.05

SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (
    name TEXT PRIMARY KEY,
    partitions INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    part INTEGER NOT NULL,
    key TEXT,
    payload BLOB NOT NULL,
    headers BLOB,
    ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_partition ON messages (topic, part, seq);
CREATE TABLE IF NOT EXISTS cursors (
    topic TEXT NOT NULL,
    grp TEXT NOT NULL,
    part INTEGER NOT NULL,
    acked INTEGER NOT NULL,
    delivered INTEGER NOT NULL,
    redeliver_below INTEGER NOT NULL DEFAULT 0,
    rounds INTEGER NOT NULL DEFAULT 0,
    owner TEXT,
    expires REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (topic, grp, part)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS members (
    topic TEXT NOT NULL,
    grp TEXT NOT NULL,
    member TEXT NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (topic, grp, member)
) WITHOUT ROWID;
"""

_Batch = tuple[str, Sequence[Record]]


class SqliteQueueBackend(QueueBackend):
    name = "sqlite"
    durable = True

    def __init__(self, path: str | Path, clock: Clock | None = None) -> None:
        self.path = str(path)
        self._clock = clock or SystemClock()
        self._file = SqliteFile(path, SCHEMA, name="queue-sqlite")
        self._write = self._file.write
        self._read = self._file.read
        self._appends: GroupCommit[_Batch, list[int]] = GroupCommit(
            self._file, self._insert, self._wake
        )
        self._appended = asyncio.Event()
        self._fetched: dict[tuple[str, str, int], int] = {}
        self._topics: dict[str, int] = {}

    @classmethod
    def from_url(cls, url: str, clock: Clock | None = None) -> SqliteQueueBackend:
        return cls(path_from_url(url), clock)

    async def connect(self) -> None:
        await self._file.open()

    async def close(self) -> None:
        await self._file.close()

    def _wake(self) -> None:
        self._appended.set()
        self._appended = asyncio.Event()

    async def ping(self) -> None:
        await self._read(lambda c: c.execute("SELECT 1").fetchone())

    async def destroy(self) -> None:
        def run(conn: sqlite3.Connection) -> None:
            for table in ("messages", "cursors", "members", "topics"):
                conn.execute(f"DELETE FROM {table}")

        await self._write(run)
        self._topics.clear()
        self._fetched.clear()

    # --- topics and the log -----------------------------------------------------

    async def create_topic(self, topic: str, partitions: int) -> int:
        def run(conn: sqlite3.Connection) -> int:
            conn.execute(
                "INSERT OR IGNORE INTO topics (name, partitions) VALUES (?, ?)", (topic, partitions)
            )
            return conn.execute(
                "SELECT partitions FROM topics WHERE name = ?", (topic,)
            ).fetchone()[0]

        count = await self._write(run)
        self._topics[topic] = count
        return count

    async def partition_count(self, topic: str) -> int | None:
        if topic in self._topics:
            return self._topics[topic]
        row = await self._read(
            lambda c: c.execute("SELECT partitions FROM topics WHERE name = ?", (topic,)).fetchone()
        )
        if row is None:
            return None
        self._topics[topic] = row[0]
        return row[0]

    async def list_topics(self) -> list[str]:
        rows = await self._read(
            lambda c: c.execute("SELECT name FROM topics ORDER BY name").fetchall()
        )
        return [r[0] for r in rows]

    async def message_count(self, topic: str) -> int:
        await self._require(topic)
        return await self._read(
            lambda c: c.execute(
                "SELECT count(*) FROM messages WHERE topic = ?", (topic,)
            ).fetchone()[0]
        )

    async def _require(self, topic: str) -> int:
        count = await self.partition_count(topic)
        if count is None:
            raise UnknownTopic(topic)
        return count

    async def append(self, topic: str, records: Sequence[Record]) -> list[int]:
        await self._require(topic)
        return await self._appends.submit((topic, records))

    @staticmethod
    def _insert(conn: sqlite3.Connection, batch: list[_Batch]) -> list[list[int]]:
        rows = [
            (topic, r.partition, r.key, r.payload, encode_headers(r.headers), r.timestamp)
            for topic, records in batch
            for r in records
        ]
        conn.executemany(
            "INSERT INTO messages (topic, part, key, payload, headers, ts) VALUES (?,?,?,?,?,?)",
            rows,
        )
        # The write lock is held, so this transaction's AUTOINCREMENT values are
        # consecutive and end at the last one.
        last = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
        seq = last - len(rows) + 1
        results = []
        for _, records in batch:
            results.append(list(range(seq, seq + len(records))))
            seq += len(records)
        return results

    def _rows(self, topic: str, rows: list[tuple[Any, ...]]) -> list[Message]:
        return [
            Message(topic, part, seq, key, payload, decode_headers(headers), ts)
            for seq, part, key, payload, headers, ts in rows
        ]

    async def read(self, topic: str, partition: int, start: int, limit: int) -> list[Message]:
        rows = await self._read(
            lambda c: c.execute(
                "SELECT seq, part, key, payload, headers, ts FROM messages"
                " WHERE topic = ? AND part = ? AND seq >= ? ORDER BY seq LIMIT ?",
                (topic, partition, start, limit),
            ).fetchall()
        )
        return self._rows(topic, rows)

    async def offset_for_time(self, topic: str, partition: int, timestamp: float) -> int:
        row = await self._read(
            lambda c: c.execute(
                "SELECT min(seq) FROM messages WHERE topic = ? AND part = ? AND ts >= ?",
                (topic, partition, timestamp),
            ).fetchone()
        )
        return row[0] if row[0] is not None else await self.end_offset(topic, partition)

    async def end_offset(self, topic: str, partition: int) -> int:
        row = await self._read(
            lambda c: c.execute(
                "SELECT max(seq) FROM messages WHERE topic = ? AND part = ?", (topic, partition)
            ).fetchone()
        )
        return (row[0] or 0) + 1

    # --- consumer groups --------------------------------------------------------

    async def create_group(self, topic: str, group: str, start: StartPosition) -> None:
        count = await self._require(topic)

        def run(conn: sqlite3.Connection) -> None:
            for p in range(count):
                at = 0
                if start == "latest":
                    at = (
                        conn.execute(
                            "SELECT max(seq) FROM messages WHERE topic = ? AND part = ?", (topic, p)
                        ).fetchone()[0]
                        or 0
                    ) + 1
                conn.execute(
                    "INSERT OR IGNORE INTO cursors (topic, grp, part, acked, delivered)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (topic, group, p, at, at),
                )

        await self._write(run)

    async def list_groups(self, topic: str) -> list[str]:
        await self._require(topic)
        rows = await self._read(
            lambda c: c.execute(
                "SELECT DISTINCT grp FROM cursors WHERE topic = ? ORDER BY grp", (topic,)
            ).fetchall()
        )
        return [r[0] for r in rows]

    async def heartbeat(self, topic: str, group: str, member: str, ttl: float) -> list[str]:
        now = self._clock.time()

        def run(conn: sqlite3.Connection) -> list[str]:
            conn.execute(
                "INSERT INTO members (topic, grp, member, expires) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (topic, grp, member) DO UPDATE SET expires = excluded.expires",
                (topic, group, member, now + ttl),
            )
            conn.execute(
                "DELETE FROM members WHERE topic = ? AND grp = ? AND expires <= ?",
                (topic, group, now),
            )
            return self._live(conn, topic, group, now)

        return await self._write(run)

    @staticmethod
    def _live(conn: sqlite3.Connection, topic: str, group: str, now: float) -> list[str]:
        rows = conn.execute(
            "SELECT member FROM members WHERE topic = ? AND grp = ? AND expires > ?"
            " ORDER BY member",
            (topic, group, now),
        ).fetchall()
        return [r[0] for r in rows]

    async def members(self, topic: str, group: str) -> list[str]:
        now = self._clock.time()
        return await self._read(lambda c: self._live(c, topic, group, now))

    async def leave(self, topic: str, group: str, member: str) -> None:
        await self._write(
            lambda c: c.execute(
                "DELETE FROM members WHERE topic = ? AND grp = ? AND member = ?",
                (topic, group, member),
            )
        )

    async def acquire(
        self, topic: str, group: str, partition: int, member: str, ttl: float
    ) -> bool:
        now = self._clock.time()

        def run(conn: sqlite3.Connection) -> int | None:
            # Delivered-but-unacknowledged messages become redeliveries, one round more.
            row = conn.execute(
                "UPDATE cursors SET owner = ?, expires = ?,"
                " rounds = CASE WHEN delivered > acked THEN rounds + 1 ELSE rounds END,"
                " redeliver_below = CASE WHEN delivered > acked THEN delivered"
                " ELSE redeliver_below END"
                " WHERE topic = ? AND grp = ? AND part = ?"
                " AND (owner IS NULL OR owner = ? OR expires <= ?) RETURNING acked",
                (member, now + ttl, topic, group, partition, member, now),
            ).fetchone()
            return None if row is None else row[0]

        acked = await self._write(run)
        if acked is None:
            return False
        self._fetched[(topic, group, partition)] = acked
        return True

    async def renew(self, topic: str, group: str, partition: int, member: str, ttl: float) -> bool:
        now = self._clock.time()
        changed = await self._write(
            lambda c: (
                c.execute(
                    "UPDATE cursors SET expires = ? WHERE topic = ? AND grp = ? AND part = ?"
                    " AND owner = ? AND expires > ?",
                    (now + ttl, topic, group, partition, member, now),
                ).rowcount
            )
        )
        return changed == 1

    async def release(self, topic: str, group: str, partition: int, member: str) -> None:
        await self._write(
            lambda c: c.execute(
                "UPDATE cursors SET owner = NULL, expires = 0"
                " WHERE topic = ? AND grp = ? AND part = ? AND owner = ?",
                (topic, group, partition, member),
            )
        )

    async def owners(self, topic: str, group: str) -> dict[int, str]:
        now = self._clock.time()
        rows = await self._read(
            lambda c: c.execute(
                "SELECT part, owner FROM cursors WHERE topic = ? AND grp = ?"
                " AND owner IS NOT NULL AND expires > ?",
                (topic, group, now),
            ).fetchall()
        )
        return dict(rows)

    async def fetch(
        self, topic: str, group: str, partition: int, member: str, limit: int, wait: float
    ) -> list[Message]:
        cursor_key = (topic, group, partition)
        start = self._fetched.get(cursor_key)
        if start is None:
            return []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        query = (
            "SELECT seq, part, key, payload, headers, ts FROM messages"
            " WHERE topic = ? AND part = ? AND seq >= ? ORDER BY seq LIMIT ?"
        )

        def select(c: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], tuple[int, int]]:
            found = c.execute(query, (topic, partition, start, limit)).fetchall()
            marks = c.execute(
                "SELECT redeliver_below, rounds FROM cursors WHERE topic = ? AND grp = ?"
                " AND part = ?",
                (topic, group, partition),
            ).fetchone()
            return found, marks

        while True:
            appended = self._appended
            rows, (redeliver_below, rounds) = await self._read(select)
            if rows or loop.time() >= deadline:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(appended.wait(), min(POLL_SECONDS, deadline - loop.time()))
        if not rows:
            return []
        end = rows[-1][0] + 1
        self._fetched[cursor_key] = end
        # Record the delivery before anyone handles it, so that if this holder
        # dies the next one counts the attempt.
        await self._write(
            lambda c: c.execute(
                "UPDATE cursors SET delivered = max(delivered, ?)"
                " WHERE topic = ? AND grp = ? AND part = ?",
                (end, topic, group, partition),
            )
        )
        messages = self._rows(topic, rows)
        return [
            Message(
                m.topic,
                m.partition,
                m.offset,
                m.key,
                m.payload,
                m.headers,
                m.timestamp,
                attempt=1 + rounds if m.offset < redeliver_below else 1,
            )
            for m in messages
        ]

    async def ack(
        self, topic: str, group: str, partition: int, member: str, messages: Sequence[Message]
    ) -> None:
        if not messages:
            return
        through = max(m.offset for m in messages) + 1
        await self._write(
            lambda c: c.execute(
                "UPDATE cursors SET acked = ?, delivered = max(delivered, ?),"
                " rounds = CASE WHEN ? >= redeliver_below THEN 0 ELSE rounds END"
                " WHERE topic = ? AND grp = ? AND part = ? AND acked < ?",
                (through, through, through, topic, group, partition, through),
            )
        )

    async def seek(self, topic: str, group: str, partition: int, offset: int) -> None:
        at = max(offset, 0)
        await self._write(
            lambda c: c.execute(
                "UPDATE cursors SET acked = ?, delivered = ?, redeliver_below = 0, rounds = 0"
                " WHERE topic = ? AND grp = ? AND part = ?",
                (at, at, topic, group, partition),
            )
        )
        self._fetched.pop((topic, group, partition), None)

    async def position(self, topic: str, group: str, partition: int) -> int:
        def run(c: sqlite3.Connection) -> tuple[int | None, int] | None:
            return c.execute(
                "SELECT (SELECT min(m.seq) FROM messages m WHERE m.topic = k.topic"
                " AND m.part = k.part AND m.seq >= k.acked), k.acked FROM cursors k"
                " WHERE k.topic = ? AND k.grp = ? AND k.part = ?",
                (topic, group, partition),
            ).fetchone()

        found = await self._read(run)
        if found is None:
            raise UnknownTopic(topic)
        first, acked = found
        if first is not None:
            return first
        return max(acked, await self.end_offset(topic, partition))

    async def lag(self, topic: str, group: str) -> dict[int, int]:
        rows = await self._read(
            lambda c: c.execute(
                "SELECT k.part, (SELECT count(*) FROM messages m WHERE m.topic = k.topic"
                " AND m.part = k.part AND m.seq >= k.acked) FROM cursors k"
                " WHERE k.topic = ? AND k.grp = ? ORDER BY k.part",
                (topic, group),
            ).fetchall()
        )
        return dict(rows)
