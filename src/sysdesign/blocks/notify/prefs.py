"""What a recipient lets through, and when: channel preferences and quiet hours.

Pure rules, no I/O: ``decide`` says, for one message on one channel, whether
to send it now, not at all (the recipient turned that channel off for that
category), or later (it falls in the recipient's quiet hours, which are kept
in the recipient's own time zone so that "22:00 to 07:00" stays that on both
sides of a daylight-saving change).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sysdesign.blocks.notify.base import Channel

ALL_CATEGORIES = "*"

_HH_MM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")


def _zone(name: str) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise ValueError(f"not an IANA time zone: {name!r} (use a name such as Europe/Lisbon)")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        # ValueError: a malformed key such as "../x"; both mean the same to a caller.
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA name such as Europe/Lisbon or UTC"
        ) from None


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily window of local wall-clock time, ``start`` included and ``end``
    excluded, in the IANA zone ``timezone``. The window may cross midnight
    (``22:00`` to ``07:00``). Raises ``ValueError`` for an unknown zone, for
    ``start == end`` (an empty or a whole-day window is not a quiet window),
    or for times that carry their own ``tzinfo`` (the zone is ``timezone``)."""

    start: time
    end: time
    timezone: str

    def __post_init__(self) -> None:
        _zone(self.timezone)
        for name, value in (("start", self.start), ("end", self.end)):
            if not isinstance(value, time):
                raise ValueError(f"quiet hours {name} must be a datetime.time, not {value!r}")
            if value.tzinfo is not None:
                raise ValueError(f"quiet hours {name} must be a local time without tzinfo")
        if self.start == self.end:
            raise ValueError(f"quiet hours start and end are both {self.start:%H:%M}")

    @property
    def zone(self) -> ZoneInfo:
        return _zone(self.timezone)

    @property
    def crosses_midnight(self) -> bool:
        return self.start > self.end

    def contains(self, wall: time) -> bool:
        """Whether local wall-clock time ``wall`` is inside the window."""
        if self.crosses_midnight:
            return wall >= self.start or wall < self.end
        return self.start <= wall < self.end

    def ends_after(self, now: float) -> float | None:
        """If ``now`` (epoch seconds) is inside the window, the epoch second at
        which it ends: the first instant after ``now`` at which the local clock
        reads ``end`` or later. When ``end`` falls in an hour the clocks skip,
        that is the moment they skip past it; when it falls in an hour they
        repeat, the first reading after ``now``. ``None`` outside the window."""
        zone = self.zone
        local = datetime.fromtimestamp(now, zone)
        wall = local.time()
        if not self.contains(wall):
            return None
        day = local.date()
        if self.crosses_midnight and wall >= self.start:
            day += timedelta(days=1)
        until = _first_instant_at(day, self.end, zone, after=now)
        # Only reachable if the zone's rules contradict themselves; sending is
        # then the safe answer, never a delay into the past.
        return until if until > now else None


def _first_instant_at(day: date, wall: time, zone: ZoneInfo, *, after: float) -> float:
    """The first epoch second after ``after`` at which the clock in ``zone``
    reads ``day`` at ``wall``, or later."""
    target = datetime.combine(day, wall)
    # fold=0 reads a wall time with the offset in force before a transition,
    # fold=1 with the one after: equal on an ordinary day, fold=0 earlier in a
    # repeated hour, later in a skipped one.
    early = target.replace(tzinfo=zone, fold=0).timestamp()
    late = target.replace(tzinfo=zone, fold=1).timestamp()
    if early < late:  # repeated hour: both instants read ``wall``
        return early if early > after else late
    if early == late:
        return early
    # Skipped hour: ``wall`` never shows. The clock jumps past it at one
    # transition between ``late`` (still before it) and ``early`` (after it);
    # transitions fall on whole seconds, so bisect to that second.
    lo, hi = int(late), int(early) + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).replace(tzinfo=None) >= target:
            hi = mid
        else:
            lo = mid
    return float(hi)


@dataclass(frozen=True, slots=True)
class Preferences:
    """One recipient's choices. Each ``(category, channel)`` pair in
    ``disabled`` turns that channel off for that category; the category
    ``"*"`` turns it off for every category. Channels given as strings are
    read as ``Channel`` (``ValueError`` for an unknown one), so lookups by
    either work."""

    disabled: frozenset[tuple[str, Channel]] = frozenset()
    quiet_hours: QuietHours | None = None

    def __post_init__(self) -> None:
        pairs = []
        for pair in self.disabled:
            category, channel = pair
            if not isinstance(category, str) or not category:
                raise ValueError(f"a disabled category must be a non-empty string: {pair!r}")
            pairs.append((category, Channel(channel)))
        # A str member of the set would hash differently from the enum member
        # that equals it: normalise so that ``allows`` finds either.
        object.__setattr__(self, "disabled", frozenset(pairs))

    def allows(self, category: str, channel: Channel | str) -> bool:
        """Whether ``channel`` is on for ``category``."""
        channel = Channel(channel)
        return (category, channel) not in self.disabled and (
            ALL_CATEGORIES,
            channel,
        ) not in self.disabled


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one message now: ``send`` it, ``suppress`` it (never
    sent; ``reason`` says why), or ``delay`` it until epoch second ``until``."""

    action: Literal["send", "suppress", "delay"]
    until: float | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.action not in ("send", "suppress", "delay"):
            raise ValueError(f"unknown action {self.action!r}")
        if (self.action == "delay") != (self.until is not None):
            raise ValueError("a delay needs an until, and only a delay has one")


def decide(
    prefs: Preferences, *, category: str, channel: Channel, critical: bool, now: float
) -> Decision:
    """Whether to send one message of ``category`` on ``channel`` at epoch
    second ``now``, in this order:

    1. ``critical`` (one-time codes, security alerts): send, whatever the
       preferences and the hour;
    2. the channel is off for the category (or for ``"*"``): suppress,
       reason ``"preference"``;
    3. in-app messages: send. They make no noise, they wait in the inbox
       until the recipient looks, so quiet hours do not hold them back;
    4. ``now`` is inside the quiet hours in the recipient's zone: delay until
       the window ends (``QuietHours.ends_after``: always after ``now``, and
       less than a day later on the local clock), reason ``"quiet_hours"``;
    5. otherwise send.
    """
    if critical:
        return Decision("send", reason="critical")
    if not prefs.allows(category, channel):
        return Decision("suppress", reason="preference")
    if Channel(channel) is Channel.IN_APP or prefs.quiet_hours is None:
        return Decision("send")
    until = prefs.quiet_hours.ends_after(now)
    if until is None:
        return Decision("send")
    return Decision("delay", until=until, reason="quiet_hours")


def parse_quiet_hours(start: str, end: str, timezone: str) -> QuietHours:
    """Quiet hours from ``"HH:MM"`` strings (24-hour, two digits each) and an
    IANA zone name. Raises ``ValueError`` saying which part is wrong."""
    times = []
    for name, text in (("start", start), ("end", end)):
        match = _HH_MM.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f"quiet hours {name} must be HH:MM (00:00 to 23:59), not {text!r}")
        times.append(time(int(match[1]), int(match[2])))
    return QuietHours(times[0], times[1], timezone)
