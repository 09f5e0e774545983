"""The notification system's use cases: templates, triggering events, status,
subscribers, preferences and topics. The inbox is ``inbox.py``; the workers
that fan events out and deliver them are ``fanout.py``, ``delivery.py`` and
``scheduler.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy.exc import IntegrityError

from sysdesign.blocks.notify.base import Channel, Priority
from sysdesign.blocks.notify.prefs import Preferences
from sysdesign.blocks.notify.templates import validate_templates
from sysdesign.blocks.ratelimit.rules import parse_limit
from sysdesign.platform.writerlock import urgent
from sysdesign.systems.notifications import messages, store
from sysdesign.systems.notifications.domain import (
    MAX_DATA_BYTES,
    Event,
    Invalid,
    Message,
    Recipients,
    Subscriber,
    Template,
    channel_templates,
    fanout_topic,
)

if TYPE_CHECKING:
    from sysdesign.platform.context import Platform


class NotFound(LookupError):
    """No such template, event, topic or inbox item (``what`` says which)."""

    def __init__(self, what: str, key: object) -> None:
        super().__init__(f"{what} {key}")
        self.what = what
        self.key = key


class IdempotencyKeyReused(Exception):
    """The caller sent an idempotency key again with a different request."""


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()


def new_webhook_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


class NotificationService:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def _now_ms(self) -> int:
        return int(self.platform.clock.time() * 1000)

    @property
    def _db(self) -> Any:
        return self.platform.db.primary

    # --- templates ---------------------------------------------------------------------

    async def put_template(self, template: Template) -> Template:
        """Create or replace a template after checking every source compiles.
        Raises ``TemplateInvalid`` (naming the field and line) or ``Invalid``."""
        validate_templates({c: channel_templates(template, c) for c in template.channels})
        if template.throttle:
            try:
                parse_limit(template.throttle)
            except ValueError as exc:
                raise Invalid("throttle", str(exc)) from None
        async with self._db.begin() as conn:
            return await store.put_template(conn, template, self._now_ms())

    async def get_template(self, key: str) -> Template:
        async with self._db.read() as conn:
            found = await store.get_template(conn, key)
        if found is None:
            raise NotFound("template", key)
        return found

    async def list_templates(self, after: str | None, limit: int) -> list[Template]:
        async with self._db.read() as conn:
            return await store.list_templates(conn, after, limit)

    async def delete_template(self, key: str) -> None:
        async with self._db.begin() as conn:
            if not await store.delete_template(conn, key):
                raise NotFound("template", key)

    # --- events ------------------------------------------------------------------------

    async def trigger(
        self,
        caller: str,
        template_key: str,
        recipients: Recipients,
        data: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        priority: Priority | None = None,
        send_at_ms: int | None = None,
    ) -> tuple[Event, bool]:
        """Record an event and its fan-out in one transaction; ``(event, created)``.

        With an ``idempotency_key`` already used by ``caller`` for the same
        request, the first event comes back (``created`` false) and nothing
        is sent again; for a different request, ``IdempotencyKeyReused``.
        Raises ``Invalid`` for an unknown template or topic or data too big.
        """
        data = dict(data)
        if len(orjson.dumps(data)) > MAX_DATA_BYTES:
            raise Invalid("data", f"must be at most {MAX_DATA_BYTES} bytes as JSON")
        print_ = fingerprint(template_key, recipients.as_json(), data,
                             priority.value if priority else None, send_at_ms)  # fmt: skip
        if idempotency_key is not None:
            earlier = await self._earlier(caller, idempotency_key, print_)
            if earlier is not None:
                return earlier, False
        async with self._db.read() as conn:
            template = await store.get_template(conn, template_key)
        if template is None:
            raise Invalid("template", f"there is no template {template_key!r}")
        # A critical event is written before bulk work waiting for SQLite's writer.
        critical = (priority or template.priority) is Priority.CRITICAL
        try:
            with urgent() if critical else contextlib.nullcontext():
                event = await self._record(
                    caller, template, recipients, data, print_,
                    idempotency_key=idempotency_key, priority=priority, send_at_ms=send_at_ms,
                )  # fmt: skip
        except IntegrityError:
            # Two requests with one key at once: the other one's event stands.
            if idempotency_key is None:
                raise
            earlier = await self._earlier(caller, idempotency_key, print_)
            if earlier is None:
                raise
            return earlier, False
        return event, True

    async def _record(
        self, caller: str, template: Template, recipients: Recipients, data: dict[str, Any],
        print_: str, *, idempotency_key: str | None, priority: Priority | None,
        send_at_ms: int | None,
    ) -> Event:  # fmt: skip
        """The event and its first fan-out step, in one transaction."""
        async with self.platform.unit_of_work() as uow:
            if recipients.topic and await store.get_topic(uow.conn, recipients.topic) is None:
                raise Invalid("to.topic", f"there is no topic {recipients.topic!r}")
            event = Event(
                id=self.platform.ids.next_id(),
                caller=caller,
                template=template.key,
                recipients=recipients,
                data=data,
                priority=priority or template.priority,
                send_at_ms=send_at_ms,
                created_at_ms=self._now_ms(),
                idempotency_key=idempotency_key,
            )
            await store.insert_event(uow.conn, event, print_)
            await uow.emit(
                fanout_topic(event.priority), {"event_id": event.id, "after": None},
                key=str(event.id),
            )  # fmt: skip
        return event

    async def _earlier(self, caller: str, key: str, print_: str) -> Event | None:
        async with self._db.read() as conn:
            found = await store.find_event_by_key(conn, caller, key)
        if found is None:
            return None
        event, earlier_print = found
        if earlier_print != print_:
            raise IdempotencyKeyReused(key)
        return event

    async def event_status(self, event_id: int) -> tuple[Event, list[tuple[str, str, int]]]:
        async with self._db.read() as conn:
            event = await store.get_event(conn, event_id)
            if event is None:
                raise NotFound("event", event_id)
            return event, await messages.counts(conn, event_id)

    async def event_messages(self, event_id: int, after: int | None, limit: int) -> list[Message]:
        async with self._db.read() as conn:
            if await store.get_event(conn, event_id) is None:
                raise NotFound("event", event_id)
            return await messages.list_for_event(conn, event_id, after, limit)

    # --- subscribers and preferences ----------------------------------------------------

    async def get_subscriber(self, user_id: int) -> Subscriber:
        async with self._db.read() as conn:
            return await store.get_subscriber(conn, user_id) or Subscriber(user_id)

    async def put_subscriber(self, sub: Subscriber) -> tuple[Subscriber, str | None]:
        """Save the user's addresses; a webhook secret is made the first time a
        webhook URL is set, and returned this once as the second item."""
        async with self._db.begin() as conn:
            current = await store.get_subscriber(conn, sub.user_id)
            secret = current.webhook_secret if current else None
            fresh = None
            if sub.webhook_url and not secret:
                secret = fresh = new_webhook_secret()
            saved = replace(sub, webhook_secret=secret)
            await store.put_subscriber(conn, saved, self._now_ms())
        return saved, fresh

    async def rotate_webhook_secret(self, user_id: int) -> str:
        async with self._db.begin() as conn:
            current = await store.get_subscriber(conn, user_id) or Subscriber(user_id)
            secret = new_webhook_secret()
            await store.put_subscriber(conn, replace(current, webhook_secret=secret),
                                       self._now_ms())  # fmt: skip
        return secret

    async def get_preferences(self, user_id: int) -> Preferences:
        async with self._db.read() as conn:
            return await store.get_preferences(conn, user_id)

    async def put_preferences(self, user_id: int, prefs: Preferences) -> Preferences:
        async with self._db.begin() as conn:
            await store.put_preferences(conn, user_id, prefs, self._now_ms())
        return prefs

    # --- topics ------------------------------------------------------------------------

    async def put_topic(self, key: str, name: str) -> tuple[Any, int]:
        async with self._db.begin() as conn:
            row = await store.put_topic(conn, self.platform.ids.next_id(), key, name,
                                        self._now_ms())  # fmt: skip
            return row, await store.subscriber_count(conn, row.id)

    async def get_topic(self, key: str) -> tuple[Any, int]:
        async with self._db.read() as conn:
            row = await store.get_topic(conn, key)
            if row is None:
                raise NotFound("topic", key)
            return row, await store.subscriber_count(conn, row.id)

    async def subscribe(self, key: str, user_ids: Sequence[int]) -> int:
        async with self._db.begin() as conn:
            row = await store.get_topic(conn, key)
            if row is None:
                raise NotFound("topic", key)
            return await store.subscribe(conn, row.id, user_ids, self._now_ms())

    async def unsubscribe(self, key: str, user_id: int) -> bool:
        async with self._db.begin() as conn:
            row = await store.get_topic(conn, key)
            if row is None:
                raise NotFound("topic", key)
            return await store.unsubscribe(conn, row.id, user_id)


__all__ = ["Channel", "IdempotencyKeyReused", "NotFound", "NotificationService"]
