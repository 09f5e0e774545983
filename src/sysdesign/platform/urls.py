"""URL helpers that need no driver, shared by every block that reads a URL."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact(url: str) -> str:
    """The URL without password or query, for messages."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username or ''}:***@{host}" if parts.password is not None else parts.netloc
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
