"""Pure helpers of ``sysdesign bench notifications``: the seeded rows, the
templates, and the arithmetic of the report (percentiles, rates, ratios)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sysdesign.blocks.lock.benchloops import percentile as nearest_rank
from sysdesign.blocks.notify.base import Channel, Priority
from sysdesign.systems.notifications.domain import Template

BULK_TEMPLATE = "bench-announcement"
OTP_TEMPLATE = "bench-one-time-code"
TOPIC = "bench-everyone"


def templates() -> list[Template]:
    """The bulk announcement (in-app and webhook) and the critical one-time code (in-app)."""
    bulk = Template(
        key=BULK_TEMPLATE,
        category="announcements",
        critical=False,
        priority=Priority.BULK,
        channels={
            Channel.IN_APP: {"en": {"subject": "News", "body": "{{ headline }}"}},
            Channel.WEBHOOK: {"en": {"body": "news: {{ headline }}"}},
        },
    )
    otp = Template(
        key=OTP_TEMPLATE,
        category="security",
        critical=True,
        priority=Priority.CRITICAL,
        channels={Channel.IN_APP: {"en": {"subject": "Your code", "body": "Code {{ code }}"}}},
    )
    return [bulk, otp]


def subscriber_rows(
    first_id: int, count: int, url: str, secret: str, now_ms: int
) -> list[dict[str, Any]]:
    """Rows of ``notifications_subscribers`` for user ids ``first_id .. first_id+count-1``,
    each with the receiver's webhook URL and the shared secret it verifies with."""
    return [
        {
            "user_id": user_id,
            "email": None,
            "phone": None,
            "webhook_url": url,
            "webhook_secret": secret,
            "locale": "en",
            "timezone": "UTC",
            "created_at": now_ms,
            "updated_at": now_ms,
        }
        for user_id in range(first_id, first_id + count)
    ]


def batches(total: int, size: int) -> Iterable[tuple[int, int]]:
    """``(start, count)`` pairs covering ``0 .. total-1`` in steps of ``size``."""
    if size < 1:
        raise ValueError("size must be at least 1")
    for start in range(0, total, size):
        yield start, min(size, total - start)


def spread(count: int, total: int) -> list[int]:
    """``count`` distinct user ids from ``1 .. total``, evenly spaced (the one-time codes'
    recipients: spread over the id range, so over the whole fan-out)."""
    count = min(count, total)
    if count <= 0:
        return []
    step = total / count
    return [1 + int(i * step) for i in range(count)]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) by the nearest-rank method; ``None`` for no values."""
    return nearest_rank(values, q) if values else None


def latency_summary(seconds: Sequence[float]) -> dict[str, Any]:
    """Count, p50, p99 and max of latencies given in seconds, reported in milliseconds."""

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 1)

    return {
        "count": len(seconds),
        "p50_ms": ms(percentile(seconds, 50)),
        "p99_ms": ms(percentile(seconds, 99)),
        "max_ms": ms(max(seconds) if seconds else None),
    }


def rate(count: int, seconds: float | None) -> float | None:
    """Per second, rounded; ``None`` when there is no duration to divide by."""
    if seconds is None or seconds <= 0:
        return None
    return round(count / seconds, 1)


def ratio(ours: float | None, anchor: float | None) -> float | None:
    """``ours / anchor`` to three significant digits (a ratio far below 1 keeps its digits)."""
    if ours is None or not anchor:
        return None
    return float(f"{ours / anchor:.3g}")


__all__ = [
    "BULK_TEMPLATE",
    "OTP_TEMPLATE",
    "TOPIC",
    "batches",
    "latency_summary",
    "percentile",
    "rate",
    "ratio",
    "spread",
    "subscriber_rows",
    "templates",
]
