"""Reading the senders' URLs: query options, flags, durations, outbox paths.

Every option a sender does not know is an error rather than ignored, so a
typo (``?starttsl=true``) fails at start-up instead of silently sending in
clear text.
"""

from __future__ import annotations

import math
from pathlib import Path
from urllib.parse import SplitResult, parse_qsl, unquote, urlunsplit

from sysdesign.platform.envflag import parse_flag
from sysdesign.platform.errors import ConfigurationError
from sysdesign.platform.urls import redact


def query_options(parts: SplitResult, allowed: frozenset[str], *, what: str) -> dict[str, str]:
    """The query as a dict (the last of repeated names wins). Raises
    ``ConfigurationError`` naming any option outside ``allowed``."""
    options: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise ConfigurationError(
                f"{what}: unknown option {name!r} in {redact(parts.geturl())} (known: {known})"
            )
        options[name] = value
    return options


def flag(options: dict[str, str], name: str, *, what: str) -> bool | None:
    """``true``/``false`` (or 1/0, yes/no, on/off); ``None`` when absent."""
    if name not in options:
        return None
    value = parse_flag(options[name])
    if value is not None:
        return value
    raise ConfigurationError(f"{what}: {name} must be true or false, not {options[name]!r}")


def seconds(
    options: dict[str, str], name: str, default: float, *, what: str, allow_zero: bool = False
) -> float:
    """A duration in seconds, ``default`` when absent."""
    if name not in options:
        return default
    try:
        value = float(options[name])
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "more than zero"
        raise ConfigurationError(f"{what}: {name} must be seconds, {bound}, not {options[name]!r}")
    return value


def count(options: dict[str, str], name: str, default: int, *, what: str, low: int = 1) -> int:
    """A whole number at least ``low``, ``default`` when absent."""
    if name not in options:
        return default
    text = options[name].strip()
    if not text.isdigit() or int(text) < low:
        raise ConfigurationError(
            f"{what}: {name} must be a whole number, at least {low}, not {options[name]!r}"
        )
    return int(text)


def file_path(parts: SplitResult, *, what: str) -> Path:
    """The absolute path of a ``file:///abs/path`` URL (``file://localhost/…`` too)."""
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise ConfigurationError(
            f"{what}: {urlunsplit(parts)!r} is not an absolute path; write file:///absolute/path"
        )
    path = unquote(parts.path)
    if path.rstrip("/") == "":
        raise ConfigurationError(f"{what}: a file URL needs a path below /")
    return Path(path)
