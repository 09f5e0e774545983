"""The cache service's rules that need no I/O: keys, ETags and write conditions.

A write may carry conditions from two sources, the Redis-style ``nx``/``xx``
flags and the HTTP preconditions ``If-Match``/``If-None-Match`` (RFC 9110,
section 13.1); ``WriteConditions.allows`` decides them all against the value
the key holds now (``None``: absent).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final

MAX_KEY_CHARS: Final = 512
MAX_BATCH: Final = 1000
# Ten years: past that an expiry is a mistake, and Redis refuses PX values whose
# deadline overflows its clock, which would otherwise surface as a server error.
MAX_TTL_SECONDS: Final = 10 * 365 * 24 * 3600

# One entity tag, strong or weak: W/"..." or "...", with RFC 9110's etagc characters.
_ETAG = r'(?:W/)?"[\x21\x23-\x7e]*"'
ETAG_LIST_PATTERN: Final = rf"^\s*(?:\*|{_ETAG}(?:\s*,\s*{_ETAG})*)\s*$"
_ONE_ETAG = re.compile(_ETAG)
ANY: Final = "*"
KEY_EXISTS: Final = "the key exists and nx asks to write only if it is absent"
KEY_ABSENT: Final = "the key is absent and xx asks to write only if it exists"


class InvalidKey(ValueError):
    """A key the service does not store: empty, too long, or not UTF-8."""


class PreconditionFailed(Exception):
    """A write's condition did not hold; the message says which one."""


def check_key(key: str) -> str:
    """``key`` when it is 1 to ``MAX_KEY_CHARS`` characters of valid UTF-8."""
    if not key:
        raise InvalidKey("a key must not be empty")
    if len(key) > MAX_KEY_CHARS:
        raise InvalidKey(f"a key has at most {MAX_KEY_CHARS} characters, not {len(key)}")
    try:
        key.encode()
    except UnicodeEncodeError:
        # Only a JSON body can carry one: a lone surrogate ("\ud800").
        raise InvalidKey("a key must be valid UTF-8 text") from None
    return key


def etag_of(value: bytes) -> str:
    """A strong entity tag for ``value``: equal values, equal tags, on every node.

    A digest of the bytes rather than a version counter, so it needs no extra
    state in the cache and works on any backend; BLAKE2b's 128 bits make an
    accidental match between two different values negligible.
    """
    return '"' + hashlib.blake2b(value, digest_size=16).hexdigest() + '"'


def parse_etags(header: str | None) -> tuple[str, ...] | None:
    """The tags of an ``If-Match``/``If-None-Match`` header; ``("*",)`` for
    any, ``None`` when the header is absent. The header has been checked
    against ``ETAG_LIST_PATTERN``."""
    if header is None:
        return None
    if header.strip() == ANY:
        return (ANY,)
    return tuple(_ONE_ETAG.findall(header))


def _weak_equal(a: str, b: str) -> bool:
    return a.removeprefix("W/") == b.removeprefix("W/")


@dataclass(frozen=True, slots=True)
class WriteConditions:
    """When a write may happen: ``only_if_absent`` (``nx``), ``only_if_present``
    (``xx``), ``if_match`` and ``if_none_match`` (tag tuples, ``("*",)`` for
    any); ``None``/``False`` impose nothing."""

    only_if_absent: bool = False
    only_if_present: bool = False
    if_match: tuple[str, ...] | None = None
    if_none_match: tuple[str, ...] | None = None

    @property
    def on_value(self) -> bool:
        """True when deciding needs the current value, not just whether the key exists."""
        return self.if_match is not None or self.if_none_match is not None

    def allows(self, current: bytes | None) -> None:
        """Raise ``PreconditionFailed`` unless a write may replace ``current``."""
        if self.only_if_absent and current is not None:
            raise PreconditionFailed(KEY_EXISTS)
        if self.only_if_present and current is None:
            raise PreconditionFailed(KEY_ABSENT)
        tag = None if current is None else etag_of(current)
        if self.if_match is not None:
            # Strong comparison (RFC 9110, 13.1.1): a weak tag never matches.
            if tag is None:
                raise PreconditionFailed("If-Match: the key is absent")
            if ANY not in self.if_match and tag not in self.if_match:
                raise PreconditionFailed("If-Match: the value has changed")
        if self.if_none_match is not None and tag is not None:
            if ANY in self.if_none_match:
                raise PreconditionFailed("If-None-Match: *: the key exists")
            if any(_weak_equal(tag, t) for t in self.if_none_match):
                raise PreconditionFailed("If-None-Match: the value has that ETag")


def not_modified(current: bytes, if_none_match: tuple[str, ...] | None) -> bool:
    """For a read: does ``If-None-Match`` say the caller's copy is current?
    (Weak comparison, RFC 9110, 13.1.2.)"""
    if if_none_match is None:
        return False
    if ANY in if_none_match:
        return True
    tag = etag_of(current)
    return any(_weak_equal(tag, t) for t in if_none_match)
