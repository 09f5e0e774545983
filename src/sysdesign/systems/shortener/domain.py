"""The shortener's rules: short codes, aliases, targets and when a link redirects.

Pure: no I/O. The service gives it numbers, times and configuration.

**Codes without collisions and without check-then-insert.** A generated code
is 7 base62 characters (62**7, about 3.5 trillion codes). It is never a
random guess checked against the table; it is a function of a number that is
handed out once:

1. Numbers come from a counter on the primary database, taken in blocks
   (``CODE_BLOCK_SIZE`` at a time) by one ``UPDATE ... SET next = next + n``
   whose new value is read back in the same transaction. The row lock (or
   SQLite's single writer) serialises the updates, so two processes never get
   overlapping blocks, and a process hands out its block from memory: one
   database write per thousand links, not one per link. A crash loses the
   rest of a block (a gap), never repeats it.
2. ``code_for_number`` maps a number ``n < 62**7`` through a fixed
   permutation of ``[0, 62**7)`` (a 4-round Feistel network on 42 bits with
   cycle walking: re-apply until the result falls inside the range), then to
   7 base62 digits. A permutation is a bijection, so distinct numbers give
   distinct codes; the codes of consecutive numbers do not look consecutive
   (they are obscured, not secret: anyone may still guess codes, as on every
   shortener).
3. Past ``62**7`` numbers the code is the plain base62 of the number: 8
   characters or more, so it cannot equal any 7-character code.

Custom aliases cannot take a code the counter will produce later: an alias of
exactly 7 letters and digits is refused (it must differ in length, or contain
``-`` or ``_``). The unique index on ``code`` stays as the last guard.

A snowflake id is still each link's primary key (``platform.ids``), which
sorts links by creation for cursor pagination.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import SplitResult, quote, urlsplit, urlunsplit

from sysdesign.platform.ids import BASE62_ALPHABET, base62_encode

CODE_LENGTH = 7
CODE_SPACE = 62**CODE_LENGTH
CODE_BLOCK_SIZE = 1000
_HALF_BITS = 21  # 2**42 is the smallest even power of two above 62**7
_HALF_MASK = (1 << _HALF_BITS) - 1
_ROUNDS = 4

ALIAS_MIN, ALIAS_MAX = 3, 64
_ALIAS_RE = re.compile(r"[A-Za-z0-9_-]+")
_GENERATED_SHAPE = re.compile(rf"[{re.escape(BASE62_ALPHABET)}]{{{CODE_LENGTH}}}")
# Paths of this site and words people would mistake for it, in lower case.
RESERVED_ALIASES = frozenset(
    {
        "about", "accounts", "admin", "api", "app", "assets", "_assets", "auth", "dashboard",
        "docs", "favicon.ico", "healthz", "help", "links", "login", "logout", "metrics",
        "new", "openapi", "qr", "readyz", "register", "robots", "s", "settings", "shortener",
        "signup", "static", "stats", "status", "support", "v1", "www",
    }
)  # fmt: skip
MAX_URL_CHARS = 2048
MAX_TITLE_CHARS = 200
MAX_TAGS = 20
MAX_TAG_CHARS = 40
_TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")


class LinkInvalid(ValueError):
    """A field of a link is not acceptable: ``field`` names it (422)."""

    def __init__(self, field: str, message: str, kind: str = "value_error") -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.kind = kind


def _round(key: int, half: int) -> int:
    digest = hashlib.blake2b(half.to_bytes(4, "big"), digest_size=4, key=b"sd-short%d" % key)
    return int.from_bytes(digest.digest(), "big") & _HALF_MASK


def _feistel(value: int) -> int:
    left, right = value >> _HALF_BITS, value & _HALF_MASK
    for key in range(_ROUNDS):
        left, right = right, left ^ _round(key, right)
    return (left << _HALF_BITS) | right


def permute(number: int) -> int:
    """A bijection of ``[0, CODE_SPACE)`` onto itself (Feistel + cycle walking)."""
    if not 0 <= number < CODE_SPACE:
        raise ValueError(f"number must be within [0, {CODE_SPACE}), got {number}")
    value = _feistel(number)
    while value >= CODE_SPACE:  # at most a few steps: 2**42 / 62**7 is 1.25
        value = _feistel(value)
    return value


def code_for_number(number: int) -> str:
    """The code of counter value ``number``: 7 characters below ``CODE_SPACE``,
    the plain base62 of the number (8 or more) from there on. Injective."""
    if number < 0:
        raise ValueError("code numbers are non-negative")
    if number < CODE_SPACE:
        return base62_encode(permute(number), CODE_LENGTH)
    return base62_encode(number)


def validate_alias(alias: str) -> str:
    """The alias, or ``LinkInvalid('alias')``: 3 to 64 of ``A-Z a-z 0-9 - _``,
    not a reserved word (any case), not shaped like a generated code."""
    if not ALIAS_MIN <= len(alias) <= ALIAS_MAX:
        raise LinkInvalid("alias", f"an alias has {ALIAS_MIN} to {ALIAS_MAX} characters")
    if not _ALIAS_RE.fullmatch(alias):
        raise LinkInvalid("alias", "an alias may contain only letters, digits, '-' and '_'")
    if alias.lower() in RESERVED_ALIASES:
        raise LinkInvalid("alias", f"{alias!r} is reserved", "reserved")
    if _GENERATED_SHAPE.fullmatch(alias):
        raise LinkInvalid(
            "alias",
            f"{CODE_LENGTH} letters and digits is the shape of generated codes; "
            "use another length, or a '-' or '_'",
            "reserved",
        )
    return alias


def is_code_shaped(code: str) -> bool:
    """Whether ``code`` could be a link's code at all (saves a lookup for junk)."""
    return 1 <= len(code) <= ALIAS_MAX and bool(_ALIAS_RE.fullmatch(code))


