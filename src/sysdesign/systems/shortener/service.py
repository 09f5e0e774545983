"""The shortener's use cases: create, read, change and delete links; resolve and count visits.

``LinkService`` gets the platform (databases, ids, clock, cache, queue) and
the target policy. It raises the domain's ``LinkInvalid`` (422),
``AliasTaken`` (409) and ``LinkNotFound`` (404: unknown, or another
owner's); the API turns them into problems.

**Reading a redirect.** ``resolve`` goes through ``CacheAside`` on the cache
block: a cached link (or a remembered unknown code, for ``NEGATIVE_TTL``
seconds) is answered with no database query at all. Every change to a link
invalidates its entry; so does creating one, so that a code asked for before
it existed is not answered from the negative cache.

**Counting visits for ``max_visits``.** A link with a visit limit is counted
by one conditional UPDATE on its row (``store.count_visit``), with the visit
event written to the outbox in that same transaction; the database decides,
under the row's lock, which visits fit, so the limit is exact under any
concurrency and survives restarts. The cache's atomic ``incr`` would keep
the database out of the path, but a cache may evict or lose a key at any
moment, and a lost counter would let a used-up link redirect again. Links
without a limit (the usual case) make no database query: their visit event
goes straight to the queue.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from sqlalchemy.exc import IntegrityError

from sysdesign.blocks.cache.aside import CacheAside
from sysdesign.blocks.cache.base import CacheError
from sysdesign.systems.shortener import store
from sysdesign.systems.shortener.domain import (
    CODE_BLOCK_SIZE,
    Link,
    LinkInvalid,
    Redirect,
    TargetPolicy,
    code_for_number,
    is_code_shaped,
    validate_alias,
    validate_limits,
    validate_tags,
    validate_target,
    validate_title,
)

if TYPE_CHECKING:
    from sysdesign.platform.clock import Clock
    from sysdesign.platform.context import Platform
    from sysdesign.platform.db import Database

log = structlog.get_logger(__name__)

VISITS_TOPIC = "shortener.visits"
CACHE_TTL = 300.0
NEGATIVE_TTL = 30.0
_GENERATED_RETRIES = 3


class AliasTaken(Exception):
    """The custom alias is another link's code (409)."""


class LinkNotFound(Exception):
    """No link with this code belongs to the caller (404)."""


class CodeAllocator:
    """Hands out code numbers from blocks reserved on the primary database.

    One block (``block_size`` numbers) per database transaction; numbers are
    unique across processes because blocks are (``store.allocate_block``).
    """

    def __init__(self, db: Database, block_size: int = CODE_BLOCK_SIZE) -> None:
        self._db = db
        self._block_size = block_size
        self._next = 0
        self._end = 0
        self._lock = asyncio.Lock()

    async def next_number(self) -> int:
        async with self._lock:
            if self._next >= self._end:
                async with self._db.begin() as conn:
                    start = await store.allocate_block(conn, self._block_size)
                self._next, self._end = start, start + self._block_size
            number = self._next
            self._next += 1
            return number


@dataclass(frozen=True, slots=True)
class NewLink:
    target: str
    alias: str | None = None
    title: str | None = None
    tags: tuple[str, ...] = ()
    expires_at_ms: int | None = None
    max_visits: int | None = None
    redirect_status: int = 302
    forward_query: bool = False


def _pack(r: Redirect, link_id: int) -> bytes:
    fields = (r.code, r.target, r.status, r.forward_query, r.enabled, r.expires_at_ms)
    return orjson.dumps([link_id, *fields, r.max_visits])


def _unpack(blob: bytes) -> tuple[int, Redirect]:
    link_id, code, target, status, forward, enabled, expires, max_visits = orjson.loads(blob)
    return link_id, Redirect(code, target, status, forward, enabled, expires, max_visits)


