"""Many links at once: bulk creation, CSV import and CSV export.

``create_many`` validates every item first, takes generated codes from the
allocator, then writes each shard's links in one transaction (one
executemany for the links, one for their outbox events): a thousand links
cost a few statements per shard, not a thousand transactions. If a custom
alias in a shard's batch turns out to be taken, that batch is written again
one link at a time, so each item gets its own answer. Items are independent:
a bad item is reported at its index and the others are created.

Passwords are not taken in bulk: each costs an argon2 hash (tens of
milliseconds), and a thousand of them would hold the request for a minute.
Set them afterwards with ``PATCH``.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError

from sysdesign.systems.shortener import store
from sysdesign.systems.shortener.domain import Link, LinkInvalid
from sysdesign.systems.shortener.service import LINKS_TOPIC, AliasTaken, LinkService, NewLink

MAX_BULK = 1000

Outcome = Link | LinkInvalid | AliasTaken

# CSV columns an import understands; the export's read-only columns are skipped.
IMPORT_COLUMNS = (
    "target", "alias", "title", "tags", "expires_at", "max_visits", "redirect_status",
    "forward_query",
)  # fmt: skip
EXPORT_COLUMNS = (
    "code", "short_url", "target", "title", "tags", "expires_at", "max_visits", "visits",
    "redirect_status", "forward_query", "enabled", "password_protected", "created_at",
)  # fmt: skip
_READ_ONLY = frozenset(EXPORT_COLUMNS) - frozenset(IMPORT_COLUMNS)


async def create_many(
    links: LinkService, owner_id: int, items: Sequence[NewLink], *, host: str | None = None
) -> list[Outcome]:
    """One outcome per item, in order: the created link or why it was refused."""
    if len(items) > MAX_BULK:
        raise LinkInvalid("links", f"at most {MAX_BULK} links in one request")
    outcomes: list[Outcome | None] = [None] * len(items)
    aliases: set[str] = set()
    by_shard: dict[int, list[tuple[int, Link]]] = {}
    for index, new in enumerate(items):
        try:
            if new.password is not None:
                raise LinkInvalid("password", "set passwords one link at a time (PATCH)")
            link = links.prepare(owner_id, new, host=host)
        except LinkInvalid as exc:
            outcomes[index] = exc
            continue
        if link.custom:
            if link.code in aliases:
                outcomes[index] = AliasTaken(link.code)
                continue
            aliases.add(link.code)
        else:
            link = replace(link, code=await links.next_code())
        shard = links.platform.db.index_for(link.code)
        by_shard.setdefault(shard, []).append((index, link))

    async def write(batch: list[tuple[int, Link]]) -> None:
        try:
            done = await _insert_batch(links, owner_id, batch)
        except IntegrityError:
            done = [(index, await _insert_one(links, link)) for index, link in batch]
        for index, outcome in done:
            outcomes[index] = outcome

    await asyncio.gather(*(write(batch) for batch in by_shard.values()))
    created = [o.code for o in outcomes if isinstance(o, Link)]
    if created:
        await links.invalidate(*created)
    return [o for o in outcomes if o is not None]


async def _insert_batch(
    links: LinkService, owner_id: int, batch: list[tuple[int, Link]]
) -> list[tuple[int, Outcome]]:
    """Write the batch in one transaction; ``IntegrityError`` leaves none of it."""
    done: list[tuple[int, Outcome]] = []
    async with links.platform.unit_of_work(batch[0][1].code) as uow:
        aliases = [link.code for _, link in batch if link.custom]
        retired = await store.retired_alias_owners(uow.conn, aliases)
        keep: list[Link] = []
        for index, link in batch:
            retired_by = retired.get(link.code)
            if retired_by is not None and retired_by != owner_id:
                done.append((index, AliasTaken(link.code)))
                continue
            if retired_by is not None:
                await store.unretire_alias(uow.conn, link.code)
            keep.append(link)
            done.append((index, link))
        await store.insert_links(uow.conn, keep)
        await uow.emit_many(
            LINKS_TOPIC, [(links.event("created", link), link.code) for link in keep]
        )
    return done


async def _insert_one(links: LinkService, link: Link) -> Outcome:
    try:
        return await links.insert(link)
    except AliasTaken as exc:
        return exc


# --- CSV --------------------------------------------------------------------------------


def parse_csv(text: str) -> list[NewLink | LinkInvalid]:
    """The rows of an import (a header row first), each a ``NewLink`` or why
    it cannot be one. Raises ``LinkInvalid('csv')`` for the file as a whole
    (no header, no ``target`` column, an unknown column, too many rows)."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    try:
        header = [h.strip() for h in (reader.fieldnames or [])]
    except csv.Error as exc:
        raise LinkInvalid("csv", f"the CSV cannot be read: {exc}") from None
    if "target" not in header:
        raise LinkInvalid("csv", "the first row must name the columns, with at least 'target'")
    unknown = [h for h in header if h not in IMPORT_COLUMNS and h not in _READ_ONLY]
    if unknown:
        raise LinkInvalid(
            "csv",
            f"unknown column(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(IMPORT_COLUMNS)}",
        )
    reader.fieldnames = header
    rows: list[NewLink | LinkInvalid] = []
    try:
        for row in reader:
            if len(rows) >= MAX_BULK:
                raise LinkInvalid("csv", f"at most {MAX_BULK} rows in one import")
            rows.append(_row(row))
    except csv.Error as exc:
        raise LinkInvalid(
            "csv", f"the CSV cannot be read at row {reader.line_num}: {exc}"
        ) from None
    return rows


