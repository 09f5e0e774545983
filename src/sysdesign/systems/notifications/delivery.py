"""The delivery consumers: one message, one recipient, one channel, sent once.

``notifications.deliver.<priority>`` carries ``{message_id}``, keyed by the
recipient (one recipient's messages are handled one after another, which
keeps digest grouping and throttles free of races between workers). There is
one subscription per priority, so a backlog of bulk messages never stands in
front of a critical one.

For each message the handler:

1. claims it (``queued -> sending``, a conditional UPDATE): no row means a
   duplicate queue message, or another worker has it; nothing more happens;
2. applies the recipient's preferences (``decide``): a channel turned off
   suppresses it; quiet hours schedule it for their end; critical templates
   bypass both;
3. for a template with a digest window, attaches it to the open digest of its
   group (``suppressed``, reason ``digested``) or opens one (``scheduled`` to
   the window's end); when the scheduler releases the digest it is rendered
   once with ``digest`` = ``summarize`` of every event in it;
4. applies the template's throttle (a token bucket per recipient, channel and
   template on the ratelimit store; over it: ``suppressed``, ``throttled``);
5. renders the template for the recipient's locale and sends: the inbox
   (stored, then pushed to live streams: ``delivered``), webhooks (a 2xx:
   ``delivered``), e-mail and SMS (accepted: ``sent``).

A temporary failure schedules the next attempt after an exponential backoff
with jitter (or the ``retry_after`` the other side gave) through the
scheduler, never by retrying in place: that would hold up every later
message of the partition. Out of attempts, or on a permanent failure, the
message is ``failed`` and its dead letter goes to ``notifications.deliver.dlq``
in the same transaction (the outbox). An unexpected error leaves the message
``sending``; the scheduler hands it back to the queue after the visibility
timeout, as it does for a worker that died.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from sysdesign.blocks.notify.base import (
    Channel,
    DeliveryError,
    Outgoing,
    PermanentFailure,
    Rendered,
    Sender,
    Status,
)
from sysdesign.blocks.notify.digest import group_key, summarize, window_end
from sysdesign.blocks.notify.prefs import decide
from sysdesign.blocks.notify.templates import ChannelTemplate, Renderer
from sysdesign.blocks.ratelimit.base import Algorithm, Hit, hit_many_or_fallback
from sysdesign.blocks.ratelimit.memory import MemoryRateLimitStore
from sysdesign.blocks.ratelimit.rules import parse_limit
from sysdesign.systems.notifications import inbox, messages, store
from sysdesign.systems.notifications.domain import (
    DLQ_TOPIC,
    Event,
    Message,
    Subscriber,
    Template,
    retry_delay,
)

if TYPE_CHECKING:
    from sysdesign.blocks.queue import Message as QueueMessage
    from sysdesign.platform.context import Platform
    from sysdesign.systems.notifications.config import NotifyConfig
    from sysdesign.systems.notifications.scheduler import Scheduler

log = structlog.get_logger(__name__)


def channel_templates(template: Template, channel: Channel) -> dict[str, ChannelTemplate]:
    return {
        locale: ChannelTemplate(
            body=str(p.get("body") or ""), subject=p.get("subject"), html=p.get("html")
        )
        for locale, p in template.channels.get(channel, {}).items()
    }


class Delivery:
    """The handler of ``notifications.deliver.*`` (see the module)."""

    def __init__(
        self,
        platform: Platform,
        config: NotifyConfig,
        senders: Mapping[Channel, Sender],
        scheduler: Scheduler,
    ) -> None:
        self._platform = platform
        self._config = config
        self._senders = senders
        self._scheduler = scheduler
        self._renderer = Renderer()
        self._fallback = MemoryRateLimitStore(platform.clock)
        self.handled = 0

    def _now_ms(self) -> int:
        return int(self._platform.clock.time() * 1000)

    async def __call__(self, queued: QueueMessage) -> None:
        try:
            message_id = int(queued.json()["message_id"])
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            await self._platform.queue.dead_letter(queued, "malformed delivery message")
            return
        async with self._platform.db.primary.begin() as conn:
            if not await messages.claim(conn, message_id, self._now_ms()):
                return
        try:
            await self._deliver(message_id)
        except Exception as exc:
            # Left ``sending``: the scheduler hands it back after the visibility timeout.
            log.exception("notifications_delivery_error", message=message_id, error=repr(exc))
        self.handled += 1

    async def _deliver(self, message_id: int) -> None:
        async with self._platform.db.primary.read() as conn:
            msg = await messages.get_message(conn, message_id)
            assert msg is not None
            event = await store.get_event(conn, msg.event_id)
            template = await store.get_template(conn, event.template) if event else None
            subscriber = await store.get_subscriber(conn, msg.recipient_id)
            prefs = await store.get_preferences(conn, msg.recipient_id)
        if event is None or template is None:
            await self._fail(msg, "the event's template was deleted")
            return
        if msg.attempts > self._config.max_attempts:
            await self._fail(msg, msg.last_error or "out of attempts (its workers kept dying)")
            return
        subscriber = subscriber or Subscriber(msg.recipient_id)
        address = subscriber.address(msg.channel)
        if address is None:
            await self._settle(msg, Status.SUPPRESSED, reason="no address")
            return
        now = self._platform.clock.time()
        decision = decide(prefs, category=template.category, channel=msg.channel,
                          critical=template.critical, now=now)  # fmt: skip
        if decision.action == "suppress":
            await self._settle(msg, Status.SUPPRESSED, reason=decision.reason)
            return
        flush = msg.digest_key is not None and msg.digest_of is None
        if template.digest_window_seconds and not flush and not template.critical:
            await self._digest(msg, event, template, now)
            return
        if decision.action == "delay" and decision.until is not None:
            await self._wait(msg, int(decision.until * 1000), reason=decision.reason)
            return
        if msg.attempts == 1 and not await self._admitted(msg, template):
            await self._settle(msg, Status.SUPPRESSED, reason="throttled")
            return
        data = await self._data(msg, event, flush)
        try:
            rendered = self._renderer.render(
                channel_templates(template, msg.channel), subscriber.locale, data,
                channel=msg.channel,
            )  # fmt: skip
        except PermanentFailure as exc:
            await self._fail(msg, f"the template does not render: {exc}")
            return
        if msg.channel is Channel.IN_APP:
            await inbox.deliver(self._platform, msg, rendered, data, self._finish_values(msg))
            return
        outgoing = Outgoing(
            message_id=str(msg.id), channel=msg.channel, address=address, rendered=rendered,
            recipient_id=msg.recipient_id, template=template.key, category=template.category,
            priority=msg.priority, data=data, attempt=msg.attempts,
        )  # fmt: skip
        await self._send(msg, outgoing)

    def _finish_values(self, msg: Message) -> dict[str, Any]:
        return {"status": Status.DELIVERED.value, "reason": None, "last_error": None,
                "attempts": msg.attempts}  # fmt: skip

    async def _send(self, msg: Message, outgoing: Outgoing) -> None:
        sender = self._senders.get(msg.channel)
        if sender is None:
            await self._fail(msg, f"no sender for the channel {msg.channel.value}")
            return
        try:
            provider_id = await sender.send(outgoing)
        except DeliveryError as exc:
            if not exc.retryable or msg.attempts >= self._config.max_attempts:
                await self._fail(msg, str(exc) or exc.__class__.__name__)
                return
            delay = exc.retry_after
            if delay is None:
                delay = retry_delay(msg.attempts, self._config.backoff_seconds,
                                    self._config.backoff_max_seconds)  # fmt: skip
            await self._wait(msg, self._now_ms() + int(delay * 1000), error=str(exc),
                             count_attempt=True)  # fmt: skip
            return
        status = Status.DELIVERED if msg.channel is Channel.WEBHOOK else Status.SENT
        await self._settle(msg, status, provider_id=provider_id, count_attempt=True)

    async def _data(self, msg: Message, event: Event, flush: bool) -> dict[str, Any]:
        if not flush:
            return dict(event.data)
        async with self._platform.db.primary.read() as conn:
            ids = await messages.digested_events(conn, msg.id)
            found = await store.get_events(conn, ids)
        # In the order the events happened, whichever of them opened the digest.
        events = sorted([event, *(found[i] for i in ids if i in found)],
                        key=lambda e: (e.created_at_ms, e.id))  # fmt: skip
        return {**event.data, "digest": summarize([e.data for e in events])}

    async def _admitted(self, msg: Message, template: Template) -> bool:
        if not template.throttle or template.critical:
            return True
        key = f"notifications:throttle:{msg.recipient_id}:{msg.channel.value}:{template.key}"
        hit = Hit(Algorithm.TOKEN_BUCKET, key, parse_limit(template.throttle))
        decision = await hit_many_or_fallback(self._platform.ratelimit_store, self._fallback, [hit])
        return decision[0].allowed

    async def _digest(self, msg: Message, event: Event, template: Template, now: float) -> None:
        field = template.digest_group_field
        group = event.data.get(field) if field else None
        key = group_key(msg.recipient_id, template.key, msg.channel,
                        None if group is None else str(group))  # fmt: skip
        async with self._platform.db.primary.begin() as conn:
            head = await messages.open_digest(conn, key)
            now_ms = self._now_ms()
            if head is not None:
                await messages.finish(conn, msg, now_ms, status=Status.SUPPRESSED.value,
                                      reason="digested", digest_key=key, digest_of=head,
                                      attempts=msg.attempts - 1)  # fmt: skip
                return
            assert template.digest_window_seconds is not None
            due_ms = int(window_end(now, template.digest_window_seconds) * 1000)
            await messages.finish(conn, msg, now_ms, status=Status.SCHEDULED.value,
                                  reason="digest", digest_key=key, due_at=due_ms,
                                  attempts=msg.attempts - 1)  # fmt: skip
        self._scheduler.wake_at(due_ms)

    async def _wait(
        self, msg: Message, due_ms: int, *, reason: str | None = None,
        error: str | None = None, count_attempt: bool = False,
    ) -> None:  # fmt: skip
        attempts = msg.attempts if count_attempt else msg.attempts - 1
        values: dict[str, Any] = {"status": Status.SCHEDULED.value, "due_at": due_ms,
                                  "attempts": attempts, "reason": reason}  # fmt: skip
        if error is not None:
            values["last_error"] = error[:1000]
        async with self._platform.db.primary.begin() as conn:
            await messages.finish(conn, msg, self._now_ms(), **values)
        self._scheduler.wake_at(due_ms)

    async def _settle(
        self, msg: Message, status: Status, *, reason: str | None = None,
        provider_id: str | None = None, count_attempt: bool = False,
    ) -> None:  # fmt: skip
        attempts = msg.attempts if count_attempt else msg.attempts - 1
        async with self._platform.db.primary.begin() as conn:
            await messages.finish(conn, msg, self._now_ms(), status=status.value, reason=reason,
                                  provider_id=provider_id, attempts=attempts)  # fmt: skip

    async def _fail(self, msg: Message, error: str) -> None:
        """``failed``, and a dead letter saying why, in one transaction."""
        async with self._platform.unit_of_work() as uow:
            if await messages.finish(uow.conn, msg, self._now_ms(), status=Status.FAILED.value,
                                     last_error=error[:1000]):  # fmt: skip
                await uow.emit(DLQ_TOPIC, {
                    "message_id": str(msg.id), "event_id": str(msg.event_id),
                    "recipient_id": str(msg.recipient_id), "channel": msg.channel.value,
                    "attempts": msg.attempts, "error": error[:2000],
                }, key=str(msg.recipient_id))  # fmt: skip
        log.warning("notifications_failed", message=msg.id, channel=msg.channel.value,
                    attempts=msg.attempts, error=error)  # fmt: skip


__all__ = ["Delivery", "Rendered", "channel_templates"]