class LinkService:
    def __init__(self, platform: Platform, policy: TargetPolicy) -> None:
        self._platform = platform
        self._policy = policy
        self._allocator = CodeAllocator(platform.db.primary)
        self._aside = CacheAside(platform.cache, platform.clock, negative_ttl=NEGATIVE_TTL)

    @property
    def clock(self) -> Clock:
        return self._platform.clock

    def _now_ms(self) -> int:
        return int(self._platform.clock.time() * 1000)

    @staticmethod
    def cache_key(code: str) -> str:
        return f"shortener:link:{code}"

    # --- owners' operations ---------------------------------------------------------

    async def create(self, owner_id: int, new: NewLink, *, host: str | None = None) -> Link:
        """A new link of ``owner_id``. Raises ``LinkInvalid`` or ``AliasTaken``."""
        now = self._now_ms()
        target = validate_target(new.target, self._policy.with_host(host))
        alias = validate_alias(new.alias) if new.alias is not None else None
        validate_limits(now, new.expires_at_ms, new.max_visits, creating=True)
        link = Link(
            id=self._platform.ids.next_id(),
            code=alias or "",
            owner_id=owner_id,
            target=target,
            custom=alias is not None,
            redirect_status=new.redirect_status,
            forward_query=new.forward_query,
            enabled=True,
            title=validate_title(new.title),
            expires_at_ms=new.expires_at_ms,
            max_visits=new.max_visits,
            visits=0,
            created_at_ms=now,
            updated_at_ms=now,
            tags=validate_tags(new.tags),
        )
        for _ in range(_GENERATED_RETRIES):
            if alias is None:
                link = replace(link, code=code_for_number(await self._allocator.next_number()))
            try:
                async with self._platform.unit_of_work(link.code) as uow:
                    await store.insert_link(uow.conn, link)
                    await uow.emit("shortener.links", self._event("created", link), key=link.code)
            except IntegrityError:
                if alias is not None:
                    raise AliasTaken(alias) from None
                # A generated code cannot collide with another generated one; only
                # rows written by other means (an import) can hold it. Take the next.
                log.warning("shortener_generated_code_taken", code=link.code)
                continue
            await self._invalidate(link.code)
            return link
        raise RuntimeError("could not place a generated code")  # pragma: no cover

    async def get(self, owner_id: int, code: str) -> Link:
        if not is_code_shaped(code):
            raise LinkNotFound(code)
        async with self._platform.db.for_key(code).read() as conn:
            link = await store.link_by_code(conn, code)
        if link is None or link.owner_id != owner_id:
            raise LinkNotFound(code)
        return link

    async def list(
        self, owner_id: int, *, tag: str | None, before_id: int | None, limit: int
    ) -> list[Link]:
        """The owner's links, newest first, at most ``limit``, ids below ``before_id``."""

        async def on_shard(db: Database) -> list[Link]:
            async with db.read() as conn:
                return await store.links_of_owner(
                    conn, owner_id, tag=tag, before_id=before_id, limit=limit
                )

        return await self._platform.db.gather_rows(
            on_shard, sort_key=lambda link: link.id, limit=limit, reverse=True
        )

    async def update(
        self, owner_id: int, code: str, changes: dict[str, Any], *, host: str | None = None
    ) -> Link:
        """Apply ``changes`` (fields of ``NewLink`` but alias, plus ``enabled``);
        ``None`` clears ``title``, ``expires_at_ms`` and ``max_visits``."""
        now = self._now_ms()
        values: dict[str, object] = {}
        if "target" in changes:
            values["target"] = validate_target(changes["target"], self._policy.with_host(host))
        if "title" in changes:
            values["title"] = validate_title(changes["title"])
        for name, column in (("expires_at_ms", "expires_at"), ("max_visits", "max_visits")):
            if name in changes:
                values[column] = changes[name]
        validate_limits(
            now, changes.get("expires_at_ms"), changes.get("max_visits"), creating=False
        )
        for name in ("redirect_status", "forward_query", "enabled"):
            if name in changes:
                values[name] = changes[name]
        tags = validate_tags(changes["tags"]) if "tags" in changes else None
        values["updated_at"] = now
        current = await self.get(owner_id, code)
        async with self._platform.unit_of_work(code) as uow:
            await store.update_link(uow.conn, current.id, values, tags)
            link = await store.link_by_code(uow.conn, code)
            if link is None:
                raise LinkNotFound(code)  # deleted meanwhile
            await uow.emit("shortener.links", self._event("updated", link), key=code)
        await self._invalidate(code)
        return link

    async def delete(self, owner_id: int, code: str) -> None:
        current = await self.get(owner_id, code)
        async with self._platform.unit_of_work(code) as uow:
            await store.delete_link(uow.conn, current.id)
            await uow.emit("shortener.links", self._event("deleted", current), key=code)
        await self._invalidate(code)

    # --- the redirect -----------------------------------------------------------------

    async def resolve(self, code: str) -> tuple[int, Redirect] | None:
        """The link's id and redirect, from the cache when it holds them;
        ``None`` for an unknown code (remembered ``NEGATIVE_TTL`` seconds)."""
        if not is_code_shaped(code):
            return None

        async def load() -> bytes | None:
            async with self._platform.db.for_key(code).read() as conn:
                link = await store.link_by_code(conn, code)
            return None if link is None else _pack(link.redirect(), link.id)

        blob = await self._aside.get_or_load(self.cache_key(code), load, CACHE_TTL)
        return None if blob is None else _unpack(blob)

    async def count_limited_visit(self, link_id: int, code: str, visit: dict[str, Any]) -> bool:
        """Count a visit of a link with ``max_visits``; ``False`` once it is used up."""
        async with self._platform.unit_of_work(code) as uow:
            counted = await store.count_visit(uow.conn, code)
            if counted:
                await uow.emit(VISITS_TOPIC, {"link_id": str(link_id), **visit}, key=code)
        return counted

    async def publish_visit(self, link_id: int, code: str, visit: dict[str, Any]) -> None:
        """Send a visit event straight to the queue. A queue that fails loses the
        event (logged), never the redirect: analytics may miss a visit."""
        try:
            await self._platform.queue.publish(
                VISITS_TOPIC, {"link_id": str(link_id), **visit}, key=code
            )
        except Exception as exc:
            log.warning("shortener_visit_not_published", code=code, error=repr(exc))

    # --- helpers ------------------------------------------------------------------------

    async def _invalidate(self, code: str) -> None:
        try:
            await self._aside.invalidate(self.cache_key(code))
        except CacheError as exc:
            # The entry lives at most CACHE_TTL more seconds.
            log.warning("shortener_cache_invalidate_failed", code=code, error=repr(exc))

    def _event(self, kind: str, link: Link) -> dict[str, Any]:
        return {"event": kind, "link_id": str(link.id), "code": link.code,
                "owner_id": str(link.owner_id), "at_ms": self._now_ms()}  # fmt: skip


__all__ = ["AliasTaken", "LinkInvalid", "LinkNotFound", "LinkService", "NewLink"]