def _cell(row: dict[str, str | None], name: str) -> str | None:
    value = row.get(name)
    if isinstance(value, list):  # more cells than columns
        raise LinkInvalid("csv", "a row has more cells than the header has columns")
    value = (value or "").strip()
    return value or None


def _row(row: dict[str, str | None]) -> NewLink | LinkInvalid:
    try:
        if None in row:
            raise LinkInvalid("csv", "a row has more cells than the header has columns")
        target = _cell(row, "target")
        if target is None:
            raise LinkInvalid("target", "the target is empty")
        status = _cell(row, "redirect_status") or "302"
        if status not in ("301", "302"):
            raise LinkInvalid("redirect_status", "redirect_status is 301 or 302")
        return NewLink(
            target=target,
            alias=_cell(row, "alias"),
            title=_cell(row, "title"),
            tags=tuple((_cell(row, "tags") or "").replace("|", " ").split()),
            expires_at_ms=_time_ms(_cell(row, "expires_at")),
            max_visits=_int(_cell(row, "max_visits"), "max_visits"),
            redirect_status=int(status),
            forward_query=_bool(_cell(row, "forward_query"), "forward_query"),
        )
    except LinkInvalid as exc:
        return exc


def _time_ms(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(value.timestamp() * 1000)
    except (ValueError, OverflowError, OSError):
        raise LinkInvalid("expires_at", "expires_at is an ISO 8601 date and time") from None


def _int(text: str | None, field: str) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or len(text) > 18:
        raise LinkInvalid(field, f"{field} is a whole number")
    return int(text)


def _bool(text: str | None, field: str) -> bool:
    value = (text or "false").lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise LinkInvalid(field, f"{field} is true or false")
    return value in ("true", "1", "yes")


def _iso(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def export_row(link: Link, short_url: str) -> list[str]:
    values = {
        "code": link.code,
        "short_url": short_url,
        "target": link.target,
        "title": link.title or "",
        "tags": " ".join(link.tags),
        "expires_at": _iso(link.expires_at_ms),
        "max_visits": "" if link.max_visits is None else str(link.max_visits),
        "visits": str(link.visits),
        "redirect_status": str(link.redirect_status),
        "forward_query": "true" if link.forward_query else "false",
        "enabled": "true" if link.enabled and not link.blocked else "false",
        "password_protected": "true" if link.password_hash else "false",
        "created_at": _iso(link.created_at_ms),
    }
    return [_safe(values[name]) for name in EXPORT_COLUMNS]


def _safe(value: str) -> str:
    """A cell a spreadsheet will not run as a formula (CSV injection): titles
    and targets are other people's text."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


async def export_csv(
    links: LinkService, owner_id: int, short_url: Callable[[str], str]
) -> AsyncIterator[str]:
    """The owner's links as CSV, newest first, a page of 500 at a time."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(EXPORT_COLUMNS)
    before: int | None = None
    while True:
        page = await links.list(owner_id, tag=None, before_id=before, limit=500)
        for link in page:
            writer.writerow(export_row(link, short_url(link.code)))
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        if len(page) < 500:
            return
        before = page[-1].id
