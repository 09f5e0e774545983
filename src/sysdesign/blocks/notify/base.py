"""The ``notify`` block's contract: what a notification is on its way out, and
what every channel's sender promises.

A *notification* is one event for one recipient (``Outgoing``), rendered for
one channel. Senders deliver it and say how it went:

- return normally: the channel accepted it (``sent``); the return value is
  the provider's id for it, when there is one;
- raise ``TemporaryFailure``: worth trying again later (a timeout, a 5xx,
  a 429, a refused connection); ``retry_after`` when the other side said;
- raise ``PermanentFailure``: trying again will not help (a 4xx, a bad
  address, a template that cannot render); the message is failed at once.

Senders must be safe to call concurrently, and idempotent on the receiving
side where the channel allows it: every attempt of one message carries the
same ``message_id`` (webhooks send it as a header, e-mails as Message-ID),
so a receiver can drop the second copy that a retry after a lost answer
makes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable


class Channel(StrEnum):
    IN_APP = "in_app"
    EMAIL = "email"
    WEBHOOK = "webhook"
    SMS = "sms"


class Priority(StrEnum):
    """Critical (one-time codes, security) overtakes normal, which overtakes bulk:
    each priority has its own delivery topic and consumers, so a backlog of
    bulk messages never stands in front of a critical one."""

    CRITICAL = "critical"
    NORMAL = "normal"
    BULK = "bulk"


class Status(StrEnum):
    """Where one message (one recipient, one channel) is."""

    QUEUED = "queued"  # waiting for a delivery worker
    SCHEDULED = "scheduled"  # waiting for send_at, the end of quiet hours, or a digest window
    SENT = "sent"  # the channel accepted it
    DELIVERED = "delivered"  # the receiver confirmed it (in-app: stored; webhook: 2xx)
    FAILED = "failed"  # permanently, or out of attempts (dead-lettered)
    SUPPRESSED = "suppressed"  # not sent, on purpose: preference, throttle, digest, no address


@dataclass(frozen=True, slots=True)
class Rendered:
    """A message as its channel shows it. ``subject`` is for e-mail (and the
    in-app title); ``html`` is an optional e-mail alternative."""

    body: str
    subject: str | None = None
    html: str | None = None


@dataclass(frozen=True, slots=True)
class Address:
    """Where a recipient gets a channel: an e-mail address, a phone number in
    E.164, or a webhook URL with the secret its signatures are made with."""

    channel: Channel
    value: str
    secret: str | None = None


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to send. ``message_id`` is the same for every attempt."""

    message_id: str
    channel: Channel
    address: Address
    rendered: Rendered
    recipient_id: int
    template: str
    category: str
    priority: Priority
    data: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1


class DeliveryError(Exception):
    """A send that did not go through; ``retryable`` says whether to try again."""

    retryable = False

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TemporaryFailure(DeliveryError):
    retryable = True


class PermanentFailure(DeliveryError):
    retryable = False


@runtime_checkable
class Sender(Protocol):
    """Delivers messages of one channel."""

    channel: Channel

    async def send(self, message: Outgoing) -> str | None:
        """Deliver ``message``; the provider's id for it, if any. Raises
        ``TemporaryFailure`` or ``PermanentFailure`` (never anything else)."""
        ...

    async def close(self) -> None: ...
