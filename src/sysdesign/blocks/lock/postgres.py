"""``PostgresTicketStore``: the lock queues as rows of a PostgreSQL database.

``postgresql://[user[:password]@]host[:port]/database?pool_size=10&timeout=5``
(also ``postgres://`` and ``postgresql+asyncpg://``): ``pool_size`` and
``timeout`` are ours, any other option goes to asyncpg.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from sysdesign.blocks.lock.base import LockUnavailable, Mode, Ticket, TicketStore
from sysdesign.platform.errors import ConfigurationError

CHANNEL = "lock_tickets_gone"
POLL_SECONDS = 0.05
TIMEOUT_SECONDS = 5.0
POOL_SIZE = 10
MAX_RELISTEN_DELAY = 5.0
_SETTINGS = {"application_name": "sysdesign-locks"}

# Concurrent first connects (several processes starting at once) would race in
# the catalog; a transaction-scoped advisory lock makes them take turns.
SCHEMA = f"""
SELECT pg_advisory_xact_lock(hashtext('sysdesign.lock schema'));
CREATE TABLE IF NOT EXISTS lock_names (
    name TEXT PRIMARY KEY,
    last_token BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS lock_tickets (
    name TEXT NOT NULL,
    token BIGINT NOT NULL,
    id TEXT NOT NULL UNIQUE,
    mode TEXT NOT NULL,
    permits INTEGER NOT NULL,
    owner TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (name, token)
);
CREATE OR REPLACE FUNCTION lock_tickets_notify_gone() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', OLD.id);
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER lock_tickets_gone AFTER DELETE ON lock_tickets
    FOR EACH ROW EXECUTE FUNCTION lock_tickets_notify_gone();
"""
_SCHEMA_PRESENT = (
    "SELECT to_regclass('lock_names') IS NOT NULL AND EXISTS "
    "(SELECT 1 FROM pg_trigger WHERE tgname = 'lock_tickets_gone' "
    "AND tgrelid = to_regclass('lock_tickets'))"
)

# Every statement below is its own transaction, so now() is one instant of the
# database's clock for the whole statement: the expired rows a statement purges
# and the live rows it touches can never overlap.
_COLUMNS = "name, id, token, mode, permits, owner, date_part('epoch', expires_at) AS expires_at"
# Rows another transaction is deleting or renewing are skipped, not waited for:
# a statement then waits on at most one contended row (its own ticket, or the
# name's counter), so these statements never deadlock one another.
_PURGE = """purged AS (
    DELETE FROM lock_tickets WHERE name = $1 AND token IN (
        SELECT token FROM lock_tickets
        WHERE name = $1 AND expires_at <= now() {extra}
        FOR UPDATE SKIP LOCKED))"""
# The counter row's lock is held until commit, so tickets of a name commit in
# token order: a reader that sees a ticket sees every earlier one too.
ENQUEUE = f"""
WITH {_PURGE.format(extra="")},
counter AS (
    INSERT INTO lock_names (name, last_token) VALUES ($1, 1)
    ON CONFLICT (name) DO UPDATE SET last_token = lock_names.last_token + 1
    RETURNING last_token)
INSERT INTO lock_tickets (name, token, id, mode, permits, owner, expires_at)
SELECT $1, last_token, $2, $3, $4, $5, now() + $6::float8 * interval '1 second' FROM counter
RETURNING {_COLUMNS}"""
QUEUE = f"""
SELECT {_COLUMNS} FROM lock_tickets WHERE name = $1 AND expires_at > now() ORDER BY token"""
REFRESH = f"""
WITH {_PURGE.format(extra="")}
UPDATE lock_tickets SET expires_at = now() + $3::float8 * interval '1 second'
WHERE name = $1 AND id = $2 AND expires_at > now()
RETURNING {_COLUMNS}"""
REMOVE = f"""
WITH {_PURGE.format(extra="AND id <> $2")}
DELETE FROM lock_tickets WHERE name = $1 AND id = $2 RETURNING expires_at > now()"""
LIVE = "SELECT id FROM lock_tickets WHERE id = ANY($1::text[]) AND expires_at > now()"
NAMES = "SELECT DISTINCT name FROM lock_tickets WHERE expires_at > now() ORDER BY name"

_FAILURES = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


def _ticket(row: Any) -> Ticket:
    name, ticket_id, token, mode, permits, owner, expires_at = row
    return Ticket(name, ticket_id, token, mode, permits, owner, expires_at)


def server_of(dsn: str) -> str:
    """``user@host:port/database`` of ``dsn``: the server, without password, for messages."""
    parts = urlsplit(dsn)
    user = f"{parts.username}@" if parts.username else ""
    return f"{user}{parts.netloc.rpartition('@')[2] or 'localhost'}{parts.path}"


class PostgresTicketStore(TicketStore):
    """The ticket queues in two tables it owns, ``lock_names`` (each name's
    last token) and ``lock_tickets`` (the live queues), created with a trigger
    at ``connect`` if absent (PostgreSQL 14 or later).

    Guarantees: ``enqueue`` is one statement that bumps the name's counter
    (``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``) and inserts the ticket
    in the same transaction, so tokens strictly increase per name and are
    never reused, even after every ticket is gone. Leases are rows with an
    expiry by the database's clock (not session advisory locks, which would
    die with a pooled connection, or live on in one): an expired ticket is
    never in ``queue`` and cannot be refreshed, and writes purge them.
    Every delete notifies ``lock_tickets_gone`` with the ticket's id in the
    deleting transaction; one listening connection per store wakes only the
    waiters watching that ticket, and a poll every ``poll_interval`` seconds
    catches expiry and anything a lost listener missed (it reconnects).

    Errors: ``LockUnavailable``, one line naming the server, when it cannot
    be reached (``connect`` included) or a statement fails or takes longer
    than ``timeout``; ``ConfigurationError`` for a bad URL option.
    """

    name = "postgres"

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int = POOL_SIZE,
        timeout: float = TIMEOUT_SECONDS,
        poll_interval: float = POLL_SECONDS,
    ) -> None:
        self._dsn = dsn
        self.server = server_of(dsn)
        self._pool_size = pool_size
        self._timeout = timeout
        self._poll = poll_interval
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._watchers: dict[str, set[asyncio.Event]] = {}  # ticket id -> its waiters
        self._poller: asyncio.Task[None] | None = None
        self._relisten: asyncio.Task[None] | None = None

    @property
    def listening(self) -> bool:
        """Whether the notification connection is up (else waiters rely on the poll)."""
        return self._listener is not None and not self._listener.is_closed()

    @classmethod
    def from_url(cls, url: str) -> PostgresTicketStore:
        parts = urlsplit(url)
        scheme = parts.scheme.removesuffix("+asyncpg")
        options: dict[str, Any] = {}
        kept: list[tuple[str, str]] = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key in ("pool_size", "timeout"):
                try:
                    number = int(value) if key == "pool_size" else float(value)
                except ValueError:
                    number = 0
                if number <= 0:
                    raise ConfigurationError(f"lock URL option {key} must be a positive number")
                options[key] = number
            else:
                kept.append((key, value))
        dsn = urlunsplit((scheme, parts.netloc, parts.path, urlencode(kept), ""))
        return cls(dsn, **options)

    def _unavailable(self, exc: BaseException) -> LockUnavailable:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        return LockUnavailable(f"postgres at {self.server} is unavailable: {reason}")

    async def connect(self) -> None:
        if self._pool is not None:
            return
        try:
            pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self._pool_size,
                timeout=self._timeout,
                command_timeout=self._timeout,
                server_settings=_SETTINGS,
            )
        except _FAILURES as exc:
            raise self._unavailable(exc) from None
        try:
            async with pool.acquire(timeout=self._timeout) as conn:
                if not await conn.fetchval(_SCHEMA_PRESENT):
                    async with conn.transaction():
                        await conn.execute(SCHEMA)
            await self._listen()
        except BaseException as exc:
            pool.terminate()
            if isinstance(exc, _FAILURES):
                raise self._unavailable(exc) from None
            raise
        self._pool = pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        for task in (self._poller, self._relisten):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.terminate()  # nothing to finish on it, and it may be the dead one
        self._wake_all()  # waiters look again and learn the store is closed
        try:
            await asyncio.wait_for(pool.close(), self._timeout)
        except (TimeoutError, *_FAILURES):
            pool.terminate()

    async def ping(self) -> None:
        await self._call("fetchval", "SELECT 1")

    async def _call(self, method: str, sql: str, *args: Any) -> Any:
        pool = self._pool
        if pool is None:
            raise LockUnavailable(f"postgres at {self.server}: the lock store is not connected")
        try:
            async with pool.acquire(timeout=self._timeout) as conn:
                return await getattr(conn, method)(sql, *args)
        except _FAILURES as exc:
            raise self._unavailable(exc) from None

    async def enqueue(
        self, name: str, ticket_id: str, mode: Mode, permits: int, owner: str, ttl: float
    ) -> Ticket:
        run = asyncio.ensure_future(
            self._call("fetchrow", ENQUEUE, name, ticket_id, mode, permits, owner, ttl)
        )
        try:
            row = await asyncio.shield(run)
        except asyncio.CancelledError:
            # The server may commit the ticket after the caller gave up on it: the
            # caller never learns its id, so take it out here, or it would block
            # the queue until its TTL ran out.
            await asyncio.shield(self._take_back(run, name, ticket_id))
            raise
        return _ticket(row)

    async def _take_back(self, run: asyncio.Future[Any], name: str, ticket_id: str) -> None:
        with contextlib.suppress(Exception):
            await run
            await self.remove(name, ticket_id)

    async def queue(self, name: str) -> list[Ticket]:
        # Expired rows are left for the next write to remove: reads stay reads.
        return [_ticket(row) for row in await self._call("fetch", QUEUE, name)]

    async def refresh(self, name: str, ticket_id: str, ttl: float) -> Ticket | None:
        row = await self._call("fetchrow", REFRESH, name, ticket_id, ttl)
        return None if row is None else _ticket(row)

    async def remove(self, name: str, ticket_id: str) -> bool:
        return bool(await self._call("fetchval", REMOVE, name, ticket_id))

    async def names(self) -> list[str]:
        return [str(row[0]) for row in await self._call("fetch", NAMES)]

    async def wait(self, name: str, watched: Sequence[Ticket], timeout: float) -> None:
        if timeout <= 0 or self._pool is None:
            return
        if not watched:
            await asyncio.sleep(timeout)
            return
        event = asyncio.Event()
        ids = {t.id for t in watched}
        for ticket_id in ids:
            self._watchers.setdefault(ticket_id, set()).add(event)
        try:
            self._keep_watching()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
        finally:
            for ticket_id in ids:
                events = self._watchers.get(ticket_id)
                if events is not None:
                    events.discard(event)
                    if not events:
                        del self._watchers[ticket_id]

    # --- waking waiters -----------------------------------------------------------

    def _wake(self, ticket_id: str) -> None:
        for event in self._watchers.pop(ticket_id, ()):
            event.set()

    def _wake_all(self) -> None:
        for ticket_id in list(self._watchers):
            self._wake(ticket_id)

    def _keep_watching(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll_watched(), name="locks-postgres-poll")
        listener = self._listener
        if listener is not None and listener.is_closed():
            self._listener_lost(listener)

    async def _poll_watched(self) -> None:
        """One query per interval for every watched ticket of this store: the
        expiry of watched tickets, and departures a notification missed."""
        while self._pool is not None:
            await asyncio.sleep(self._poll)
            ids = list(self._watchers)
            if not ids:
                return
            try:
                live = {row[0] for row in await self._call("fetch", LIVE, ids)}
            except LockUnavailable:
                continue  # waiters time out and meet the error on their next call
            for ticket_id in ids:
                if ticket_id not in live:
                    self._wake(ticket_id)

    async def _listen(self) -> None:
        conn = await asyncpg.connect(self._dsn, timeout=self._timeout, server_settings=_SETTINGS)
        try:
            await conn.add_listener(CHANNEL, self._notified)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._listener_lost)
        self._listener = conn

    def _notified(self, conn: object, pid: int, channel: str, payload: object) -> None:
        self._wake(str(payload))

    def _listener_lost(self, conn: object) -> None:
        if conn is not self._listener or self._pool is None:
            return  # closing, or an old connection
        self._listener = None
        # Notifications sent while nobody listened are lost: everyone looks again.
        self._wake_all()
        if self._relisten is None or self._relisten.done():
            self._relisten = asyncio.create_task(self._listen_again(), name="locks-postgres-listen")

    async def _listen_again(self) -> None:
        delay = self._poll
        while self._pool is not None and self._listener is None:
            try:
                await self._listen()
            except _FAILURES:
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RELISTEN_DELAY)
                continue
            self._wake_all()  # a release between the loss and now was not heard
