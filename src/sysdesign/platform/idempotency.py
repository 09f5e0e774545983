"""``Idempotency-Key`` for writes that move money or stock.

The first request with a key reserves it; its response is stored and every
retry with the same key and the same body gets that response back, marked
``Idempotent-Replayed: true``. The same key with a different body is a client
error (422). A retry that arrives while the first is still running gets 409.
A request that failed with 5xx or an exception releases its key so that it
can be retried. Keys are scoped (per user, per system) and expire after
``ttl_seconds``. For exactly-once, pass the request's own transaction to
``complete`` so the stored response commits with the state change.
"""

from __future__ import annotations

import hashlib
import re
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
LEASE_SECONDS = 60  # an unfinished reservation older than this is taken over

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


def request_fingerprint(method: str, path: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.encode(), b"\0", path.encode(), b"\0", body):
        digest.update(part)
    return digest.hexdigest()


class IdempotencyStore:
    def __init__(self, db: Database, clock: Clock, ttl_seconds: int) -> None:
        self.db = db
        self.clock = clock
        self.ttl_ms = ttl_seconds * 1000

    def _now_ms(self) -> int:
        return int(self.clock.time() * 1000)

    async def reserve(self, scope: str, key: str, request_hash: str) -> StoredResponse | None:
        """Reserve ``key``; ``None`` means go ahead, a ``StoredResponse`` means replay it.

        Raises ``Problem`` 422 for a different body under the same key and 409
        while the first request holding the key is still running.
        """
        now = self._now_ms()
        try:
            async with self.db.begin() as conn:
                await conn.execute(
                    idempotency_table.insert().values(
                        scope=scope, key=key, request_hash=request_hash, created_at=now
                    )
                )
            return None
        except IntegrityError:
            pass
        async with self.db.begin() as conn:
            row = (
                await conn.execute(
                    select(idempotency_table).where(
                        idempotency_table.c.scope == scope, idempotency_table.c.key == key
                    )
                )
            ).first()
            if row is None:  # released between our insert and this read: try once more
                await conn.execute(
                    idempotency_table.insert().values(
                        scope=scope, key=key, request_hash=request_hash, created_at=now
                    )
                )
                return None
            expired = row.created_at < now - self.ttl_ms
            abandoned = row.status is None and row.created_at < now - LEASE_SECONDS * 1000
            if expired or abandoned:
                await conn.execute(
                    update(idempotency_table)
                    .where(idempotency_table.c.scope == scope, idempotency_table.c.key == key)
                    .values(
                        request_hash=request_hash,
                        status=None,
                        body=None,
                        content_type=None,
                        created_at=now,
                    )
                )
                return None
        if row.request_hash != request_hash:
            raise Problem(
                422,
                "This Idempotency-Key was used with a different request body",
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
        response: Response,
        conn: AsyncConnection | None = None,
    ) -> None:
        """Store the response; with ``conn`` it commits with the caller's transaction."""
        stmt = (
            update(idempotency_table)
            .where(idempotency_table.c.scope == scope, idempotency_table.c.key == key)
            .values(
                status=response.status_code,
                body=bytes(response.body),
                content_type=response.headers.get("content-type"),
            )
        )
        if conn is not None:
            await conn.execute(stmt)
            return
        async with self.db.begin() as own:
            await own.execute(stmt)

    async def release(self, scope: str, key: str) -> None:
        async with self.db.begin() as conn:
            await conn.execute(
                delete(idempotency_table).where(
                    idempotency_table.c.scope == scope,
                    idempotency_table.c.key == key,
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
        """Run ``handler`` at most once per ``Idempotency-Key`` (absent key: always run)."""
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
        fingerprint = request_fingerprint(request.method, request.url.path, await request.body())
        stored = await self.reserve(scope, key, fingerprint)
        if stored is not None:
            return stored.to_response()
        try:
            response = await handler()
        except Problem as problem:
            if problem.status >= 500:
                await self.release(scope, key)
                raise
            response = problem.response(request.url.path)
        except BaseException:
            await self.release(scope, key)
            raise
        if response.status_code >= 500:
            await self.release(scope, key)
        else:
            await self.complete(scope, key, response)
        return response
