"""What one delivery batch carries between its steps (see ``delivery.py``):
what it read, the messages ready to render and send, and the outcomes that
its transactions write."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sysdesign.blocks.notify.base import Address, Rendered, Status
from sysdesign.blocks.notify.prefs import Preferences
from sysdesign.systems.notifications.domain import Event, Message, Subscriber, Template


@dataclass(slots=True)
class Loaded:
    """What a batch of messages needs, read in one go."""

    events: dict[int, Event]
    templates: dict[str, Template]
    subscribers: dict[int, Subscriber]
    preferences: dict[int, Preferences]


@dataclass(slots=True)
class Ready:
    """A message that passed every rule and is about to be rendered and sent."""

    msg: Message
    event: Event
    template: Template
    subscriber: Subscriber
    address: Address
    flush: bool  # a digest the scheduler released: render every event in it


@dataclass
class Outcomes:
    """How a batch's messages end, written together."""

    finishes: list[tuple[Message, dict[str, Any]]] = field(default_factory=list)
    failures: list[tuple[Message, str]] = field(default_factory=list)
    inbox: list[tuple[Message, Rendered, dict[str, Any]]] = field(default_factory=list)
    wakes: list[int] = field(default_factory=list)

    def settle(self, msg: Message, status: Status, *, reason: str | None = None,
               provider_id: str | None = None, count_attempt: bool = False) -> None:  # fmt: skip
        attempts = msg.attempts if count_attempt else msg.attempts - 1
        self.finishes.append((msg, {"status": status.value, "reason": reason,
                                    "provider_id": provider_id, "attempts": attempts}))  # fmt: skip

    def wait(self, msg: Message, due_ms: int, *, reason: str | None = None,
             error: str | None = None, count_attempt: bool = False) -> None:  # fmt: skip
        attempts = msg.attempts if count_attempt else msg.attempts - 1
        values: dict[str, Any] = {"status": Status.SCHEDULED.value, "due_at": due_ms,
                                  "attempts": attempts, "reason": reason}  # fmt: skip
        if error is not None:
            values["last_error"] = error[:1000]
        self.finishes.append((msg, values))
        self.wakes.append(due_ms)

    def fail(self, msg: Message, error: str) -> None:
        self.failures.append((msg, error))

    def take(self) -> Outcomes:
        """Everything so far, leaving this one empty."""
        taken = Outcomes(self.finishes, self.failures, self.inbox, self.wakes)
        self.finishes, self.failures, self.inbox, self.wakes = [], [], [], []
        return taken