@dataclass(frozen=True, slots=True)
class TargetPolicy:
    """Where links may point: ``own_hosts`` (this service's names: a link there
    would redirect to itself) and ``blocked_domains`` (each with its subdomains)."""

    own_hosts: frozenset[str] = frozenset()
    blocked_domains: frozenset[str] = frozenset()

    def with_host(self, host: str | None) -> TargetPolicy:
        if not host:
            return self
        return TargetPolicy(self.own_hosts | {_host_only(host)}, self.blocked_domains)


def _host_only(netloc: str) -> str:
    host = netloc.rsplit("@", 1)[-1].lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.split(":", 1)[0].rstrip(".")


def _split(url: str) -> SplitResult:
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises for a port that is not a number in range
    except ValueError:
        raise LinkInvalid("target", "the target is not a valid URL") from None
    return parts


def _to_ascii(url: str) -> str:
    """An internationalised URL as ASCII (IDNA host, UTF-8 percent-encoded path,
    query and fragment): a ``Location`` header carries ASCII only."""
    parts = _split(url)
    try:
        netloc = parts.netloc.encode("idna").decode("ascii")
    except UnicodeError:
        raise LinkInvalid("target", "the target's host is not a valid domain name") from None
    rest = urlunsplit(("", "", parts.path, parts.query, parts.fragment))
    return f"{parts.scheme}://{netloc}{quote(rest, safe=_URL_SAFE)}"


_URL_SAFE = "/?#[]@!$&'()*+,;=:%~"


