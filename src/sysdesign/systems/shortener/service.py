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
    validate_link_password,
    validate_tags,
    validate_target,
    validate_title,
)
from sysdesign.systems.shortener.limits import CreationLimiter
from sysdesign.systems.shortener.visits import VisitBatcher

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from sysdesign.platform.clock import Clock
    from sysdesign.platform.context import Platform
    from sysdesign.platform.db import Database

log = structlog.get_logger(__name__)

LINKS_TOPIC = "shortener.links"
VISITS_TOPIC = "shortener.visits"
CACHE_TTL = 300.0
NEGATIVE_TTL = 30.0
_GENERATED_RETRIES = 3


class AliasTaken(Exception):
    """The custom alias is another link's code (409)."""


class LinkNotFound(Exception):
    """No link with this code belongs to the caller (404)."""


async def claim_alias(conn: AsyncConnection, alias: str, owner_id: int) -> None:
    """In the inserting transaction: an alias retired by another owner is taken
    (``AliasTaken``); one the caller retired becomes theirs again."""
    retired_by = await store.retired_alias_owner(conn, alias)
    if retired_by is not None:
        if retired_by != owner_id:
            raise AliasTaken(alias)
        await store.unretire_alias(conn, alias)


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
    password: str | None = None


# The owner of links made without signing in: nobody can list, change or delete them.
ANONYMOUS_OWNER = 0


def _pack(r: Redirect, link_id: int) -> bytes:
    fields = (r.code, r.target, r.status, r.forward_query, r.enabled, r.expires_at_ms)
    return orjson.dumps([link_id, *fields, r.max_visits, r.password_hash])


def _unpack(blob: bytes) -> tuple[int, Redirect]:
    link_id, *fields = orjson.loads(blob)
    return link_id, Redirect(*fields)


