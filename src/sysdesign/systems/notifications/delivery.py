"""The delivery consumers: one message, one recipient, one channel, sent once.

``notifications.deliver.<priority>`` carries ``{message_id}``, keyed by the
recipient (one recipient's messages are handled one after another, which
keeps digest grouping and throttles free of races between workers). There is
one subscription per priority, so a backlog of bulk messages never stands in
front of a critical one.

The handler takes the messages fetched from one partition together (up to
``BATCH`` of them) and does per batch what would otherwise be done per
message: one claim, one read of what they need, one throttle round trip,
and two write transactions (one before the sends, one after them). For each
message it:

1. claims it (``queued -> sending`` under a token of this claim, a
   conditional UPDATE): a message not claimed is a duplicate queue message,
   or another worker has it; nothing more happens to it here;
2. applies the recipient's preferences (``decide``): a channel turned off
   suppresses it; quiet hours schedule it for their end; critical templates
   bypass both;
3. for a template with a digest window, attaches it to the open digest of its
   group (``suppressed``, reason ``digested``) or opens one (``scheduled`` to
   the window's end); when the scheduler releases the digest it is rendered
   once with ``digest`` = ``summarize`` of every event in it. Digests are
   read and written message by message, in queue order;
4. applies the template's throttle (a token bucket per recipient, channel and
   template on the ratelimit store; over it: ``suppressed``, ``throttled``);
5. renders the template for the recipient's locale and sends: the inbox
   (stored, then pushed to live streams: ``delivered``), webhooks (a 2xx:
   ``delivered``), e-mail and SMS (accepted: ``sent``). Sends of one batch
   run concurrently, at most ``SEND_CONCURRENCY`` at once per priority and
   process, and their outcomes are written as they come, a few at a time.

A temporary failure schedules the next attempt after an exponential backoff
with jitter (or the ``retry_after`` the other side gave) through the
scheduler, never by retrying in place: that would hold up every later
message of the partition. Out of attempts, or on a permanent failure, the
message is ``failed`` and its dead letter goes to ``notifications.deliver.dlq``
in the same transaction (the outbox). An unexpected error leaves the message
(only that one; or the batch, when it was the batch's read or write)
``sending``; the scheduler hands it back to the queue after the visibility
timeout, as it does for a worker that died. Every write checks the claim's
token, so a worker that lost its claim that way changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from sysdesign.blocks.notify.base import (
    Channel,
    DeliveryError,
    Outgoing,
    PermanentFailure,
    Priority,
    Rendered,
    Sender,
    Status,
)
from sysdesign.blocks.notify.digest import group_key, summarize, window_end
from sysdesign.blocks.notify.prefs import Preferences, decide
from sysdesign.blocks.notify.templates import Renderer
from sysdesign.blocks.ratelimit.base import Algorithm, Hit, hit_batch_or_fallback
from sysdesign.blocks.ratelimit.memory import MemoryRateLimitStore
from sysdesign.blocks.ratelimit.rules import parse_limit
from sysdesign.platform.writerlock import urgent
from sysdesign.systems.notifications import inbox, messages, store
from sysdesign.systems.notifications.batch import Loaded, Outcomes, Ready
from sysdesign.systems.notifications.domain import (
    DLQ_TOPIC,
    Event,
    Message,
    Subscriber,
    Template,
    channel_templates,
    deliver_topic,
    retry_delay,
)

if TYPE_CHECKING:
    from sysdesign.blocks.queue import Message as QueueMessage
    from sysdesign.platform.context import Platform
    from sysdesign.systems.notifications.config import NotifyConfig
    from sysdesign.systems.notifications.scheduler import Scheduler

log = structlog.get_logger(__name__)


BATCH = 100
SEND_CONCURRENCY = 64  # per priority, in each process
COMMIT_EVERY = 25  # send outcomes written together
COMMIT_SECONDS = 1.0


def _left_sending(msg: Message, exc: BaseException) -> None:
    """An unexpected error: the message stays ``sending``, and the scheduler
    hands it back after the visibility timeout (the other messages go on)."""
    log.error("notifications_delivery_error", message=msg.id, error=repr(exc), exc_info=exc)


def _dead_letter(msg: Message, error: str) -> tuple[dict[str, Any], str]:
    """The DLQ event of a message that failed for good, keyed by its recipient."""
    return {
        "message_id": str(msg.id), "event_id": str(msg.event_id),
        "recipient_id": str(msg.recipient_id), "channel": msg.channel.value,
        "attempts": msg.attempts, "error": error[:2000],
    }, str(msg.recipient_id)  # fmt: skip


class Delivery:
    """The batch handler of ``notifications.deliver.*`` (see the module)."""

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
        # Per priority: critical sends never queue behind bulk ones.
        self._sending = {p: asyncio.Semaphore(SEND_CONCURRENCY) for p in Priority}
        self.handled = 0

    def _now_ms(self) -> int:
        return int(self._platform.clock.time() * 1000)

    async def __call__(self, batch: Sequence[QueueMessage]) -> None:
        ids: list[int] = []
        for queued in batch:
            try:
                ids.append(int(queued.json()["message_id"]))
            except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
                if len(batch) > 1:  # the queue hands them over one by one instead
                    raise ValueError("a malformed delivery message in the batch") from None
                await self._platform.queue.dead_letter(queued, "malformed delivery message")
        if not ids:
            return
        # A critical batch's writes go before bulk ones waiting for SQLite's writer.
        critical = batch[0].topic == deliver_topic(Priority.CRITICAL)
        with urgent() if critical else contextlib.nullcontext():
            await self._claimed(ids)

    async def _claimed(self, ids: list[int]) -> None:
        token = self._platform.ids.next_id()
        async with self._platform.db.primary.begin() as conn:
            claimed = await messages.claim(conn, ids, self._now_ms(), token)
        if not claimed:
            return
        try:
            await self._deliver(claimed)
        except Exception as exc:
            # Left ``sending``: the scheduler hands them back after the visibility timeout.
            log.exception("notifications_delivery_error", messages=len(claimed), error=repr(exc))
        self.handled += len(claimed)

    async def _deliver(self, claimed: list[Message]) -> None:
        loaded = await self._load(claimed)
        out = Outcomes()
        ready: list[Ready] = []
        for msg in claimed:
            try:
                if item := await self._prepare(msg, loaded, out):
                    ready.append(item)
            except Exception as exc:
                _left_sending(msg, exc)
        sends: list[tuple[Message, Outgoing]] = []
        for item in await self._admitted(ready, out):
            try:
                if outgoing := await self._render(item, out):
                    sends.append((item.msg, outgoing))
            except Exception as exc:
                _left_sending(item.msg, exc)
        # The inbox does not wait for the other channels' sends.
        await self._commit(out.take())
        if sends:
            await self._send_all(sends, out)

    async def _render(self, item: Ready, out: Outcomes) -> Outgoing | None:
        """Render ``item``; an in-app message joins the inbox, another channel's
        message is returned to be sent (``None`` when it is settled)."""
        msg = item.msg
        data = await self._data(msg, item.event, item.flush)
        try:
            rendered = self._renderer.render(
                channel_templates(item.template, msg.channel), item.subscriber.locale, data,
                channel=msg.channel,
            )  # fmt: skip
        except PermanentFailure as exc:
            out.fail(msg, f"the template does not render: {exc}")
            return None
        if msg.channel is Channel.IN_APP:
            out.inbox.append((msg, rendered, data))
            return None
        return Outgoing(
            message_id=str(msg.id), channel=msg.channel, address=item.address,
            rendered=rendered, recipient_id=msg.recipient_id, template=item.template.key,
            category=item.template.category, priority=msg.priority, data=data,
            attempt=msg.attempts,
        )  # fmt: skip

    async def _send_all(self, sends: list[tuple[Message, Outgoing]], out: Outcomes) -> None:
        """Send at once, writing outcomes as they come (every ``COMMIT_EVERY``
        of them or ``COMMIT_SECONDS``): what a slow batch already sent is kept
        even if the batch is then cut short."""
        pending = {asyncio.ensure_future(self._send(msg, out_, out)) for msg, out_ in sends}
        loop = asyncio.get_running_loop()
        committed_at = loop.time()
        try:
            while pending:
                _, pending = await asyncio.wait(
                    pending, timeout=COMMIT_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
                due = loop.time() - committed_at >= COMMIT_SECONDS
                if len(out.finishes) + len(out.failures) >= COMMIT_EVERY or due:
                    await self._commit(out.take())
                    committed_at = loop.time()
        finally:
            for task in pending:
                task.cancel()
        await self._commit(out.take())

    async def _load(self, claimed: list[Message]) -> Loaded:
        recipients = list({msg.recipient_id for msg in claimed})
        async with self._platform.db.primary.read() as conn:
            events = await store.get_events(conn, (msg.event_id for msg in claimed))
            templates = await store.get_templates(conn, (e.template for e in events.values()))
            subscribers = await store.get_subscribers(conn, recipients)
            preferences = await store.get_preferences_of(conn, recipients)
        return Loaded(events, templates, subscribers, preferences)

    async def _prepare(self, msg: Message, loaded: Loaded, out: Outcomes) -> Ready | None:
        """The rules before rendering; ``None`` when they settled the message."""
        event = loaded.events.get(msg.event_id)
        template = loaded.templates.get(event.template) if event else None
        if event is None or template is None:
            out.fail(msg, "the event's template was deleted")
            return None
        if msg.attempts > self._config.max_attempts:
            out.fail(msg, msg.last_error or "out of attempts (its workers kept dying)")
            return None
        subscriber = loaded.subscribers.get(msg.recipient_id) or Subscriber(msg.recipient_id)
        address = subscriber.address(msg.channel)
        if address is None:
            out.settle(msg, Status.SUPPRESSED, reason="no address")
            return None
        now = self._platform.clock.time()
        prefs = loaded.preferences.get(msg.recipient_id) or Preferences()
        decision = decide(prefs, category=template.category, channel=msg.channel,
                          critical=template.critical, now=now)  # fmt: skip
        if decision.action == "suppress":
            out.settle(msg, Status.SUPPRESSED, reason=decision.reason)
            return None
        flush = msg.digest_key is not None and msg.digest_of is None
        if template.digest_window_seconds and not flush and not template.critical:
            await self._digest(msg, event, template, now)
            return None
        if decision.action == "delay" and decision.until is not None:
            out.wait(msg, int(decision.until * 1000), reason=decision.reason)
            return None
        return Ready(msg, event, template, subscriber, address, flush)

    async def _admitted(self, ready: list[Ready], out: Outcomes) -> list[Ready]:
        """Those within their template's throttle (checked on a first attempt only)."""
        checked = [
            r
            for r in ready
            if r.msg.attempts == 1 and r.template.throttle and not r.template.critical
        ]
        if not checked:
            return ready
        requests = [[Hit(Algorithm.TOKEN_BUCKET,
                         f"notifications:throttle:{r.msg.recipient_id}:{r.msg.channel.value}:"
                         f"{r.template.key}", parse_limit(r.template.throttle or ""))]
                    for r in checked]  # fmt: skip
        decisions = await hit_batch_or_fallback(
            self._platform.ratelimit_store, self._fallback, requests
        )
        refused = {id(r) for r, d in zip(checked, decisions, strict=True) if not d[0].allowed}
        for item in ready:
            if id(item) in refused:
                out.settle(item.msg, Status.SUPPRESSED, reason="throttled")
        return [r for r in ready if id(r) not in refused]

    async def _send(self, msg: Message, outgoing: Outgoing, out: Outcomes) -> None:
        sender = self._senders.get(msg.channel)
        if sender is None:
            out.fail(msg, f"no sender for the channel {msg.channel.value}")
            return
        try:
            async with self._sending[msg.priority]:
                provider_id = await sender.send(outgoing)
        except asyncio.CancelledError:
            raise
        except DeliveryError as exc:
            if not exc.retryable or msg.attempts >= self._config.max_attempts:
                out.fail(msg, str(exc) or exc.__class__.__name__)
                return
            delay = exc.retry_after
            if delay is None:
                delay = retry_delay(msg.attempts, self._config.backoff_seconds,
                                    self._config.backoff_max_seconds)  # fmt: skip
            out.wait(msg, self._now_ms() + int(delay * 1000), error=str(exc),
                     count_attempt=True)  # fmt: skip
            return
        except Exception as exc:  # a sender broke its contract
            _left_sending(msg, exc)
            return
        status = Status.DELIVERED if msg.channel is Channel.WEBHOOK else Status.SENT
        out.settle(msg, status, provider_id=provider_id, count_attempt=True)

    async def _commit(self, out: Outcomes) -> None:
        """Write ``out`` in one transaction, then push the new inbox items and
        tell the scheduler of the new due times."""
        if not (out.finishes or out.failures or out.inbox):
            return
        now_ms = self._now_ms()
        async with self._platform.unit_of_work() as uow:
            pushes = await inbox.store(self._platform, uow.conn, out.inbox, now_ms)
            await messages.finish_many(uow.conn, out.finishes, now_ms)
            failed = await messages.fail_held(
                uow.conn, [(msg, error[:1000]) for msg, error in out.failures], now_ms
            )
            dead = [_dead_letter(msg, error) for msg, error in out.failures if msg.id in failed]
            if dead:
                await uow.emit_many(DLQ_TOPIC, dead)
        for msg, error in out.failures:
            log.warning("notifications_failed", message=msg.id, channel=msg.channel.value,
                        attempts=msg.attempts, error=error)  # fmt: skip
        for user_id, payload in pushes:
            await inbox.publish(self._platform, user_id, payload)
        for due_ms in out.wakes:
            self._scheduler.wake_at(due_ms)

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

    async def _digest(self, msg: Message, event: Event, template: Template, now: float) -> None:
        field_name = template.digest_group_field
        group = event.data.get(field_name) if field_name else None
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


__all__ = ["BATCH", "Delivery", "Rendered"]
