"""Load shedding by priority: under overload the least important requests go first.

Rate limits protect the service from one client; shedding protects it from
all of them at once. The gateway counts the requests in flight in this
process. A request of priority P is admitted while fewer than
``max_in_flight * threshold[P]`` are in flight: low priority is shed first,
then normal, then high, and the capacity between the highest non-critical
threshold and the maximum is reserved for critical traffic (logins,
one-time codes), which is refused only when the process is full. A shed
request gets 503 with ``Retry-After``: it is the server, not the client,
that is over its limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class Priority(IntEnum):
    CRITICAL = 0
    HIGH = 1
    NORMAL = 2
    LOW = 3


DEFAULT_THRESHOLDS = {Priority.HIGH: 0.8, Priority.NORMAL: 0.7, Priority.LOW: 0.5}


@dataclass
class LoadShedder:
    max_in_flight: int
    thresholds: dict[Priority, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    in_flight: int = 0
    shed: dict[Priority, int] = field(default_factory=lambda: dict.fromkeys(Priority, 0))

    def ceiling(self, priority: Priority) -> int:
        share = 1.0 if priority is Priority.CRITICAL else self.thresholds.get(priority, 1.0)
        return max(1, int(self.max_in_flight * share))

    def try_enter(self, priority: Priority) -> bool:
        """Admit (and count) the request, or refuse it; no await, so it is atomic."""
        if self.in_flight >= self.ceiling(priority):
            self.shed[priority] += 1
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1
