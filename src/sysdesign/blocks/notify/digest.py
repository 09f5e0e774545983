"""Digests: many events of one kind for one recipient, sent as one message.

Pure rules, no I/O. Events that share a ``group_key`` and arrive within
``window_seconds`` of the first one are held back and, once the window ends
(``window_end``), rendered together with the variables ``summarize`` makes:
"Ana and 12 others liked your post" instead of thirteen messages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from sysdesign.blocks.notify.base import Channel

MAX_LISTED = 50  # events and actors a digest carries: enough to list, bounded to render


def describe_actors(actors: Sequence[str], total: int) -> str:
    """Who did it, in words: ``"Ana"``, ``"Ana and Ben"`` (both named only
    when ``total`` is 2), ``"Ana and 1 other"``, ``"Ana and 12 others"``
    (``total`` 13). ``total`` counts everyone, named or not; it is at least
    the number of names. Names are stripped of surrounding whitespace and
    blank ones ignored; with no names, ``"3 people"`` (``"1 person"``).
    Raises ``ValueError`` for a negative ``total``."""
    if total < 0:
        raise ValueError(f"total must be >= 0, not {total}")
    names = [name.strip() for name in actors if name.strip()]
    total = max(total, len(names))
    if not names:
        return "1 person" if total == 1 else f"{total} people"
    if total == 1:
        return names[0]
    if total == 2 and len(names) >= 2:
        return f"{names[0]} and {names[1]}"
    others = total - 1
    return f"{names[0]} and {others} other{'' if others == 1 else 's'}"


def _actor(event: Mapping[str, Any], field: str) -> str | None:
    value = event.get(field)
    if value is None:
        return None
    name = str(value).strip()
    return name or None


def summarize(events: Sequence[Mapping[str, Any]], *, actor_field: str = "actor") -> dict[str, Any]:
    """The variables a digest template renders with, for ``events`` in the
    order they happened:

    - ``count``: how many events; ``others``: ``count - 1``;
    - ``first``, ``last``: the first and last event;
    - ``events``: the first 50 events;
    - ``actors``: the distinct names in ``actor_field``, stripped, in order of
      first appearance, at most 50 (events without one are skipped);
    - ``actors_text``: ``describe_actors`` over every distinct actor; when no
      event names one, each event counts as one unnamed person.

    Raises ``ValueError`` for no events: there is nothing to digest.
    """
    if not events:
        raise ValueError("a digest needs at least one event")
    distinct: dict[str, None] = {}
    for event in events:
        name = _actor(event, actor_field)
        if name is not None:
            distinct.setdefault(name, None)
    names = list(distinct)
    count = len(events)
    return {
        "count": count,
        "first": events[0],
        "last": events[-1],
        "events": list(events)[:MAX_LISTED],
        "actors": names[:MAX_LISTED],
        "others": count - 1,
        "actors_text": describe_actors(names[:MAX_LISTED], len(names) or count),
    }


def window_end(first_at: float, window_seconds: float) -> float:
    """When a digest whose first event came at epoch second ``first_at`` is
    sent. Raises ``ValueError`` unless ``window_seconds`` is finite and > 0."""
    if not (math.isfinite(window_seconds) and window_seconds > 0):
        raise ValueError(f"window_seconds must be finite and > 0, not {window_seconds}")
    return first_at + window_seconds


def group_key(recipient_id: int, template: str, channel: Channel, group: str | None) -> str:
    """The key that events digested together share: one recipient, one
    template, one channel, and ``group`` (what they are about, such as a post
    id; ``None`` or ``""``: everything of that template). Distinct inputs
    give distinct keys: ``template`` and ``group`` are percent-encoded so
    that a ``:`` in them cannot pass for a separator. Raises ``ValueError``
    for an empty template or an unknown channel."""
    if not template:
        raise ValueError("a digest group needs a template")
    channel = Channel(channel)
    about = quote(group or "", safe="")
    return f"{int(recipient_id)}:{quote(template, safe='')}:{channel.value}:{about}"
