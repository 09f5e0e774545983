"""``Idempotency-Key`` for writes that move money or stock.

The first request with a key reserves it; its response is stored and every
retry with the same key and the same request (method, path, query, body) gets
that response back, marked ``Idempotent-Replayed: true``. The same key with a
different request is a client error (422). A retry that arrives while the
first is still running gets 409. A request that failed with 5xx, an exception,
or a transient 4xx (408, 409, 425, 429) releases its key so that it can be
retried. Keys are scoped (per user, per system) and expire after
``ttl_seconds``.

Each reservation carries an owner token: only its owner can complete or
release it, and taking over an abandoned reservation (older than
``lease_seconds``) is a conditional update that exactly one contender wins.

``run()`` stores the response in a transaction of its own, after the
handler's: a crash between the two leaves the key reserved, and after the
lease another request may run the handler again (at-least-once). For exactly
once, call ``reserve`` yourself and pass the handler's own transaction to
``complete`` so the stored response commits with the state change.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Table,
    delete,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import Response

from sysdesign.platform.clock import Clock
from sysdesign.platform.db import Database, metadata
from sysdesign.platform.http import Problem

HEADER = "Idempotency-Key"
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
LEASE_SECONDS = 60  # default: an unfinished reservation older than this is taken over
_TRANSIENT = frozenset({408, 409, 425, 429})  # answers a retry may well change

idempotency_table = Table(
    "idempotency_keys",
    metadata,
    Column("scope", String(128), nullable=False),
    Column("key", String(255), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("status", Integer, nullable=True),  # NULL while the first request runs
    Column("body", LargeBinary, nullable=True),
    Column("content_type", String(128), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("owner", String(32), nullable=False),
    PrimaryKeyConstraint("scope", "key"),
)


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    body: bytes
    content_type: str | None

    def to_response(self) -> Response:
        return Response(
            self.body,
            status_code=self.status,
            media_type=self.content_type,
            headers={"Idempotent-Replayed": "true"},
        )


@dataclass(frozen=True, slots=True)
class Reservation:
    """The key is ours: run the request, then ``complete`` or ``release`` with ``owner``."""

    owner: str


def request_fingerprint(method: str, path: str, query: bytes, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), query, body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class IdempotencyStore:
    def __init__(
        self, db: Database, clock: Clock, ttl_seconds: int, lease_seconds: int = LEASE_SECONDS
    ) -> None:
        self.db = db
        self.clock = clock
        self.ttl_ms = ttl_seconds * 1000
        self.lease_ms = lease_seconds * 1000

    def _now_ms(self) -> int:
        return int(self.clock.time() * 1000)

    def _where(self, scope: str, key: str) -> tuple:  # type: ignore[type-arg]
        t = idempotency_table
        return (t.c.scope == scope, t.c.key == key)

    async def reserve(
        self, scope: str, key: str, request_hash: str
    ) -> Reservation | StoredResponse:
        """Reserve ``key``: a ``Reservation`` means go ahead, a ``StoredResponse`` means
        replay it. Raises ``Problem`` 422 for a different request under the same key and
        409 while the request holding the key is still running."""
        for _ in range(3):
            outcome = await self._try_reserve(scope, key, request_hash)
            if outcome is not None:
                return outcome
        raise Problem(
            409,
            "This Idempotency-Key is contended; retry",
            slug="idempotency-key-in-use",
            title="Request in progress",
            headers={"Retry-After": "1"},
        )

    async def _try_reserve(
        self, scope: str, key: str, request_hash: str
    ) -> Reservation | StoredResponse | None:
        now = self._now_ms()
        owner = secrets.token_hex(16)
        try:
            async with self.db.begin() as conn:
                await conn.execute(
                    idempotency_table.insert().values(
                        scope=scope,
                        key=key,
                        request_hash=request_hash,
                        created_at=now,
                        owner=owner,
                    )
                )
            return Reservation(owner)
        except IntegrityError:
            pass
        async with self.db.read() as conn:
            row = (
                await conn.execute(select(idempotency_table).where(*self._where(scope, key)))
            ).first()
        if row is None:
            return None  # released meanwhile: try the insert again
        expired = row.created_at < now - self.ttl_ms
        abandoned = row.status is None and row.created_at < now - self.lease_ms
        if expired or abandoned:
            # Conditional on the row as we saw it: of several contenders, one wins.
            async with self.db.begin() as conn:
                result = await conn.execute(
                    update(idempotency_table)
                    .where(*self._where(scope, key), idempotency_table.c.owner == row.owner)
                    .values(
                        request_hash=request_hash,
                        status=None,
                        body=None,
                        content_type=None,
                        created_at=now,
                        owner=owner,
                    )
                )
            return Reservation(owner) if result.rowcount == 1 else None
        if row.request_hash != request_hash:
            raise Problem(
                422,
                "This Idempotency-Key was used with a different request",
                slug="idempotency-key-reused",
                title="Idempotency key reused",
                field=HEADER,
            )
        if row.status is None:
            raise Problem(
                409,
                "A request with this Idempotency-Key is still being processed",
                slug="idempotency-key-in-use",
                title="Request in progress",
                headers={"Retry-After": "1"},
            )
        return StoredResponse(row.status, row.body or b"", row.content_type)

    async def complete(
        self,
        scope: str,
        key: str,
        reservation: Reservation,
        response: Response,
        conn: AsyncConnection | None = None,
    ) -> bool:
        """Store the response; with ``conn`` it commits with the caller's transaction.

        Returns False when the reservation is no longer ours (it was taken over).
        """
        stmt = (
            update(idempotency_table)
            .where(
                *self._where(scope, key),
                idempotency_table.c.owner == reservation.owner,
                idempotency_table.c.status.is_(None),
            )
            .values(
                status=response.status_code,
                body=bytes(response.body),
                content_type=response.headers.get("content-type"),
            )
        )
        if conn is not None:
            return (await conn.execute(stmt)).rowcount == 1
        async with self.db.begin() as own:
            return (await own.execute(stmt)).rowcount == 1

    async def release(self, scope: str, key: str, reservation: Reservation) -> None:
        async with self.db.begin() as conn:
            await conn.execute(
                delete(idempotency_table).where(
                    *self._where(scope, key),
                    idempotency_table.c.owner == reservation.owner,
                    idempotency_table.c.status.is_(None),
                )
            )

    async def purge_expired(self) -> int:
        async with self.db.begin() as conn:
            result = await conn.execute(
                delete(idempotency_table).where(
                    idempotency_table.c.created_at < self._now_ms() - self.ttl_ms
                )
            )
        return result.rowcount or 0

    async def run(
        self,
        request: Request,
        scope: str,
        handler: Callable[[], Awaitable[Response]],
    ) -> Response:
        """Run ``handler`` once per ``Idempotency-Key`` (absent key: always run)."""
        key = request.headers.get(HEADER)
        if key is None:
            return await handler()
        if not _KEY.match(key):
            raise Problem(
                400,
                "Idempotency-Key must be 1 to 255 printable ASCII characters",
                slug="invalid-idempotency-key",
                title="Invalid Idempotency-Key",
                field=HEADER,
            )
        fingerprint = request_fingerprint(
            request.method,
            request.url.path,
            request.scope.get("query_string", b""),
            await request.body(),
        )
        reservation = await self.reserve(scope, key, fingerprint)
        if isinstance(reservation, StoredResponse):
            return reservation.to_response()
        try:
            response = await handler()
        except Problem as problem:
            if problem.status >= 500 or problem.status in _TRANSIENT:
                await self.release(scope, key, reservation)
                raise
            response = problem.response(request.url.path)
        except BaseException:
            await self.release(scope, key, reservation)
            raise
        storable = hasattr(response, "body")  # a streamed body cannot be replayed
        if response.status_code >= 500 or response.status_code in _TRANSIENT or not storable:
            await self.release(scope, key, reservation)
        else:
            await self.complete(scope, key, reservation, response)
        return response
