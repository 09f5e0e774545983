"""The notification system's request and response models."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sysdesign.blocks.notify.base import Channel, Priority, Status
from sysdesign.platform.http import ProblemDetail
from sysdesign.systems.notifications.domain import KEY_PATTERN, MAX_USER_IDS, Message, Template

Key = Annotated[str, Field(min_length=1, max_length=100, pattern=KEY_PATTERN)]
UserId = Annotated[int, Field(ge=1, le=2**63 - 1)]
Locale = Annotated[
    str, Field(min_length=2, max_length=35, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
]
HHMM = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", examples=["22:00"])]
Zone = Annotated[str, Field(min_length=1, max_length=64, examples=["Europe/Lisbon"])]


def problem(description: str) -> dict[str, Any]:
    return {"model": ProblemDetail, "description": description}


UNAUTHORIZED = {401: problem("Missing, invalid or expired access token")}
ADMIN_ONLY = {**UNAUTHORIZED, 403: problem("Not an admin account")}
NOT_FOUND = {404: problem("No such resource")}
NOT_FAILED = {409: problem("The message is not failed (the detail says what it is)")}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChannelSource(Strict):
    """Jinja2 sources for one channel and locale."""

    subject: str | None = Field(None, max_length=2000, description="E-mail subject, inbox title")
    body: str = Field(min_length=1, max_length=100_000)
    html: str | None = Field(None, max_length=200_000, description="E-mail HTML alternative")


Locales = Annotated[dict[Locale, ChannelSource], Field(min_length=1, max_length=50)]


class TemplateIn(Strict):
    category: Key = Field(description="What preferences turn on and off, such as 'social'")
    critical: bool = Field(False, description="Bypasses preferences, quiet hours and throttles")
    priority: Priority = Priority.NORMAL
    digest_window_seconds: int | None = Field(None, ge=1, le=7 * 86400)
    digest_group_field: str | None = Field(
        None, min_length=1, max_length=64, description="The data field digests group by"
    )
    throttle: str | None = Field(
        None, max_length=64, examples=["5/hour"],
        description="At most N per period, per user and channel",
    )  # fmt: skip
    channels: dict[Channel, Locales] = Field(min_length=1)


class TemplateOut(TemplateIn):
    key: str
    created_at_ms: int
    updated_at_ms: int


def template_out(t: Template) -> TemplateOut:
    return TemplateOut(
        key=t.key, category=t.category, critical=t.critical, priority=t.priority,
        digest_window_seconds=t.digest_window_seconds, digest_group_field=t.digest_group_field,
        throttle=t.throttle,
        channels={c: {loc: ChannelSource(**p) for loc, p in v.items()}
                  for c, v in t.channels.items()},
        created_at_ms=t.created_at_ms, updated_at_ms=t.updated_at_ms,
    )  # fmt: skip


class To(Strict):
    user_ids: list[UserId] | None = Field(None, min_length=1, max_length=MAX_USER_IDS)
    topic: Key | None = None

    @model_validator(mode="after")
    def _one(self) -> To:
        if (self.user_ids is None) == (self.topic is None):
            raise ValueError("give exactly one of user_ids and topic")
        return self


class TriggerIn(Strict):
    template: Key
    to: To
    data: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = Field(None, min_length=1, max_length=255)
    priority: Priority | None = Field(None, description="Default: the template's")
    send_at: datetime | None = Field(None, description="Deliver at this time, not now")


class EventOut(BaseModel):
    id: str
    status: Literal["accepted", "fanning_out", "done"]
    template: str
    priority: Priority
    send_at_ms: int | None = None
    created_at_ms: int
    counts: dict[Channel, dict[Status, int]] = Field(default_factory=dict)


class MessageOut(BaseModel):
    id: str
    recipient_id: str
    channel: Channel
    status: Status
    reason: str | None = None
    attempts: int
    due_at_ms: int | None = None
    last_error: str | None = None
    provider_id: str | None = None
    digest_of: str | None = None
    updated_at_ms: int


def message_out(msg: Message) -> MessageOut:
    from sysdesign.systems.notifications.domain import public_status

    return MessageOut(
        id=str(msg.id), recipient_id=str(msg.recipient_id), channel=msg.channel,
        status=public_status(msg.status), reason=msg.reason, attempts=msg.attempts,
        due_at_ms=msg.due_at_ms, last_error=msg.last_error, provider_id=msg.provider_id,
        digest_of=str(msg.digest_of) if msg.digest_of else None, updated_at_ms=msg.updated_at_ms,
    )  # fmt: skip


class SubscriberIn(Strict):
    email: str | None = Field(None, min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    phone: str | None = Field(None, max_length=16, examples=["+351912345678"])
    webhook_url: str | None = Field(None, max_length=2048, examples=["https://example.com/hook"])
    locale: Locale = "en"
    timezone: Zone = "UTC"


class SubscriberOut(SubscriberIn):
    user_id: str
    has_webhook_secret: bool
    webhook_secret: str | None = Field(None, description="Shown once, when it is made")


class SecretOut(BaseModel):
    webhook_secret: str = Field(description="Shown this once: keep it to verify signatures")


class Disabled(Strict):
    category: Annotated[str, Field(min_length=1, max_length=64)] = Field(
        description="A template category, or * for every category"
    )
    channel: Channel


class QuietHoursIn(Strict):
    start: HHMM
    end: HHMM
    timezone: Zone


class PreferencesIn(Strict):
    disabled: list[Disabled] = Field(default_factory=list, max_length=200)
    quiet_hours: QuietHoursIn | None = None


class TopicIn(Strict):
    name: str = Field(min_length=1, max_length=200)


class TopicOut(BaseModel):
    key: str
    name: str
    subscribers: int


class SubscribersIn(Strict):
    user_ids: list[UserId] = Field(min_length=1, max_length=MAX_USER_IDS)


class Added(BaseModel):
    added: int


class Requeued(BaseModel):
    requeued: int = Field(description="Failed messages put back in the queue")


class InboxItemOut(BaseModel):
    id: str
    message_id: str
    title: str | None = None
    body: str
    data: dict[str, Any]
    read_at_ms: int | None = None
    archived_at_ms: int | None = None
    created_at_ms: int


class UnreadCount(BaseModel):
    count: int


class Changed(BaseModel):
    changed: int


def to_ms(value: datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        from datetime import UTC

        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)