def validate_target(url: str, policy: TargetPolicy) -> str:
    """The target, or ``LinkInvalid('target')``: an absolute http(s) URL with a
    host, no credentials, not this service's host, not a blocked domain.
    Returns it in ASCII (see ``_to_ascii``)."""
    if any(ord(ch) < 33 or ord(ch) == 127 for ch in url):
        raise LinkInvalid("target", "a target may not contain spaces or control characters")
    if len(url) <= MAX_URL_CHARS and not url.isascii():
        url = _to_ascii(url)
    if len(url) > MAX_URL_CHARS:
        raise LinkInvalid("target", f"a target has at most {MAX_URL_CHARS} characters")
    parts = _split(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise LinkInvalid("target", "a target must be an http or https URL", "url_scheme")
    host = parts.hostname or ""
    if not host:
        raise LinkInvalid("target", "a target must name a host")
    if parts.username is not None or parts.password is not None:
        raise LinkInvalid("target", "a target may not carry a user name or password")
    host = host.rstrip(".")
    if host in policy.own_hosts or _host_only(parts.netloc) in policy.own_hosts:
        raise LinkInvalid("target", "a target may not point back at this shortener", "loop")
    for domain in policy.blocked_domains:
        if host == domain or host.endswith("." + domain):
            raise LinkInvalid("target", f"links to {domain} are not allowed", "blocked_domain")
    return url


def validate_title(title: str | None) -> str | None:
    if title is None:
        return None
    title = title.strip()
    if len(title) > MAX_TITLE_CHARS:
        raise LinkInvalid("title", f"a title has at most {MAX_TITLE_CHARS} characters")
    if any(ord(ch) < 32 for ch in title):
        raise LinkInvalid("title", "a title may not contain control characters")
    return title or None


def validate_tags(tags: Iterable[str]) -> list[str]:
    """Distinct tags, sorted (as they are read back); ``LinkInvalid('tags')`` for a bad one."""
    out: list[str] = []
    for tag in tags:
        if not 1 <= len(tag) <= MAX_TAG_CHARS or not _TAG_RE.fullmatch(tag):
            raise LinkInvalid(
                "tags",
                f"a tag has 1 to {MAX_TAG_CHARS} letters, digits, '_', '.', ':' or '-' "
                "and starts with a letter or digit",
            )
        if tag not in out:
            out.append(tag)
    if len(out) > MAX_TAGS:
        raise LinkInvalid("tags", f"a link has at most {MAX_TAGS} tags")
    return sorted(out)


MIN_PASSWORD_CHARS, MAX_PASSWORD_CHARS = 4, 128


def validate_link_password(password: str) -> str:
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise LinkInvalid(
            "password",
            f"a link password has {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters",
        )
    return password


def validate_limits(
    now_ms: int, expires_at_ms: int | None, max_visits: int | None, *, creating: bool
) -> None:
    """A new expiry must be in the future; ``max_visits`` is at least 1."""
    if expires_at_ms is not None and creating and expires_at_ms <= now_ms:
        raise LinkInvalid("expires_at", "the expiry must be in the future")
    if max_visits is not None and max_visits < 1:
        raise LinkInvalid("max_visits", "max_visits is at least 1")


@dataclass(frozen=True, slots=True)
class Redirect:
    """What the redirect needs of a link: small, cached as it is."""

    code: str
    target: str
    status: int  # 301 or 302
    forward_query: bool
    enabled: bool
    expires_at_ms: int | None
    max_visits: int | None
    password_hash: str | None = None

    @property
    def protected(self) -> bool:
        return self.password_hash is not None

    def expired(self, now_ms: int) -> bool:
        return self.expires_at_ms is not None and now_ms >= self.expires_at_ms

    def location(self, query: str) -> str:
        """The target, with the request's query string appended when asked
        (after the target's own query, joined by ``&``; any fragment kept last)."""
        if not (self.forward_query and query):
            return self.target
        base, hash_, fragment = self.target.partition("#")
        joiner = "&" if "?" in base else "?"
        if base.endswith(("?", "&")):
            joiner = ""
        return f"{base}{joiner}{query}{hash_}{fragment}"


@dataclass(frozen=True, slots=True)
class Link:
    id: int
    code: str
    owner_id: int
    target: str
    custom: bool
    redirect_status: int
    forward_query: bool
    enabled: bool
    title: str | None
    expires_at_ms: int | None
    max_visits: int | None
    visits: int
    created_at_ms: int
    updated_at_ms: int
    tags: list[str] = field(default_factory=list)
    password_hash: str | None = None
    blocked: bool = False  # by an admin: the owner cannot undo it
    blocked_reason: str | None = None

    def redirect(self) -> Redirect:
        return Redirect(
            self.code,
            self.target,
            self.redirect_status,
            self.forward_query,
            self.enabled and not self.blocked,
            self.expires_at_ms,
            self.max_visits,
            self.password_hash,
        )
