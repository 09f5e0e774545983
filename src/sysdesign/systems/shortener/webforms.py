"""The web page's forms and views: form fields to a ``NewLink``, links to what a page shows.

Pure: no I/O. Errors are the domain's ``LinkInvalid``, naming the form field
at fault (the form's field names are the API's), so the page shows the
message beside it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sysdesign.systems.shortener.domain import Link, LinkInvalid
from sysdesign.systems.shortener.service import NewLink

SHORTEN_FIELDS = (
    "target", "alias", "title", "tags", "expires_at", "max_visits", "redirect_status",
    "forward_query", "password",
)  # fmt: skip
_DIGITS = re.compile(r"[0-9]{1,19}")


def _text(form: Mapping[str, str], name: str) -> str | None:
    value = form.get(name, "").strip()
    return value or None


def expiry_ms(value: str) -> int:
    """A date ``YYYY-MM-DD`` as the end of that day in UTC: the link works through it."""
    try:
        day = date.fromisoformat(value)
        end = datetime.combine(day + timedelta(days=1), time(), UTC)
    except (ValueError, OverflowError):
        raise LinkInvalid("expires_at", "the expiry is a date, as YYYY-MM-DD") from None
    return int(end.timestamp() * 1000)


def new_link(form: Mapping[str, str], *, max_visits_limit: int) -> NewLink:
    """The shorten form as a ``NewLink``; the service checks the rest of the rules."""
    target = _text(form, "target")
    if target is None:
        raise LinkInvalid("target", "enter the URL to shorten")
    expires = _text(form, "expires_at")
    visits = _text(form, "max_visits")
    max_visits = None
    if visits is not None:
        if not _DIGITS.fullmatch(visits) or not 1 <= int(visits) <= max_visits_limit:
            raise LinkInvalid("max_visits", "the visit limit is a whole number, at least 1")
        max_visits = int(visits)
    status = form.get("redirect_status") or "302"
    if status not in ("301", "302"):
        raise LinkInvalid("redirect_status", "the redirect is 301 or 302")
    tags = tuple(tag.strip() for tag in form.get("tags", "").split(",") if tag.strip())
    return NewLink(
        target=target,
        alias=_text(form, "alias"),
        title=_text(form, "title"),
        tags=tags,
        expires_at_ms=None if expires is None else expiry_ms(expires),
        max_visits=max_visits,
        redirect_status=int(status),
        forward_query=form.get("forward_query") in ("on", "1", "true"),
        password=form.get("password") or None,  # as typed: spaces may be part of it
    )


def when(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True, slots=True)
class LinkView:
    """One link as a page shows it."""

    link: Link
    short_url: str
    status: str  # active, blocked, disabled, expired, used up
    total_visits: int | None = None  # from the statistics, when the page read them

    @classmethod
    def of(
        cls, link: Link, short_url: str, now_ms: int, total_visits: int | None = None
    ) -> LinkView:
        if link.blocked:
            status = "blocked"
        elif not link.enabled:
            status = "disabled"
        elif link.redirect().expired(now_ms):
            status = "expired"
        elif link.max_visits is not None and link.visits >= link.max_visits:
            status = "used up"
        else:
            status = "active"
        return cls(link, short_url, status, total_visits)

    @property
    def code(self) -> str:
        return self.link.code

    @property
    def visits(self) -> str:
        """Counted on the link for a visit limit (exact, at once); otherwise from
        its statistics (which follow the redirects by a moment)."""
        link = self.link
        if link.max_visits is not None:
            return f"{link.visits} of {link.max_visits}"
        return "" if self.total_visits is None else str(self.total_visits)

    @property
    def created(self) -> str:
        return when(self.link.created_at_ms)

    @property
    def expires(self) -> str:
        return when(self.link.expires_at_ms)
