"""Snowflake ids and base62.

A snowflake is a 63-bit integer: 41 bits of milliseconds since ``EPOCH_MS``,
10 bits of worker id and 12 bits of sequence, so one worker issues up to 4,096
ids per millisecond and ids sort by creation time. If the wall clock steps
back (NTP), the generator keeps issuing from the last timestamp it used
instead of going back with it: ids stay unique and increasing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
WORKER_BITS = 10
SEQUENCE_BITS = 12
MAX_WORKER = (1 << WORKER_BITS) - 1
MAX_SEQUENCE = (1 << SEQUENCE_BITS) - 1
TIMESTAMP_SHIFT = WORKER_BITS + SEQUENCE_BITS


@dataclass(frozen=True, slots=True)
class SnowflakeParts:
    timestamp_ms: int
    worker_id: int
    sequence: int


class SnowflakeGenerator:
    """Thread-safe snowflake source for one worker id."""

    def __init__(self, worker_id: int, now_ms: Callable[[], int] | None = None) -> None:
        if not 0 <= worker_id <= MAX_WORKER:
            raise ValueError(f"worker_id must be within 0..{MAX_WORKER}, got {worker_id}")
        self.worker_id = worker_id
        self._now_ms = now_ms or (lambda: time.time_ns() // 1_000_000)
        self._lock = threading.Lock()
        self._last_ms = -1
        self._sequence = 0

    def next_id(self) -> int:
        with self._lock:
            now = self._now_ms() - EPOCH_MS
            if now > self._last_ms:
                self._last_ms = now
                self._sequence = 0
            else:
                # Same millisecond, or the clock went back: continue from the last one.
                self._sequence += 1
                if self._sequence > MAX_SEQUENCE:
                    # 4,096 used up: borrow the next millisecond rather than block.
                    self._last_ms += 1
                    self._sequence = 0
            if self._last_ms >= 1 << 41:
                raise OverflowError("snowflake timestamp exhausted")
            return (
                (self._last_ms << TIMESTAMP_SHIFT)
                | (self.worker_id << SEQUENCE_BITS)
                | self._sequence
            )


def parse_snowflake(value: int) -> SnowflakeParts:
    if value < 0 or value >= 1 << 63:
        raise ValueError("not a snowflake id")
    return SnowflakeParts(
        timestamp_ms=(value >> TIMESTAMP_SHIFT) + EPOCH_MS,
        worker_id=(value >> SEQUENCE_BITS) & MAX_WORKER,
        sequence=value & MAX_SEQUENCE,
    )


BASE62_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BASE62_INDEX = {ch: i for i, ch in enumerate(BASE62_ALPHABET)}


def base62_encode(value: int, min_length: int = 1) -> str:
    """Encode a non-negative integer; left-padded with ``0`` to ``min_length``."""
    if value < 0:
        raise ValueError("base62 encodes non-negative integers only")
    digits: list[str] = []
    while value:
        value, rem = divmod(value, 62)
        digits.append(BASE62_ALPHABET[rem])
    text = "".join(reversed(digits)) or "0"
    return text.rjust(min_length, "0")


def base62_decode(text: str) -> int:
    """Decode base62; raises ``ValueError`` naming the first invalid character."""
    if not text:
        raise ValueError("empty base62 string")
    value = 0
    for position, ch in enumerate(text):
        digit = _BASE62_INDEX.get(ch)
        if digit is None:
            raise ValueError(f"invalid base62 character {ch!r} at position {position}")
        value = value * 62 + digit
    return value
