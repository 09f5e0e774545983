"""The notification system's pure rules: what a template, a subscriber and an
event are; which channels a recipient gets; how long to wait before a retry.
No I/O here: the store, the workers and the API build on these.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sysdesign.blocks.notify.base import Address, Channel, Priority, Status
from sysdesign.blocks.notify.templates import ChannelTemplate

FANOUT_PAGE = 1000  # recipients expanded per fan-out step (one transaction, one queue message)
MAX_DATA_BYTES = 64 * 1024  # an event's data, as JSON
MAX_USER_IDS = 10_000  # user ids in one trigger or one topic-subscription call
SENDING = "sending"  # a worker claimed the message; shown as ``queued`` outside
DLQ_TOPIC = "notifications.deliver.dlq"

_PHONE = re.compile(r"^\+[1-9][0-9]{6,14}$")
KEY_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,99}$"


def fanout_topic(priority: Priority) -> str:
    return f"notifications.fanout.{priority.value}"


def deliver_topic(priority: Priority) -> str:
    """Each priority has its own topic and consumers, so bulk never queues ahead of critical."""
    return f"notifications.deliver.{priority.value}"


class Invalid(ValueError):
    """Input the domain refuses: ``field`` names it, ``message`` says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Template:
    """A kind of notification: its category (what preferences name), whether it is
    critical (bypasses preferences, quiet hours and throttles), its default
    priority, its digest window and throttle, and per channel and locale the
    Jinja2 sources ``{subject, body, html}``."""

    key: str
    category: str
    critical: bool
    priority: Priority
    channels: Mapping[Channel, Mapping[str, Mapping[str, str | None]]]
    digest_window_seconds: int | None = None
    digest_group_field: str | None = None
    throttle: str | None = None
    created_at_ms: int = 0
    updated_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class Subscriber:
    """Where one user gets notifications. Without a row, a user still has an inbox."""

    user_id: int
    email: str | None = None
    phone: str | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = None
    locale: str = "en"
    timezone: str = "UTC"

    def address(self, channel: Channel) -> Address | None:
        """The address for ``channel``, or ``None`` when the user gave none."""
        if channel is Channel.IN_APP:
            return Address(channel, str(self.user_id))
        if channel is Channel.EMAIL and self.email:
            return Address(channel, self.email)
        if channel is Channel.SMS and self.phone:
            return Address(channel, self.phone)
        if channel is Channel.WEBHOOK and self.webhook_url:
            return Address(channel, self.webhook_url, self.webhook_secret)
        return None


@dataclass(frozen=True, slots=True)
class Recipients:
    """Who an event goes to: listed users, or every subscriber of a topic."""

    user_ids: tuple[int, ...] = ()
    topic: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"topic": self.topic} if self.topic else {"user_ids": list(self.user_ids)}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Recipients:
        if value.get("topic"):
            return cls(topic=str(value["topic"]))
        return cls(user_ids=tuple(int(u) for u in value.get("user_ids", ())))

    def page_after(self, after: int | None, size: int = FANOUT_PAGE) -> list[int]:
        """The listed users after ``after``, in id order (topics are paged in the store)."""
        ids = sorted(set(self.user_ids))
        return [u for u in ids if after is None or u > after][:size]


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    caller: str
    template: str
    recipients: Recipients
    data: dict[str, Any]
    priority: Priority
    send_at_ms: int | None
    created_at_ms: int
    idempotency_key: str | None = None
    fanout_done: bool = False


@dataclass(slots=True)
class Message:
    """One event for one recipient on one channel, and where its delivery is."""

    id: int
    event_id: int
    recipient_id: int
    channel: Channel
    status: str
    priority: Priority
    attempts: int = 0
    due_at_ms: int | None = None
    reason: str | None = None
    last_error: str | None = None
    provider_id: str | None = None
    digest_key: str | None = None
    digest_of: int | None = None
    claim: int | None = None  # the token of the claim that holds it while ``sending``
    created_at_ms: int = 0
    updated_at_ms: int = 0


def channel_templates(template: Template, channel: Channel) -> dict[str, ChannelTemplate]:
    """The template's sources for ``channel``, per locale, as the renderer takes them."""
    return {
        locale: ChannelTemplate(
            body=str(p.get("body") or ""), subject=p.get("subject"), html=p.get("html")
        )
        for locale, p in template.channels.get(channel, {}).items()
    }


def public_status(status: str) -> Status:
    """What callers see: a claimed message is still ``queued`` until it is sent."""
    return Status.QUEUED if status == SENDING else Status(status)


def initial_status(channel: Channel, subscriber: Subscriber | None) -> tuple[str, str | None]:
    """``(status, reason)`` of a new message: suppressed when there is no address."""
    if channel is Channel.IN_APP:
        return Status.QUEUED.value, None  # every user has an inbox
    if subscriber is None or subscriber.address(channel) is None:
        return Status.SUPPRESSED.value, "no address"
    return Status.QUEUED.value, None


def retry_delay(
    attempt: int, base: float, maximum: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait after the ``attempt``-th failed send: exponential with "equal
    jitter" (between half and all of ``min(maximum, base * 2**(attempt-1))``), so
    retries of many messages failing together spread out."""
    ceiling = min(maximum, base * 2 ** max(attempt - 1, 0))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


def check_phone(value: str) -> str:
    if not _PHONE.match(value):
        raise Invalid("phone", "use E.164: a + and 7 to 15 digits, such as +351912345678")
    return value


def check_webhook_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid("webhook_url", "must be an absolute http or https URL")
    return value


def check_timezone(value: str, field_name: str = "timezone") -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise Invalid(
            field_name, f"{value!r} is not an IANA time zone such as Europe/Lisbon"
        ) from None
    return value