class LinkService:
    def __init__(
        self, platform: Platform, policy: TargetPolicy, limiter: CreationLimiter | None = None
    ) -> None:
        self._platform = platform
        self._policy = policy
        self._limiter = limiter
        self._allocator = CodeAllocator(platform.db.primary)
        self._aside = CacheAside(platform.cache, platform.clock, negative_ttl=NEGATIVE_TTL)
        self._batcher: VisitBatcher | None = None

    @property
    def platform(self) -> Platform:
        return self._platform

    @property
    def clock(self) -> Clock:
        return self._platform.clock

    def _now_ms(self) -> int:
        return int(self._platform.clock.time() * 1000)

    @staticmethod
    def cache_key(code: str) -> str:
        return f"shortener:link:{code}"

    # --- owners' operations ---------------------------------------------------------

    async def admit(self, owner_id: int | None, ip: str | None, count: int) -> None:
        """Take ``count`` creations from the caller's limits (429 when used up)."""
        if self._limiter is not None:
            await self._limiter.admit(owner_id, ip, count)

    def prepare(self, owner_id: int, new: NewLink, *, host: str | None = None) -> Link:
        """The link ``new`` describes, validated, without its code when generated
        and without its password. Raises ``LinkInvalid``."""
        now = self._now_ms()
        target = validate_target(new.target, self._policy.with_host(host))
        if owner_id == ANONYMOUS_OWNER:
            for name in ("alias", "password"):
                if getattr(new, name) is not None:
                    raise LinkInvalid(
                        name, f"sign in to give a link {'an' if name == 'alias' else 'a'} {name}"
                    )
        alias = validate_alias(new.alias) if new.alias is not None else None
        if new.password is not None:
            validate_link_password(new.password)
        validate_limits(now, new.expires_at_ms, new.max_visits, creating=True)
        return Link(
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

    async def next_code(self) -> str:
        return code_for_number(await self._allocator.next_number())

    async def create(
        self, owner_id: int, new: NewLink, *, host: str | None = None, ip: str | None = None
    ) -> Link:
        """A new link of ``owner_id``, counted against the creation limits of the
        owner and the address ``ip`` once it is known to be valid. Raises
        ``LinkInvalid``, ``AliasTaken`` or ``Problem(429)``."""
        link = self.prepare(owner_id, new, host=host)
        await self.admit(None if owner_id == ANONYMOUS_OWNER else owner_id, ip, 1)
        if new.password is not None:
            link = replace(link, password_hash=await self._platform.passwords.hash(new.password))
        if not link.custom:
            link = replace(link, code=await self.next_code())
        link = await self.insert(link)
        await self.invalidate(link.code)
        return link

    async def insert(self, link: Link) -> Link:
        """Write the prepared ``link``, its code set, and its ``created`` event in
        one transaction; the link as written (the cache is the caller's to
        invalidate). A generated code found taken is replaced by the next one.
        Raises ``AliasTaken`` for a custom alias held or retired by another."""
        for _ in range(_GENERATED_RETRIES):
            try:
                async with self._platform.unit_of_work(link.code) as uow:
                    if link.custom:
                        await claim_alias(uow.conn, link.code, link.owner_id)
                    await store.insert_link(uow.conn, link)
                    await uow.emit(LINKS_TOPIC, self.event("created", link), key=link.code)
            except IntegrityError:
                if link.custom:
                    raise AliasTaken(link.code) from None
                # A generated code cannot collide with another generated one; only
                # rows written by other means (an import) can hold it. Take the next.
                log.warning("shortener_generated_code_taken", code=link.code)
                link = replace(link, code=await self.next_code())
                continue
            return link
        raise RuntimeError("could not place a generated code")  # pragma: no cover

    async def get(self, owner_id: int, code: str) -> Link:
        """The caller's link; ``LinkNotFound`` when unknown or another owner's."""
        link = await self.find(code)
        if link.owner_id != owner_id:
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
        if "password" in changes:
            password = changes["password"]
            values["password_hash"] = (
                None
                if password is None
                else await self._platform.passwords.hash(validate_link_password(password))
            )
        values["updated_at"] = now
        current = await self.get(owner_id, code)
        return await self._change(current, values, tags, "updated")

    async def delete(self, owner_id: int, code: str) -> None:
        """Delete the link. A custom alias stays retired for its owner: nobody
        else can take it, so a short URL already printed or shared never leads
        to another person's target. Generated codes are never handed out
        again anyway (the counter only moves forward)."""
        current = await self.get(owner_id, code)
        async with self._platform.unit_of_work(code) as uow:
            await store.delete_link(uow.conn, current.id)
            if current.custom:
                await store.retire_alias(uow.conn, code, owner_id, self._now_ms())
            await uow.emit(LINKS_TOPIC, self.event("deleted", current), key=code)
        await self.invalidate(code)

    # --- admins ---------------------------------------------------------------------------

    async def find(self, code: str) -> Link:
        """Any owner's link (admins); ``LinkNotFound`` when unknown."""
        if not is_code_shaped(code):
            raise LinkNotFound(code)
        async with self._platform.db.for_key(code).read() as conn:
            link = await store.link_by_code(conn, code)
        if link is None:
            raise LinkNotFound(code)
        return link

    async def set_blocked(self, code: str, blocked: bool, reason: str | None = None) -> Link:
        """Block (404 for everyone; the owner cannot enable it) or unblock a link."""
        current = await self.find(code)
        values: dict[str, object] = {
            "blocked": blocked,
            "blocked_reason": validate_title(reason) if blocked else None,
            "updated_at": self._now_ms(),
        }
        return await self._change(current, values, None, "blocked" if blocked else "unblocked")

    async def _change(
        self, current: Link, values: dict[str, object], tags: list[str] | None, kind: str
    ) -> Link:
        """Write ``values`` (and ``tags`` unless ``None``) to ``current``'s row and
        the ``kind`` event in one transaction; the link as written. Raises
        ``LinkNotFound`` when the link was deleted meanwhile."""
        code = current.code
        async with self._platform.unit_of_work(code) as uow:
            await store.update_link(uow.conn, current.id, values, tags)
            link = await store.link_by_code(uow.conn, code)
            if link is None:
                raise LinkNotFound(code)
            await uow.emit(LINKS_TOPIC, self.event(kind, link), key=code)
        await self.invalidate(code)
        return link

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

    def start_visit_batches(self) -> None:
        """Send visit events in batches from now on (``visits.py``): call with the
        queue connected, inside the app's lifespan."""
        if self._batcher is None:
            self._batcher = VisitBatcher(self._platform.queue, VISITS_TOPIC)
        self._batcher.start()

    async def stop_visit_batches(self) -> None:
        if self._batcher is not None:
            await self._batcher.stop()

    async def publish_visit(self, link_id: int, code: str, visit: dict[str, Any]) -> None:
        """Send a visit event to the queue: batched while the batcher runs, else at
        once. A queue that fails loses the event (logged, counted), never the
        redirect: analytics may miss a visit."""
        event = {"link_id": str(link_id), **visit}
        if self._batcher is not None and self._batcher.running:
            self._batcher.add(event, code)
            return
        try:
            await self._platform.queue.publish(VISITS_TOPIC, event, key=code)
        except Exception as exc:
            log.warning("shortener_visit_not_published", code=code, error=repr(exc))

    # --- helpers ------------------------------------------------------------------------

    async def verify_password(self, link: Redirect, password: str) -> bool:
        return link.password_hash is not None and await self._platform.passwords.verify(
            link.password_hash, password
        )

    async def invalidate(self, *codes: str) -> None:
        try:
            await self._aside.invalidate(*(self.cache_key(code) for code in codes))
        except CacheError as exc:
            # The entries live at most CACHE_TTL more seconds.
            log.warning("shortener_cache_invalidate_failed", codes=codes[:10], error=repr(exc))

    def event(self, kind: str, link: Link) -> dict[str, Any]:
        return {"event": kind, "link_id": str(link.id), "code": link.code,
                "owner_id": str(link.owner_id), "at_ms": self._now_ms()}  # fmt: skip


__all__ = ["ANONYMOUS_OWNER", "AliasTaken", "LinkInvalid", "LinkNotFound", "LinkService", "NewLink"]
